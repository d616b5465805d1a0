"""Benchmark the NLU: ``python -m lab.evaluate --set demo|localgov|jhu|clinc-oos``.

Ranks each set's questions by BM25 alone, dense alone, the fused hybrid score
and the full pipeline (optional re-ranker, then the decision policy from the
settings), prints a table per set, and writes JSON plus a precision–coverage
plot of the pipeline's top score.  Any FAQ in the LocalgovFAQ format can be
given with --corpus/--queries/--qrels (see lab/datasets.py).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from config.settings import PROJECT_ROOT, Settings
from lab.datasets import (DATA_DIR, DEMO_QUERIES, Benchmark, corpus_language, load_demo, load_faq_set, load_set,
                          read_json)
from lab.metrics import (asked_alike_labelled_apart, label_ceiling, p1_by_language, paired_gain,
                         per_query_metrics, pipeline_curve, policy_outcomes, precision_at_1, question_outcomes,
                         rank_metrics, right_choice)
from lab.pipeline import build_pipeline
from lab.report import plot_curve, print_report, write_questions
from nlu import Nlu, build_reranker, load_encoders, policies_from
from nlu.retrieval import HybridRetriever

SETS = ("demo", "localgov", "jhu", "clinc-oos")
LANGUAGE_NAMES = {"ja": "Japanese", "en": "English"}
RESULTS = PROJECT_ROOT / "benchmarks" / "results"
BASELINE_METRICS = ("ndcg@10", "p@1")  # kept per question in the report, for a later run's --baseline


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
        "per_question": {metric: [round(float(v), 4) for v in values] for metric, values in
                         per_query_metrics(rankings["pipeline"], qrels).items() if metric in BASELINE_METRICS},
        "questions": question_rows(benchmark, decisions, oos_decisions),
    }



def read_baseline(path: Path, benchmark: Benchmark) -> dict:
    """An earlier report of this set for ``--baseline``, checked before the run, which takes minutes."""
    baseline = read_json(path)
    if baseline.get("set") != benchmark.name or baseline.get("queries") != len(benchmark.queries):
        raise SystemExit(f"--baseline: that report is of {baseline.get('set')} ({baseline.get('queries')} questions), "
                         f"not {benchmark.name} ({len(benchmark.queries)})")
    if "per_question" not in baseline:
        raise SystemExit("--baseline: that report has no per-question metrics (written before they were kept)")
    return baseline


def against_baseline(report: dict, baseline: dict) -> dict:
    """This run's pipeline against an earlier report of the same set (``read_baseline``), question by question:
    the paired interval that says whether a change gained, and the policy's shares then and now."""
    new, old = report["per_question"], baseline["per_question"]
    return {**{metric: paired_gain(np.array(new[metric]), np.array(old[metric])) for metric in BASELINE_METRICS},
            "policy_before": baseline["policy"]}


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
    """Which questions to run and how to index their FAQ (shared with ``lab.calibrate``)."""
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
    parser.add_argument("--baseline", type=Path, metavar="JSON",
                        help="an earlier report of the same set: print this run's paired gain over it")
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
    if len(benchmarks) > 1 and (args.json or args.png or args.baseline):
        parser.error("--json, --png and --baseline name one file each: give them with a single set")
    baseline = read_baseline(args.baseline, benchmarks[0]) if args.baseline else None
    encoders = load_encoders(settings)
    reranker = build_reranker(settings, encoders[1])
    for benchmark in benchmarks:
        report = {**evaluate(benchmark, settings, encoders, reranker), "answer_chars": settings.nlu_answer_chars,
                  "tuned_encoders": {lang: encoder.directory.name for lang, encoder in sorted(encoders[1].items())},
                  "reranker": reranker_label(settings, reranker), "limit": args.limit}
        if baseline:
            report["against_baseline"] = against_baseline(report, baseline)
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
