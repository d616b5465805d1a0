"""Embeddings of FAQ texts kept on disk, keyed by a hash of the model file and the text.

Embedding a large FAQ is the slow part of building an index (about 45 s for
LocalgovFAQ's 1,786 questions and answer heads on two cores).  With the cache, a restart or a
FAQ reload after an operator edit embeds only the texts that changed.
Residents' questions are never cached: they pass straight through.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


@lru_cache(maxsize=None)
def model_tag(model_path: str) -> str:
    """Short SHA-256 of the model file: vectors from another model are never reused."""
    digest = hashlib.sha256()
    with open(model_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


class CachedEmbedder:
    """Wraps an embedder's ``query``: lists of texts are served from ``<directory>/<model tag>.npz`` where
    possible, the rest embedded in one call and added to the file."""

    def __init__(self, embedder, directory, model_path: str | None = None):
        from nlu.e5_model import default_model_path

        self.embedder = embedder
        self.path = Path(directory) / f"e5-{model_tag(model_path or default_model_path())}.npz"
        self._lock = threading.Lock()
        self._vectors: dict[str, np.ndarray] | None = None

    def _load(self) -> dict[str, np.ndarray]:
        if self._vectors is None:
            self._vectors = {}
            try:
                with np.load(self.path) as stored:
                    self._vectors = dict(zip(stored["keys"].tolist(), stored["vectors"]))
            except FileNotFoundError:
                pass
            except (OSError, ValueError, KeyError) as error:  # a damaged file is rebuilt, not fatal
                log.warning("embedding cache %s unreadable (%s); starting afresh", self.path, error)
        return self._vectors

    def _save(self) -> None:
        """Write to a temporary file and rename it, so a crash never leaves a half-written cache."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.stem}.{os.getpid()}.tmp.npz")
        keys = list(self._vectors)
        np.savez(tmp, keys=np.array(keys), vectors=np.stack([self._vectors[k] for k in keys]))
        os.replace(tmp, self.path)

    def query(self, texts):
        if isinstance(texts, str):
            return self.embedder.query(texts)
        keys = [text_key(t) for t in texts]
        with self._lock:
            vectors = self._load()
            missing = sorted({k: t for k, t in zip(keys, texts) if k not in vectors}.items())
            if missing:
                new = np.atleast_2d(np.asarray(self.embedder.query([t for _, t in missing]), dtype=np.float32))
                vectors.update(zip((k for k, _ in missing), new))
                self._save()
            return np.stack([vectors[k] for k in keys]) if keys else np.zeros((0, 0), dtype=np.float32)
