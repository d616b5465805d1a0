"""Late interaction re-scores the top English candidates with the tuned encoder's token states."""
import numpy as np
import pytest

from config.settings import Settings
from nlu import build_reranker
from nlu.late_interaction import LateInteraction


@pytest.fixture(scope="module")
def late(nlu):
    assert isinstance(nlu.reranker, LateInteraction), "the default bot re-ranks English by late interaction"
    return nlu.reranker


def test_a_phrasing_the_same_as_the_question_matches_every_token_and_another_does_not(late):
    question = "How do I stop getting the e-mails?"
    states = late.encoders["en"].token_states(question).astype(np.float32)
    assert late.maxsim(states, "en", question) > 0.999
    assert late.maxsim(states, "en", "Is there a charge for registering a shop?") < 0.9


def test_english_candidates_are_rescored_around_retrievals_top_and_resorted(nlu, late):
    question = "I got an email saying someone with covid was at the same place, what now?"
    retrieved = nlu.retriever.search(question, "en", 10)
    reranked = late.rerank(question, retrieved, nlu.retriever.indexes["en"])
    assert sorted(c.faq_id for c in reranked) == sorted(c.faq_id for c in retrieved)
    assert [c.score for c in reranked] == sorted((c.score for c in reranked), reverse=True)
    top = next(c for c in reranked if c.faq_id == retrieved[0].faq_id)
    assert top.score == pytest.approx(retrieved[0].score)  # retrieval's top keeps its score; the rest move around it
    for c in reranked:
        assert 0 < c.parts["maxsim"] <= 1.001
        expected = c.parts["retrieval"] + late.weights["en"] * (c.parts["maxsim"] - top.parts["maxsim"])
        assert c.score == pytest.approx(expected, abs=1e-3)


def test_japanese_is_left_as_retrieval_ranked_it(nlu, late):
    question = "感染者が出たってメールが届いた。どうしたらいい？"
    retrieved = nlu.retriever.search(question, "ja", 10)
    assert late.rerank(question, retrieved, nlu.retriever.indexes["ja"]) == retrieved


def test_each_language_has_its_weight_and_zero_or_no_tuned_encoder_means_no_reranker(nlu, late):
    tuned = {lang: index.embedder.embedder for lang, index in nlu.retriever.indexes.items()}
    assert set(tuned) == {"en", "ja"} and late.weights == {"en": 0.2}  # Japanese is tuned but not re-scored
    assert build_reranker(Settings(nlu_late_interaction_en=0), tuned) is None
    assert build_reranker(Settings(), {}) is None
    both = build_reranker(Settings(nlu_late_interaction_ja=0.1), tuned)
    assert both.weights == {"ja": 0.1, "en": 0.2} and both.encoders == tuned
    settings = Settings.nlu_from_env({"NLU_LATE_INTERACTION_EN": "0.35", "NLU_LATE_INTERACTION_JA": "0.05"})
    assert (settings.late_interaction("en"), settings.late_interaction("ja")) == (0.35, 0.05)


@pytest.mark.parametrize("question", ["How do I stop getting the e-mails?", "QR " * 700, "😀 ＱＲ"])
def test_one_pass_serves_the_question_vector_and_its_token_states(late, question):
    """A question is embedded from the pass late interaction reads; longer than one pass, by ``embed``'s
    windows: either way the vector is the one FAQ texts are compared with."""
    from nlu.e5_model import embed_windows

    encoder = late.encoders["en"]
    vector = encoder.query(question)
    windows = embed_windows(encoder._pool, encoder.tokenizer, [question], encoder.positions, prefix="query: ")[0]
    assert np.allclose(vector, windows, atol=1e-5)
    assert encoder.token_states(question).shape[1] == len(vector)


def test_warming_up_encodes_every_english_phrasing_so_questions_find_them_ready(nlu, late):
    index = nlu.retriever.indexes["en"]
    english = {text for phrasings in index.phrasings.values() for text in phrasings}
    assert late.warm(nlu.retriever) == len(english)  # Japanese phrasings are not re-scored, so not encoded
    before = late.phrasing_states.cache_info()
    late.rerank("Do I have to pay to register my shop?", nlu.retriever.search("Do I have to pay?", "en", 10), index)
    after = late.phrasing_states.cache_info()
    assert after.misses == before.misses and after.hits > before.hits


def test_the_worker_warms_late_interaction_up_once_its_index_is_complete(nlu, late):
    from nlu import Nlu

    fresh = LateInteraction(late.encoders, late.weights)
    started = Nlu(nlu.faq_dir, nlu.policies, nlu.embedder, reranker=fresh, answer_chars=nlu.answer_chars, staged=True)
    assert fresh.phrasing_states.cache_info().currsize == 0
    started.complete_index()  # what the worker runs in the background after a start
    english = {text for phrasings in started.retriever.indexes["en"].phrasings.values() for text in phrasings}
    assert started.index_complete and fresh.phrasing_states.cache_info().currsize == len(english)
