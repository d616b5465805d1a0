"""The shipped encoders as the worker runs them: compiled once into ONNX Runtime's own format, same vectors."""
from __future__ import annotations

import numpy as np

from config.settings import PROJECT_ROOT
from nlu.onnx_encoder import OnnxEncoder, shared_parts

TEXTS = ["How do I register my QR code?", "ＱＲコードはどうやって登録するの😀", "登録は無料です。" * 150]


def test_the_compiled_model_gives_the_same_vectors_and_is_written_once(tmp_path):
    directory, parts = PROJECT_ROOT / "models" / "e5-small-en", shared_parts()
    from_onnx = OnnxEncoder(directory, 1, *parts)
    compiled = OnnxEncoder(directory, 1, *parts, cache_dir=str(tmp_path))
    (written,) = tmp_path.glob("e5-small-en-*.ort")
    assert np.array_equal(compiled.query(TEXTS), from_onnx.query(TEXTS))
    assert np.array_equal(compiled.token_states(TEXTS[1]), from_onnx.token_states(TEXTS[1]))
    stamp = written.stat().st_mtime_ns
    OnnxEncoder(directory, 1, *parts, cache_dir=str(tmp_path))
    assert written.stat().st_mtime_ns == stamp and not list(tmp_path.glob("*.partial"))
