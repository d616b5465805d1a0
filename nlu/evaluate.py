"""Benchmark the NLU on the demo FAQ: ``python -m nlu.evaluate --set demo``.

Ranks the hand-written paraphrase set (benchmarks/demo_paraphrases.yaml,
written apart from the FAQ wording) with each method, runs the full pipeline
with its decision policy, prints a table and writes JSON for other tools.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import yaml

from config.settings import PROJECT_ROOT, Settings
from nlu import ANSWER, CLARIFY, build_nlu

DEMO_QUERIES = PROJECT_ROOT / "benchmarks" / "demo_paraphrases.yaml"


def rank_metrics(ranked: list[list[str]], gold: list[str]) -> dict:
    """P@1, Recall@3 (what "did you mean" offers), Recall@10, MRR@10 and nDCG@10, one relevant entry each."""
    positions = [r.index(g) if g in r[:10] else None for r, g in zip(ranked, gold)]
    n = len(gold)
    return {
        "p@1": sum(p == 0 for p in positions) / n,
        "recall@3": sum(p is not None and p < 3 for p in positions) / n,
        "recall@10": sum(p is not None for p in positions) / n,
        "mrr@10": sum(1 / (p + 1) for p in positions if p is not None) / n,
        "ndcg@10": sum(1 / math.log2(p + 2) for p in positions if p is not None) / n,
    }


def method_rankings(nlu, queries) -> dict[str, list[list[str]]]:
    """Rankings by BM25 alone, dense alone and the fused hybrid score."""
    retriever = nlu.retriever
    out = {"bm25": [], "dense": [], "hybrid": []}
    for query in queries:
        ids, dense, bm25 = retriever.scores(query["text"], query["lang"])
        for method, score in (("bm25", bm25), ("dense", dense), ("hybrid", retriever.fusion(dense, bm25))):
            out[method].append([ids[i] for i in np.argsort(-score, kind="stable")[:10]])
    return out


def policy_outcomes(decisions, gold, oos_decisions) -> dict:
    """Shares of in-scope questions answered right/wrong, clarified, fallen back; OOS answered."""
    n = len(gold)
    counts = dict.fromkeys(["answered_correct", "answered_wrong", "clarified_with_right_choice",
                            "clarified_without", "fallback"], 0)
    for decision, right in zip(decisions, gold):
        offered = [c.faq_id for c in decision.candidates[:3]]
        if decision.kind == ANSWER:
            counts["answered_correct" if offered[0] == right else "answered_wrong"] += 1
        elif decision.kind == CLARIFY:
            counts["clarified_with_right_choice" if right in offered else "clarified_without"] += 1
        else:
            counts["fallback"] += 1
    shares = {k: v / n for k, v in counts.items()}
    shares["oos_answered"] = sum(d.kind == ANSWER for d in oos_decisions) / max(1, len(oos_decisions))
    shares["oos_clarified"] = sum(d.kind == CLARIFY for d in oos_decisions) / max(1, len(oos_decisions))
    return shares


def run(settings: Settings, queries_path: Path) -> dict:
    data = yaml.safe_load(queries_path.read_text(encoding="utf-8"))
    queries = data["queries"]
    oos = [{"text": t, "lang": lang} for lang, texts in data.get("out_of_scope", {}).items() for t in texts]
    started = time.perf_counter()
    nlu = build_nlu(settings)
    build_s = time.perf_counter() - started
    gold = [q["faq"] for q in queries]
    latencies, decisions = [], []
    for query in queries:
        t0 = time.perf_counter()
        decisions.append(nlu.answer(query["text"], query["lang"]))
        latencies.append((time.perf_counter() - t0) * 1000)
    oos_decisions = [nlu.answer(q["text"], q["lang"]) for q in oos]
    rows = [{"method": m, **rank_metrics(r, gold)} for m, r in method_rankings(nlu, queries).items()]
    pipeline = rank_metrics([[c.faq_id for c in d.candidates] for d in decisions], gold)
    rows.append({"method": "pipeline", **pipeline,
                 "latency_ms_p50": statistics.median(latencies),
                 "latency_ms_p95": float(np.percentile(latencies, 95))})
    by_lang = {
        lang: rank_metrics([[c.faq_id for c in d.candidates] for d, q in zip(decisions, queries) if q["lang"] == lang],
                           [q["faq"] for q in queries if q["lang"] == lang])["p@1"]
        for lang in ("ja", "en")
    }
    return {
        "set": "demo", "queries": len(queries), "oos_queries": len(oos), "faq_entries": len(nlu.faq.entries),
        "rows": rows, "policy": policy_outcomes(decisions, gold, oos_decisions), "p@1_by_language": by_lang,
        "thresholds": {"answer": settings.nlu_answer_threshold, "margin": settings.nlu_answer_margin,
                       "clarify": settings.nlu_clarify_threshold},
        "index_build_s": build_s, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def print_report(report: dict) -> None:
    print(f"\n{report['queries']} paraphrased questions, {report['oos_queries']} out-of-scope, "
          f"{report['faq_entries']} FAQ entries\n")
    print(f"{'method':<10} {'P@1':>6} {'R@3':>6} {'R@10':>6} {'MRR@10':>7} {'nDCG@10':>8} {'p50 ms':>7} {'p95 ms':>7}")
    for row in report["rows"]:
        lat = f"{row['latency_ms_p50']:>7.1f} {row['latency_ms_p95']:>7.1f}" if "latency_ms_p50" in row else ""
        print(f"{row['method']:<10} {row['p@1']:>6.3f} {row['recall@3']:>6.3f} {row['recall@10']:>6.3f} "
              f"{row['mrr@10']:>7.3f} {row['ndcg@10']:>8.3f} {lat}")
    print("\npolicy: " + ", ".join(f"{k} {v:.3f}" for k, v in report["policy"].items()))
    print("P@1 by language: " + ", ".join(f"{k} {v:.3f}" for k, v in report["p@1_by_language"].items()))
    print(f"index build {report['index_build_s']:.1f} s, peak RSS {report['peak_rss_mb']:.0f} MB\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", choices=["demo"], default="demo")
    parser.add_argument("--queries", type=Path, default=DEMO_QUERIES, help="paraphrase set (YAML)")
    parser.add_argument("--json", type=Path, default=PROJECT_ROOT / "benchmarks" / "results" / "demo.json")
    args = parser.parse_args(argv)
    report = run(Settings.from_env(), args.queries)
    print_report(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
