"""Policy calibration: its shares agree with the bot's own policy, its choices respect the limits, one CLI run."""
import json
import random

import numpy as np
import pytest

from lab.metrics import policy_outcomes
from lab.calibrate import Scored, by_language, calibrate, main, outcomes
from nlu.decision import Candidate, Decision, Policy


def random_decisions(rng: random.Random, n: int, in_scope: bool):
    """Decisions with 0-4 candidates scored in the range real retrieval gives; ids e0..e4."""
    out, qrels = [], []
    for _ in range(n):
        scores = sorted((round(rng.uniform(0.80, 1.0), 3) for _ in range(rng.randint(0, 4))), reverse=True)
        ids = rng.sample([f"e{i}" for i in range(5)], len(scores))
        out.append(Decision("clarify", "en", tuple(Candidate(i, s) for i, s in zip(ids, scores))))
        qrels.append({f"e{rng.randint(0, 4)}": rng.choice([1, 2])} if in_scope else {})
    return out, qrels


def test_the_shares_for_given_thresholds_are_those_of_the_bots_policy():
    rng = random.Random(7)
    decisions, qrels = random_decisions(rng, 300, True)
    oos, _ = random_decisions(rng, 100, False)
    scored, oos_scored = Scored.from_decisions(decisions, qrels), Scored.from_decisions(oos)
    for answer, margin, lead, clarify in ((0.95, 0.02, 0.0, 0.9), (0.9, 0.0, 0.04, 0.85), (0.99, 0.05, 0.0, 0.99)):
        policy = Policy(answer, margin, lead, clarify)
        decided = [Decision(policy.decide(d.candidates), d.lang, d.candidates) for d in decisions]
        oos_decided = [Decision(policy.decide(d.candidates), d.lang, d.candidates) for d in oos]
        expected = policy_outcomes(decided, qrels, oos_decided)
        got = outcomes(scored, oos_scored, answer, margin, lead, clarify)
        assert got == pytest.approx(expected, abs=1e-4)


def scored_from(rows):
    """(top, second, right first, right in top 3) per question; two candidates each, so the lead is the margin
    unless a fifth value gives it."""
    top, second, first, offered, lead = map(np.array, zip(*[(*row, row[0] - row[1])[:5] for row in rows]))
    return Scored(top.astype(float), second.astype(float), lead.astype(float), first.astype(bool),
                  offered.astype(bool), np.zeros(len(top), dtype=bool), np.full(len(top), "en", dtype=object),
                  np.full(len(top), -np.inf))


def test_calibration_answers_what_it_safely_can_and_keeps_clarifiable_questions_from_falling_back():
    # Right answers score high and clear of the runner-up; one wrong answer hides among them at 0.95.
    scored = scored_from([(0.99, 0.90, 1, 1), (0.98, 0.90, 1, 1), (0.97, 0.90, 1, 1), (0.95, 0.94, 0, 1),
                          (0.93, 0.90, 0, 1), (0.91, 0.90, 0, 1), (0.85, 0.80, 0, 0), (0.80, 0.70, 0, 0)])
    oos = scored_from([(0.96, 0.80, 0, 0), (0.70, 0.60, 0, 0)])
    chosen = calibrate([(scored, oos)], max_wrong=0.0, max_oos=0.5, max_lost=0.0)
    assert chosen["answer"] <= 0.97 and chosen["margin"] > 0.01  # the margin, not the score, excludes 0.95
    shares = outcomes(scored, oos, **chosen)
    assert shares["answered_correct"] == 3 / 8 and shares["answered_wrong"] == 0.0
    assert shares["clarified_with_right_choice"] == 3 / 8 and chosen["clarify"] == 0.91
    strict = calibrate([(scored, oos)], max_wrong=0.0, max_oos=0.0, max_lost=0.0)
    assert outcomes(scored, oos, **strict)["oos_answered"] == 0.0 and strict["answer"] > 0.96


def test_a_floor_on_right_or_offered_trades_answers_for_choices():
    # A wrong answer whose right entry is the runner-up: answering it costs the resident the right choice.
    scored = scored_from([(0.99, 0.80, 1, 1), (0.97, 0.80, 0, 1), (0.96, 0.80, 1, 1), (0.90, 0.85, 0, 0)])
    oos = scored_from([(0.70, 0.60, 0, 0)])
    bold = outcomes(scored, oos, **calibrate([(scored, oos)], max_wrong=0.25, max_oos=0.0, max_lost=0.0))
    assert (bold["answered_correct"], bold["answered_wrong"]) == (0.5, 0.25)
    assert bold["answered_correct"] + bold["clarified_with_right_choice"] == 0.5
    chosen = calibrate([(scored, oos)], max_wrong=0.25, max_oos=0.0, max_lost=0.0, min_offered=0.75)
    shares = outcomes(scored, oos, **chosen)
    assert (shares["answered_correct"], shares["answered_wrong"]) == (0.25, 0.0) and chosen["answer"] > 0.97
    assert shares["answered_correct"] + shares["clarified_with_right_choice"] == 0.75


