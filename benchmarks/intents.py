"""Do the conversational intents take what they should and nothing else?  ``python -m benchmarks.intents
[--sets demo jhu localgov] [--limit N]``

Two measurements, each through the pipeline the harness builds (``lab.pipeline.build_pipeline``):

- the intents' precision and recall on ``benchmarks/intents_eval.yaml`` (written apart from their phrasings,
  with near misses such as "thank you for the QR poster, how do I print another?"), over the bot's own FAQ;
- the share of each FAQ set's questions an intent would take instead of the FAQ (their answers change only
  there): what ``NLU_INTENT_THRESHOLD_{LANG}`` is chosen by: the lowest threshold at which no set loses more
  than .005 of its questions, plus one step (.01) of margin for questions these sets do not have.

Both at the configured thresholds and across a sweep.  Prints tables, writes JSON.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from benchmarks.report import write_json
from config.settings import PROJECT_ROOT, Settings
from nlu import load_encoders, policies_from
from lab.datasets import DATA_DIR, load_demo, load_set
from lab.pipeline import build_pipeline
from nlu.text import detect_language

EVAL = PROJECT_ROOT / "benchmarks" / "intents_eval.yaml"
SWEEP = np.round(np.arange(0.86, 0.981, 0.01), 3)
MOST_TAKEN = 0.005


def scored(nlu, texts_and_langs) -> list[dict]:
    """Per message: the nearest intent, its score, the best entry's score, and what the pipeline decided."""
    rows = []
    for text, lang in texts_and_langs:
        lang = lang or detect_language(text)
        intent, score = nlu.retriever.indexes[lang].intent_match(text)
        decision = nlu.answer(text, lang)
        rows.append({"lang": lang, "intent": intent, "score": score, "best_entry": decision.top.score
                     if decision.top else float("-inf"), "taken": decision.intent})
    return rows


def taken_at(rows: list[dict], policies: dict, threshold: float) -> list[str]:
    """What the intents would take with every language's threshold at ``threshold``, by the policy's own rule."""
    at = {lang: replace(policy, intent_threshold=threshold) for lang, policy in policies.items()}
    return [r["intent"] if at[r["lang"]].takes_intent(r["best_entry"], r["score"]) else "" for r in rows]


def precision_recall(labels: list[str], predicted: list[str]) -> dict:
    report = {}
    for intent in sorted({label for label in labels if label != "none"}):
        hits = sum(1 for label, guess in zip(labels, predicted) if guess == intent and label == intent)
        guessed = sum(1 for guess in predicted if guess == intent)
        wanted = sum(1 for label in labels if label == intent)
        report[intent] = {"precision": hits / guessed if guessed else None, "recall": hits / wanted,
                          "messages": wanted}
    near = [guess for label, guess in zip(labels, predicted) if label == "none"]
    report["near misses taken"] = {"taken": sum(1 for guess in near if guess), "messages": len(near)}
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["demo", "jhu", "localgov"])
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--limit", type=int, help="only the first N questions of each set")
    parser.add_argument("--json", type=Path, default=PROJECT_ROOT / "benchmarks" / "results" / "intents.json")
    args = parser.parse_args(argv)
    settings = Settings.nlu_from_env()
    encoders = load_encoders(settings)
    policies = policies_from(settings)
    thresholds = {lang: policy.intent_threshold for lang, policy in policies.items()}

    eval_set = yaml.safe_load(EVAL.read_text(encoding="utf-8"))
    messages = [(label, text) for label, texts in eval_set.items() for text in texts]
    demo_nlu, _ = build_pipeline(load_demo(data_dir=args.data_dir), settings, encoders, None)
    eval_rows = scored(demo_nlu, tqdm([(text, None) for _, text in messages], desc="intents_eval", file=sys.stderr))
    labels = [label for label, _ in messages]

    sets = {}
    for name in args.sets:
        benchmark = (load_demo(data_dir=args.data_dir) if name == "demo"
                     else load_set(name, args.data_dir, settings.nlu_answer_chars)).limited(args.limit)
        nlu, _ = build_pipeline(benchmark, settings, encoders, None)
        sets[name] = scored(nlu, tqdm([(q.text, q.lang) for q in benchmark.queries], desc=name, file=sys.stderr))

    configured = precision_recall(labels, [r["taken"] for r in eval_rows])
    sweep = []
    for threshold in SWEEP:
        guesses = taken_at(eval_rows, policies, threshold)
        positives = [g == label for g, label in zip(guesses, labels) if label != "none"]
        sweep.append({"threshold": float(threshold), "recall": float(np.mean(positives)),
                      "near_misses_taken": sum(1 for g, label in zip(guesses, labels) if label == "none" and g),
                      **{f"{name}_taken": float(np.mean([bool(g) for g in taken_at(rows, policies, threshold)]))
                         for name, rows in sets.items()}})
    lowest = next((row["threshold"] for row in sweep
                   if all(row[f"{name}_taken"] <= MOST_TAKEN for name in sets)), None)
    report = {"thresholds": thresholds, "intents": configured,
              "faq_questions_taken": {name: float(np.mean([bool(r["taken"]) for r in rows])) for name, rows in sets.items()},
              "sweep": sweep, "lowest_threshold_taking_at_most_0.005": lowest}

    print(f"\nthresholds in service: {thresholds}")
    print(f"{'intent':<20}{'precision':>10}{'recall':>8}{'messages':>10}")
    for intent, row in configured.items():
        if "precision" in row:
            precision = "n/a" if row["precision"] is None else f"{row['precision']:.3f}"
            print(f"{intent:<20}{precision:>10}{row['recall']:>8.3f}{row['messages']:>10}")
    near = configured["near misses taken"]
    print(f"near misses taken by an intent: {near['taken']} of {near['messages']}")
    print("FAQ questions taken by an intent (their answers change): " + ", ".join(
        f"{name} {share:.4f}" for name, share in report["faq_questions_taken"].items()))
    print(f"\n{'threshold':>9}{'recall':>8}{'near':>6}" + "".join(f"{name + ' taken':>16}" for name in sets))
    for row in sweep:
        print(f"{row['threshold']:>9.2f}{row['recall']:>8.3f}{row['near_misses_taken']:>6}"
              + "".join(f"{row[f'{name}_taken']:>16.4f}" for name in sets))
    print(f"lowest threshold at which no set loses more than {MOST_TAKEN} of its questions: {lowest}")
    write_json(args.json, report)


if __name__ == "__main__":
    main()
