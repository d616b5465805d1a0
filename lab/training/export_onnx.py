"""Export a fine-tuned encoder for the bot: ``python -m lab.training.export_onnx models/e5-small-en [...]``.

Reads the PyTorch weights training saved in the folder (``model.safetensors``)
and writes ``model.onnx``, which ``nlu.onnx_encoder`` runs without PyTorch.
The transformer layers go out with integer weights in blocks of 32, each block
with its own scale, dequantised by ONNX Runtime at every pass: 8 bits, or 16
for the feed-forward output matrices when 8 would move the sample's vectors
below ``MIN_COSINE`` of PyTorch's (the English encoder needs it: .9915 at 8
bits, .9964 with them at 16).  The export checks the file against PyTorch on
a sample (Japanese and English, full-width characters and emoji) and refuses
to leave a file that fails.  ``tune_encoder`` runs it after training.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from nlu.onnx_encoder import ONNX_FILE, OnnxEncoder, shared_parts
from nlu.weights import CONFIG, read_config

MIN_COSINE = 0.995
BLOCK = 32
OPSET = 21  # DequantizeLinear with blocks
SAMPLE = ("QRコードの登録はどうすればいいですか？", "How do I register my QR code?", "ＱＲコードを登録するには？😀",
          "What if I get an alert e-mail 📧", "接触確認アプリの通知が来たらどうすればいいですか",
          "ぼくは　全角スペース　と　ＡＢＣ　を使う", "poster printing cost", "x")


def is_feed_forward_output(node_name: str) -> bool:
    return "/output/dense" in node_name and "/attention/" not in node_name


def export(directory, threads: int = 2) -> float:
    """Write ``directory/model.onnx`` from its PyTorch weights; returns the sample's lowest cosine."""
    import torch

    from lab.training.encoder import TunedEncoder

    directory = Path(directory)
    model = TunedEncoder.load(directory, threads)
    reference = np.stack([model.query(text) for text in SAMPLE])
    words, tokenizer = shared_parts()
    with tempfile.TemporaryDirectory() as scratch:
        full = Path(scratch) / "fp32.onnx"
        _trace(model.bert, words, tokenizer, full, torch)
        for wide in (False, True):
            _quantize(full, directory / ONNX_FILE, wide)
            _record(directory, model.bert.config.max_position_embeddings, wide, None)
            exported = OnnxEncoder(directory, threads, words, tokenizer)
            lowest = float(min(np.sum(reference * np.stack([exported.query(text) for text in SAMPLE]), axis=1)))
            if lowest >= MIN_COSINE:
                _record(directory, model.bert.config.max_position_embeddings, wide, lowest)
                return lowest
    (directory / ONNX_FILE).unlink()
    raise SystemExit(f"{directory}: the exported model's vectors are off PyTorch's (cosine {lowest:.4f} < "
                     f"{MIN_COSINE}); nothing written")


def _trace(bert, words, tokenizer, path: Path, torch) -> None:
    """The layers after the word table, as ONNX: looked-up rows and the attention mask in, hidden states out."""
    class Layers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, embeds, mask):
            return self.bert(inputs_embeds=embeds, attention_mask=mask).last_hidden_state

    row = np.array([tokenizer.single("query: an example question to trace")])
    example = (torch.from_numpy(words.take(row)), torch.ones(row.shape, dtype=torch.long))
    axes = {"embeds": {0: "rows", 1: "tokens"}, "mask": {0: "rows", 1: "tokens"}, "hidden": {0: "rows", 1: "tokens"}}
    torch.onnx.export(Layers().eval(), example, str(path), input_names=["embeds", "mask"], output_names=["hidden"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)


def _quantize(source: Path, target: Path, wide: bool) -> None:
    """Every constant matrix of ``source`` as integers in blocks of ``BLOCK`` rows with a scale each, and a
    DequantizeLinear feeding its MatMul; 16 bits for the feed-forward output matrices when ``wide``."""
    import onnx
    from onnx import helper, numpy_helper, version_converter

    model = version_converter.convert_version(onnx.load(str(source)), OPSET)
    graph = model.graph
    constants = {tensor.name: tensor for tensor in graph.initializer}
    nodes = []
    for node in graph.node:
        name = node.input[1] if node.op_type == "MatMul" and len(node.input) > 1 else None
        if name in constants:
            bits16 = wide and is_feed_forward_output(node.name)
            levels, kind = (32767, np.int16) if bits16 else (127, np.int8)
            weights = numpy_helper.to_array(constants[name]).astype(np.float32)  # [in, out]
            blocks = weights.reshape(-1, BLOCK, weights.shape[1])
            scale = np.maximum(np.abs(blocks).max(axis=1) / levels, 1e-12).astype(np.float32)
            values = np.round(blocks / scale[:, None, :]).clip(-levels, levels).astype(kind).reshape(weights.shape)
            graph.initializer.remove(constants[name])
            graph.initializer.extend([numpy_helper.from_array(values, f"{name}.q"),
                                      numpy_helper.from_array(scale, f"{name}.scale")])
            nodes.append(helper.make_node("DequantizeLinear", [f"{name}.q", f"{name}.scale"], [name],
                                          axis=0, block_size=BLOCK, name=f"{name}.dequantize"))
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(target))


def _record(directory: Path, positions: int, wide: bool, lowest: float | None) -> None:
    """What the bot needs to run the file, and what it was checked against, in ``config.json``."""
    config = read_config(directory)
    config["onnx"] = {"max_positions": positions, "weights": f"integers in blocks of {BLOCK}, "
                      + ("16-bit feed-forward outputs, 8-bit the rest" if wide else "8-bit"),
                      "min_cosine_to_pytorch": None if lowest is None else round(lowest, 4)}
    (directory / CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directories", nargs="+", type=Path, help="folders with model.safetensors and config.json")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    for directory in args.directories:
        lowest = export(directory, args.threads)
        size = (directory / ONNX_FILE).stat().st_size / 1e6
        print(f"{directory / ONNX_FILE}: {size:.1f} MB, lowest cosine to PyTorch on the sample {lowest:.4f}")


if __name__ == "__main__":
    main()
