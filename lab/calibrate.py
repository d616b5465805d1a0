"""Calibrate the decision policy: ``python -m lab.calibrate --set demo`` (any set ``lab.evaluate`` reads).

The four thresholds decide whether the bot answers, asks "did you mean…" or
hands over, and their right values depend on the FAQ and on the retrieval
scores it produces.  This picks them on labelled questions: the answer
threshold, margin and lead that answer the most questions right while at most
``--max-wrong`` of in-scope questions get a wrong answer and at most
``--max-oos`` of out-of-scope ones get any answer (and, with ``--min-offered``,
at least that share is answered right or offered the right entry among the
choices: answering less, a deployment can favour "did you mean…" lists); then
the highest clarify threshold that lets at most ``--max-lost`` of in-scope
questions fall back although the right entry was among the three choices.
``--holdout`` calibrates on the even-numbered questions and reports the odd
ones, then the other way round ("held out (even)": fitted on the odd ones),
and the mean of the two: what to expect on questions the calibration never
saw.  One half alone misleads: on LocalgovFAQ the odd half was answered
wrongly .118 and the even half .053.  Each language gets its own
thresholds, fitted on that language's questions: English and Japanese scores
come from different encoders and re-orderings, and separate right from wrong
differently.  ``--joint`` picks one set of thresholds per language for several
FAQs at once, the limits holding on each: that is how the shipped defaults in
``config/settings.py`` were chosen, since thresholds fitted to one FAQ answer
far too boldly on another.  It prints the ``NLU_*_{JA,EN}`` lines to set.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nlu import build_reranker, load_encoders
from lab.metrics import Scored, outcome_shares
from nlu.faq import LANGUAGES
from lab.evaluate import add_data_options, benchmarks_from, settings_for
from lab.pipeline import build_pipeline

MARGINS = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08)
LEADS = tuple(round(0.004 * i, 3) for i in range(25))  # 0 .. 0.096


def outcomes(scored: Scored, oos: Scored, answer: float, margin: float, lead: float, clarify: float) -> dict:
    """The shares ``lab.datasets.policy_outcomes`` reports, for these thresholds."""
    answered, oos_answered = scored.answered(answer, margin, lead), oos.answered(answer, margin, lead)
    return outcome_shares(scored, answered, ~answered & (scored.top >= clarify),
                          oos_answered, ~oos_answered & (oos.top >= clarify))


def _answered_shares(scored: Scored, grid: np.ndarray, margin: float, lead: float) -> tuple[np.ndarray, ...]:
    """For each answer threshold of ``grid``: the shares of ``scored`` answered right, answered wrongly, and
    answered with a right entry among the top three."""
    passing = scored.answered(-np.inf, margin, lead)

    def share_at_or_above(tops):
        return (len(tops) - np.searchsorted(np.sort(tops), grid, side="left")) / max(len(scored.top), 1)
    return (share_at_or_above(scored.top[passing & scored.right_first]),
            share_at_or_above(scored.top[passing & ~scored.right_first]),
            share_at_or_above(scored.top[passing & scored.right_offered]))


def _reached(scored: Scored, right: np.ndarray, answered_offered: np.ndarray) -> np.ndarray:
    """Answered right or offered the right entry among the choices, when every question not answered gets them
    (the clarify threshold chosen afterwards may let up to ``--max-lost`` of them fall back)."""
    return right + scored.right_offered.sum() / max(len(scored.top), 1) - answered_offered


def calibrate(sets: list[tuple[Scored, Scored]], max_wrong: float, max_oos: float, max_lost: float,
              min_offered: float = 0.0) -> dict:
    """Thresholds as described in the module docstring, for (in-scope, out-of-scope) pairs of one or more FAQs:
    the limits must hold on every one and the mean share answered right is maximised (ties: the fewest wrong
    answers on the worst FAQ, then the strictest thresholds), so thresholds calibrated on several FAQs at once
    suit an FAQ none of them is.  ``min_offered``: at least this share answered right or offered the right
    entry among the choices (``_reached``), which answering less raises.  Never answering is always allowed."""
    tops = np.concatenate([t for scored, oos in sets for t in (scored.top, oos.top)])
    grid = np.unique(np.round(tops[np.isfinite(tops)], 3))
    best = (0.0, 0.0, np.inf, 0.0, 0.0)  # (mean right, -worst wrong, answer threshold, margin, lead): answer nothing
    for margin in MARGINS:
        for lead in LEADS:
            # nothing is right for an out-of-scope question: its "wrong" share is the share answered
            right, wrong, offered, oos = zip(*[(*_answered_shares(scored, grid, margin, lead),
                                                _answered_shares(outside, grid, margin, lead)[1])
                                               for scored, outside in sets])
            mean_right, worst_wrong = np.mean(right, axis=0), np.max(wrong, axis=0)
            reached = np.min([_reached(scored, r, o) for (scored, _), r, o in zip(sets, right, offered)], axis=0)
            allowed = np.flatnonzero((worst_wrong <= max_wrong) & (np.max(oos, axis=0) <= max_oos)
                                     & (reached >= min_offered))
            if len(allowed):
                i = allowed[np.lexsort((grid[allowed], -worst_wrong[allowed], mean_right[allowed]))[-1]]
                best = max(best, (float(mean_right[i]), -float(worst_wrong[i]), float(grid[i]), margin, lead))
    answer, margin, lead = best[2:]
    clarify = float(min(answer, grid.min(initial=0.0)))
    for candidate in grid[::-1]:  # highest first: the share lost only grows as the threshold rises
        if candidate <= answer and all(_lost(scored, answer, margin, lead, candidate) <= max_lost
                                       for scored, _ in sets):
            clarify = float(candidate)
            break
    return {"answer": answer, "margin": margin, "lead": lead, "clarify": clarify}


def _lost(scored: Scored, answer: float, margin: float, lead: float, clarify: float) -> float:
    """Share of in-scope questions that fall back although a right entry was among the three choices."""
    lost = scored.right_offered & ~scored.answered(answer, margin, lead) & (scored.top < clarify)
    return lost.sum() / max(len(scored.top), 1)


def score_benchmark(benchmark, settings, encoders, reranker) -> tuple[Scored, Scored]:
    """Run the bot's pipeline over the set's in-scope and out-of-scope questions."""
    nlu, _ = build_pipeline(benchmark, settings, encoders, reranker)
    decisions = [nlu.answer(q.text, q.lang) for q in tqdm(benchmark.queries, desc=f"{benchmark.name}: questions")]
    oos = [nlu.answer(q.text, q.lang) for q in tqdm(benchmark.oos, desc=f"{benchmark.name}: out-of-scope")]
    return Scored.from_decisions(decisions, [q.qrels for q in benchmark.queries]), Scored.from_decisions(oos)


def mean_shares(first: dict, second: dict) -> dict:
    """The mean of two ``outcomes``, share by share (None stays None: nothing was measured)."""
    return {k: None if v is None else (v + second[k]) / 2 for k, v in first.items()}


def report(name: str, lang: str, chosen: dict, measured: dict) -> None:
    print(f"\n[{name}] answer >= {chosen['answer']} with margin >= {chosen['margin']} and lead >= {chosen['lead']}, "
          f"clarify >= {chosen['clarify']}")
    for part, shares in measured.items():
        print(f"  {part:<27} " + ", ".join(f"{k} {'n/a' if v is None else f'{v:.3f}'}" for k, v in shares.items()))
    suffix = lang.upper()
    print(f"NLU_ANSWER_THRESHOLD_{suffix}={chosen['answer']}\nNLU_ANSWER_MARGIN_{suffix}={chosen['margin']}\n"
          f"NLU_ANSWER_LEAD_{suffix}={chosen['lead']}\nNLU_CLARIFY_THRESHOLD_{suffix}={chosen['clarify']}")


def by_language(scored: dict) -> dict:
    """(set, language) -> its (in-scope, out-of-scope) questions, for each language a set asks in."""
    return {(name, lang): (inside.part(inside.lang == lang), outside.part(outside.lang == lang))
            for name, (inside, outside) in scored.items() for lang in LANGUAGES if (inside.lang == lang).any()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(parser)
    parser.add_argument("--max-wrong", type=float, default=0.10, help="in-scope questions answered wrongly, at most")
    parser.add_argument("--max-oos", type=float, default=0.05, help="out-of-scope questions answered, at most")
    parser.add_argument("--max-lost", type=float, default=0.02,
                        help="in-scope questions falling back although a right choice was in the top 3, at most")
    parser.add_argument("--min-offered", type=float, default=0.0,
                        help="in-scope questions answered right or offered the right entry among the choices, at "
                             "least (answering less raises it; default: no limit)")
    parser.add_argument("--holdout", action="store_true",
                        help="calibrate on even questions and report the odd ones, then the other way round")
    parser.add_argument("--joint", action="store_true",
                        help="one set of thresholds per language for all the sets given, the limits holding on each")
    parser.add_argument("--json", type=Path, help="write the thresholds and shares here")
    args = parser.parse_args(argv)
    settings = settings_for(args)
    encoders = load_encoders(settings)
    reranker = build_reranker(settings, encoders[1])
    even, odd = slice(0, None, 2), slice(1, None, 2)
    fit = even if args.holdout else slice(None)
    scored = {b.name: score_benchmark(b, settings, encoders, reranker)
              for b in benchmarks_from(args, parser, settings.nlu_answer_chars)}
    parts = by_language(scored)
    if args.joint:
        groups = [[key for key in parts if key[1] == lang] for lang in LANGUAGES]
    else:
        groups = [[key] for key in parts]
    results = {}
    for keys in filter(None, groups):
        def fitted(rows) -> dict:
            return calibrate([(parts[k][0].part(rows), parts[k][1].part(rows)) for k in keys],
                             args.max_wrong, args.max_oos, args.max_lost, args.min_offered)
        chosen = fitted(fit)
        swapped = fitted(odd) if args.holdout else None
        names = [f"{name} ({lang})" for name, lang in keys]
        for name, (inside, outside) in zip(names, (parts[k] for k in keys)):
            measured = {"calibrated on": outcomes(inside.part(fit), outside.part(fit), **chosen)}
            if args.holdout:
                measured["held out (odd)"] = outcomes(inside.part(odd), outside.part(odd), **chosen)
                measured["held out (even)"] = outcomes(inside.part(even), outside.part(even), **swapped)
                measured["held out (mean)"] = mean_shares(measured["held out (odd)"], measured["held out (even)"])
            results[name] = {"thresholds": chosen, **measured}
        report(" + ".join(names), keys[0][1], chosen, {f"{n}: {part}": shares for n in names
                                                       for part, shares in results[n].items() if part != "thresholds"})
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