def test_the_lead_separates_a_top_in_a_crowd_from_one_that_stands_out():
    """Same top score, same margin: only how far the top stands above the rest of its shortlist tells."""
    scored = scored_from([(0.95, 0.90, 1, 1, 0.08), (0.95, 0.90, 1, 1, 0.09), (0.95, 0.90, 0, 1, 0.02),
                          (0.85, 0.80, 0, 0, 0.05)])
    chosen = calibrate([(scored, scored_from([(0.5, 0.4, 0, 0)]))], max_wrong=0.0, max_oos=0.0, max_lost=0.0)
    assert 0.02 < chosen["lead"] <= 0.08
    shares = outcomes(scored, scored_from([(0.5, 0.4, 0, 0)]), **chosen)
    assert shares["answered_correct"] == 0.5 and shares["answered_wrong"] == 0.0


def test_when_nothing_can_be_answered_safely_the_bot_only_clarifies():
    scored = scored_from([(0.99, 0.5, 0, 1), (0.98, 0.5, 0, 1)])
    chosen = calibrate([(scored, scored_from([(0.5, 0.4, 0, 0)]))], max_wrong=0.0, max_oos=0.0, max_lost=0.0)
    shares = outcomes(scored, scored_from([(0.5, 0.4, 0, 0)]), **chosen)
    assert shares["answered_correct"] == shares["answered_wrong"] == 0.0
    assert shares["clarified_with_right_choice"] == 1.0


def test_joint_thresholds_keep_the_limits_on_every_faq():
    """Scores mean different things on different FAQs: what is safe on one can answer wrongly on another."""
    a = scored_from([(0.96, 0.5, 1, 1), (0.90, 0.5, 0, 1)])
    b = scored_from([(0.97, 0.5, 0, 1), (0.99, 0.5, 1, 1)])
    nothing = scored_from([(0.1, 0.0, 0, 0)])
    alone = calibrate([(a, nothing)], max_wrong=0.0, max_oos=0.0, max_lost=0.0)
    assert outcomes(a, nothing, **alone)["answered_wrong"] == 0.0
    assert outcomes(b, nothing, **alone)["answered_wrong"] == 0.5
    joint = calibrate([(a, nothing), (b, nothing)], max_wrong=0.0, max_oos=0.0, max_lost=0.0)
    assert [outcomes(s, nothing, **joint)["answered_wrong"] for s in (a, b)] == [0.0, 0.0]
    assert outcomes(b, nothing, **joint)["answered_correct"] == 0.5


def test_each_language_is_calibrated_on_its_own_questions():
    """A bilingual set is split by question language; a set asked in one language yields one part."""
    mixed = scored_from([(0.99, 0.5, 1, 1), (0.90, 0.8, 0, 1), (0.95, 0.5, 1, 1)])
    mixed.lang[:] = ["ja", "en", "ja"]
    oos = scored_from([(0.7, 0.6, 0, 0), (0.8, 0.7, 0, 0)])
    oos.lang[:] = ["en", "ja"]
    english = scored_from([(0.97, 0.5, 1, 1)])
    parts = by_language({"demo": (mixed, oos), "jhu": (english, scored_from([(0.6, 0.5, 0, 0)]))})
    assert sorted(parts) == [("demo", "en"), ("demo", "ja"), ("jhu", "en")]
    japanese, japanese_oos = parts[("demo", "ja")]
    assert list(japanese.top) == [0.99, 0.95] and list(japanese_oos.top) == [0.8]
    assert list(parts[("demo", "en")][0].top) == [0.90] and list(parts[("demo", "en")][1].top) == [0.7]


def test_the_cli_calibrates_on_half_and_reports_the_other_half(tiny_faq, tmp_path, capsys):
    out = tmp_path / "thresholds.json"
    main(["--corpus", str(tiny_faq["corpus"]), "--queries", str(tiny_faq["queries"]), "--qrels",
          str(tiny_faq["qrels"]), "--oos", str(tiny_faq["oos"]), "--lang", "en", "--holdout", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "NLU_ANSWER_THRESHOLD_EN=" in printed and "NLU_CLARIFY_THRESHOLD_EN=" in printed
    result = json.loads(out.read_text())["custom (en)"]
    assert result["thresholds"]["clarify"] <= result["thresholds"]["answer"]
    assert {"calibrated on", "held out (odd)", "held out (even)"} <= result.keys()
    halves = [result["held out (odd)"], result["held out (even)"]]
    assert result["held out (mean)"] == pytest.approx({k: (halves[0][k] + halves[1][k]) / 2 for k in halves[0]})
    assert result["calibrated on"]["answered_wrong"] <= 0.10
