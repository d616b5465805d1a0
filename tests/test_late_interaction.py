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
    states = late.encoder.token_states(question).astype(np.float32)
    assert late.maxsim(states, question) > 0.999
    assert late.maxsim(states, "Is there a charge for registering a shop?") < 0.9


def test_english_candidates_are_reordered_and_keep_retrievals_scores_in_rank_order(nlu, late):
    question = "I got an email saying someone with covid was at the same place, what now?"
    retrieved = nlu.retriever.search(question, "en", 10)
    reranked = late.rerank(question, retrieved, nlu.retriever.indexes["en"])
    assert sorted(c.faq_id for c in reranked) == sorted(c.faq_id for c in retrieved)
    assert [c.score for c in reranked] == [c.score for c in retrieved]  # the policy reads retrieval's scores
    mixed = [c.parts["retrieval"] + late.weight * c.parts["maxsim"] for c in reranked]
    assert all(a >= b - 1e-3 for a, b in zip(mixed, mixed[1:]))  # parts are rounded to 4 places
    assert all(0 < c.parts["maxsim"] <= 1.001 for c in reranked)


def test_japanese_is_left_as_retrieval_ranked_it(nlu, late):
    question = "感染者が出たってメールが届いた。どうしたらいい？"
    retrieved = nlu.retriever.search(question, "ja", 10)
    assert late.rerank(question, retrieved, nlu.retriever.indexes["ja"]) == retrieved


def test_weight_zero_or_no_tuned_encoder_means_no_reranker(late):
    assert build_reranker(Settings(nlu_late_interaction=0), late.encoder) is None
    assert build_reranker(Settings(), None) is None
    assert Settings.from_env({"NLU_LATE_INTERACTION": "0.35"}).nlu_late_interaction == 0.35
