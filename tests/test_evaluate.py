"""The benchmark harness: metrics on hand-made rankings, the LocalgovFAQ-format loader, one tiny CLI run."""
import csv
import json
import math

import pytest

from lab.datasets import Benchmark, Query, corpus_language, load_faq_set, split_entry
from lab.metrics import (label_ceiling, ndcg_at, paired_gain, precision_at_1, precision_coverage, rank_metrics,
                         recall_at, reciprocal_rank)
from nlu.decision import Candidate, Decision
from lab.evaluate import consistent_p1, main, question_rows
from lab.report import plot_curve


def test_graded_ndcg_is_one_for_the_ideal_order_and_uses_the_grade_as_gain():
    qrels = {"a": 2, "b": 1}
    assert ndcg_at(["a", "b", "x"], qrels) == pytest.approx(1.0)
    ideal = 2 + 1 / math.log2(3)
    assert ndcg_at(["b", "a"], qrels) == pytest.approx((1 + 2 / math.log2(3)) / ideal)
    assert ndcg_at(["x", "a"], {"a": 2}) == pytest.approx(1 / math.log2(3))


def test_ndcg_counts_only_the_top_ten_and_is_zero_without_relevant_entries():
    ranked = [f"x{i}" for i in range(10)] + ["a"]
    assert ndcg_at(ranked, {"a": 1}) == 0.0
    assert ndcg_at(["a"], {"a": 0}) == 0.0


def test_precision_at_one_needs_a_relevant_entry_first_and_grade_one_counts():
    assert precision_at_1(["a", "b"], {"a": 1}) == 1.0
    assert precision_at_1(["b", "a"], {"a": 2}) == 0.0
    assert precision_at_1([], {"a": 2}) == 0.0


def test_recall_is_the_share_of_relevant_entries_found_in_the_top_k():
    qrels = {"a": 2, "b": 1, "c": 0}
    assert recall_at(["a", "x", "y"], qrels, 10) == pytest.approx(0.5)
    assert recall_at(["x", "y", "z", "a", "b"], qrels, 3) == 0.0
    assert recall_at(["x", "y", "z", "a", "b"], qrels, 10) == 1.0


def test_mrr_is_one_over_the_first_relevant_rank_within_ten():
    assert reciprocal_rank(["x", "a", "b"], {"a": 1, "b": 2}) == pytest.approx(0.5)
    assert reciprocal_rank([f"x{i}" for i in range(10)] + ["a"], {"a": 1}) == 0.0


def test_rank_metrics_average_over_queries():
    metrics = rank_metrics([["a"], ["x", "b"]], [{"a": 1}, {"b": 1}])
    assert metrics["p@1"] == pytest.approx(0.5)
    assert metrics["mrr@10"] == pytest.approx(0.75)
    assert metrics["recall@10"] == pytest.approx(1.0)


def test_a_paired_gain_counts_the_questions_that_moved_and_brackets_its_mean():
    new, old = [1, 1, 1, 0, 1, 0, 1, 1], [1, 0, 0, 0, 1, 1, 1, 1]
    gain = paired_gain(new, old)
    assert gain["mean"] == pytest.approx(0.125) and (gain["better"], gain["worse"]) == (2, 1)
    assert gain["ci95"][0] < 0 < gain["ci95"][1]  # two up, one down in eight: the set cannot tell
    certain = paired_gain([1] * 40, [0] * 10 + [1] * 30)
    assert 0 < certain["ci95"][0] < 0.25 < certain["ci95"][1]  # ten up, none down in forty: a real gain


def test_precision_coverage_points_at_each_threshold():
    points = precision_coverage([0.9, 0.8, 0.7], [True, False, True], [0.85, 0.6], [0.7, 0.8, 0.9, 0.95])
    by_t = {p["threshold"]: p for p in points}
    assert by_t[0.7] == {"threshold": 0.7, "coverage": 1.0, "precision": pytest.approx(2 / 3), "oos_accepted": 0.5}
    assert by_t[0.8]["coverage"] == pytest.approx(2 / 3) and by_t[0.8]["precision"] == pytest.approx(0.5)
    assert by_t[0.9] == {"threshold": 0.9, "coverage": pytest.approx(1 / 3), "precision": 1.0, "oos_accepted": 0.0}
    assert by_t[0.95]["coverage"] == 0.0 and by_t[0.95]["precision"] is None


def test_the_label_ceiling_counts_questions_asked_alike_but_labelled_apart():
    queries = [Query("What is a coronavirus?", "en", {"2": 1}), Query("what is a  CORONAVIRUS", "en", {"1": 1}),
               Query("ｗｈａｔ ｉｓ ａ ｃｏｒｏｎａｖｉｒｕｓ", "en", {"1": 2, "3": 0}),  # full width reads alike too
               Query("Can my dog get it?", "en", {"26": 1, "32": 1}), Query("can my dog get it", "en", {"32": 1}),
               Query("Where did it come from?", "en", {"6": 1})]
    ceiling = label_ceiling(queries)
    # entry 1 is right for two of the three coronavirus rows, entry 32 for both dog rows, entry 6 for its own
    assert ceiling == {"p@1": pytest.approx(5 / 6), "split_texts": 1, "split_questions": 3}
    assert label_ceiling(queries[3:]) == {"p@1": 1.0, "split_texts": 0, "split_questions": 0}


def test_p1_on_questions_labelled_consistently_leaves_out_the_split_ones():
    queries = [Query("What is a coronavirus?", "en", {"2": 1}), Query("what is a coronavirus", "en", {"1": 1}),
               Query("Where did it come from?", "en", {"6": 1}), Query("Can my dog get it?", "en", {"32": 1})]
    rankings = {"picks 2": [["2"], ["2"], ["6"], ["9"]], "picks 1": [["1"], ["1"], ["7"], ["32"]]}
    # both are right once on the split pair; on the other two, "picks 2" is right once and "picks 1" once
    assert consistent_p1(rankings, queries) == {"picks 2": 0.5, "picks 1": 0.5}
    rankings["picks 1"][2] = ["6"]
    assert consistent_p1(rankings, queries)["picks 1"] == 1.0
    assert consistent_p1(rankings, queries[:2]) == {"picks 2": 0.0, "picks 1": 0.0}  # none left to count


def test_the_questions_csv_marks_the_questions_labelled_apart():
    queries = [Query("What is a coronavirus?", "en", {"2": 1}), Query("what is a coronavirus", "en", {"1": 1}),
               Query("Where did it come from?", "en", {"6": 1})]
    decisions = [Decision("answer", "en", (Candidate("2", 0.95), Candidate("1", 0.94)))] * 3
    rows = question_rows(Benchmark("t", queries, [Query("book a flight", "en")]), decisions,
                         [Decision("fallback", "en", ())])
    assert [row["labelled_apart"] for row in rows] == [True, True, False, False]
    assert [row["outcome"] for row in rows] == ["answered_correct", "answered_wrong", "answered_wrong", "oos_fallback"]


def test_a_choice_folded_from_entries_with_one_answer_is_right_when_any_of_them_is():
    """The resident gets the same text whichever twin stands for the pair; the ranking keeps both, in order."""
    queries = [Query("moving out", "en", {"out": 1}), Query("trash day", "en", {"bins": 1})]
    folded = Decision("answer", "en", (Candidate("in", 0.95, twins=("out",)), Candidate("bins", 0.8)))
    rows = question_rows(Benchmark("t", queries, []), [folded, folded], [])
    assert [row["outcome"] for row in rows] == ["answered_correct", "answered_wrong"]
    assert [row["first_right_rank"] for row in rows] == [1, 2] and rows[0]["candidates"] == "in=out bins"
    assert folded.ranked_ids == ["in", "out", "bins"]


def test_the_plot_marks_the_label_ceiling_where_the_labels_split(tmp_path):
    curve = [{"threshold": t, "coverage": c, "precision": p, "oos_accepted": 0.0}
             for t, c, p in ((0.8, 1.0, 0.68), (0.9, 0.5, 0.75), (0.95, 0.1, 0.8))]
    report = {"set": "t", "oos_queries": 0, "precision_coverage": curve, "thresholds": {"en": {"answer_threshold": 0.9}},
              "policy": {"answered_correct": 0.4, "answered_wrong": 0.1},
              "label_ceiling": {"p@1": 0.773, "split_texts": 2, "split_questions": 5}}
    plot_curve(report, tmp_path / "split.png")
    report["label_ceiling"] = {"p@1": 1.0, "split_texts": 0, "split_questions": 0}
    plot_curve(report, tmp_path / "consistent.png")
    assert (tmp_path / "split.png").stat().st_size > (tmp_path / "consistent.png").stat().st_size > 0  # one more mark


def test_a_corpus_is_in_the_language_most_of_its_questions_are_written_in():
    assert corpus_language({"1": "Question: 住民票の写しが欲しい\nAnswer: 窓口へ。", "2": {"question": "ごみの日は？"},
                            "3": {"question": "Where is the Amagasaki city office?", "answer": "尼崎市役所"}}) == "ja"
    assert corpus_language({"1": "Question: How do I visit 尼崎城?\nAnswer: By train.",
                            "2": {"question": "When is garbage collected?", "answer": "Mondays."},
                            "3": {"question": "Where can I park my bicycle?", "answer": "By the station."}}) == "en"


def test_a_question_answer_text_is_split_and_other_forms_pass_through():
    assert split_entry("Question: 住民票は？\nAnswer: 窓口で。\n") == ("住民票は？", "窓口で。")
    assert split_entry({"question": "Q?", "answer": "A."}) == ("Q?", "A.")
    assert split_entry("just a text") == ("just a text", "")


def test_the_loader_reads_both_corpus_forms_and_drops_queries_without_a_relevant_entry(tiny_faq):
    question_only = load_faq_set("t", tiny_faq["corpus"], tiny_faq["queries"], tiny_faq["qrels"], "en")
    with_head = load_faq_set("t", tiny_faq["corpus"], tiny_faq["queries"], tiny_faq["qrels"], "en", answer_chars=12)
    corpus = question_only.corpus
    assert corpus.ids == ["1", "2", "3", "4", "5"]
    assert corpus.phrasings[0] == ["How do I renew my passport?"]
    assert corpus.documents[2] == "Where can I park my bicycle?\nUse the bicycle parking by the station."
    assert corpus.heads[2] == "" and with_head.corpus.phrasings[2] == ["Where can I park my bicycle?"]
    assert with_head.corpus.heads[2] == "Where can I park my bicycle? Use the bicy"
    assert [q.text for q in question_only.queries] == ["passport renewal", "which day is trash pickup",
                                                       "dog registration"]
    assert question_only.queries[1].qrels == {"2": 2, "5": 1}


def test_the_cli_writes_a_report_with_the_agreed_keys_and_a_plot(tiny_faq, tmp_path, capsys):
    out = tmp_path / "report.json"
    main(["--corpus", str(tiny_faq["corpus"]), "--queries", str(tiny_faq["queries"]),  # the command: no --lang
          "--qrels", str(tiny_faq["qrels"]), "--oos", str(tiny_faq["oos"]), "--json", str(out)])
    assert "its questions read as English (--lang en to say otherwise)" in capsys.readouterr().err
    report = json.loads(out.read_text())
    assert list(report["p@1_by_language"]) == ["en"]
    assert report["set"] == "custom" and report["queries"] == 3 and report["oos_queries"] == 2
    assert [row["method"] for row in report["rows"]] == ["bm25", "dense", "hybrid", "pipeline"]
    for row in report["rows"]:
        assert {"ndcg@10", "p@1", "recall@10", "mrr@10", "latency_ms_p50", "latency_ms_p95"} <= row.keys()
        assert all(0 <= row[k] <= 1 for k in ("ndcg@10", "p@1", "recall@10", "mrr@10"))
    gain = report["gain"]
    assert gain["against"] in {"bm25", "dense", "hybrid"}
    for metric in ("ndcg@10", "p@1"):
        assert gain[metric]["ci95"][0] <= gain[metric]["mean"] <= gain[metric]["ci95"][1]
        assert gain[metric]["better"] + gain[metric]["worse"] <= 3
    outcomes = ["answered_correct", "answered_wrong", "clarified_with_right_choice", "clarified_without", "fallback"]
    ways_back = ["answered_wrong_right_runner_up", "clarified_without_right_next"]
    assert set(report["policy"]) == {*outcomes, *ways_back, "oos_answered", "oos_clarified"}
    assert all(0 <= share <= 1 for share in report["policy"].values())
    assert sum(report["policy"][k] for k in outcomes) == pytest.approx(1.0)  # each question has one outcome
    assert report["policy"]["answered_wrong_right_runner_up"] <= report["policy"]["answered_wrong"]
    assert report["policy"]["clarified_without_right_next"] <= report["policy"]["clarified_without"]
    assert report["label_ceiling"] == {"p@1": 1.0, "split_texts": 0, "split_questions": 0}  # three distinct questions
    assert report["p@1_labelled_consistently"] == {row["method"]: row["p@1"] for row in report["rows"]}
    assert set(report["per_question"]) == {"ndcg@10", "p@1"} and len(report["per_question"]["p@1"]) == 3
    assert out.with_suffix(".png").stat().st_size > 0
    with open(tmp_path / "report-questions.csv", encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and "questions" not in report  # three in scope, two out of scope; not in the JSON
    for key in outcomes:  # the CSV's outcomes are the policy's shares, question by question
        assert sum(row["outcome"] == key for row in rows[:3]) / 3 == pytest.approx(report["policy"][key])
    assert sum(row["outcome"] == "oos_answered" for row in rows[3:]) / 2 == pytest.approx(report["policy"]["oos_answered"])
    for row in rows[:3]:
        assert row["right_entries"] and (row["first_right_rank"] == "" or int(row["first_right_rank"]) >= 1)
        assert (row["outcome"] == "answered_correct") <= (row["first_right_rank"] == "1")


def test_the_demo_set_also_asks_other_city_matters_and_general_requests_as_out_of_scope():
    from lab.datasets import DATA_DIR, OUTSIDE_SAMPLE, city_questions, extra_out_of_scope, load_demo

    outside = extra_out_of_scope(DATA_DIR)
    japanese = [q.text for q in outside if q.lang == "ja"]
    assert len(japanese) == OUTSIDE_SAMPLE and len(outside) == OUTSIDE_SAMPLE + 100
    assert not any(text.startswith("【") for text in japanese)  # residents type no category tags
    assert all(not q.qrels for q in outside) and outside == extra_out_of_scope(DATA_DIR)  # a fixed sample
    demo, alone = load_demo(), load_demo(data_dir=None)
    assert len(alone.oos) == 50 and demo.oos == alone.oos + outside
    assert extra_out_of_scope(DATA_DIR / "missing") == []
    asked, rest = city_questions(DATA_DIR)
    assert asked == japanese and not set(asked) & set(rest) and len(rest) > 1000


def test_a_run_is_compared_question_by_question_with_an_earlier_report_of_the_same_set(tmp_path):
    from lab.datasets import Benchmark, Query
    from lab.evaluate import against_baseline, read_baseline

    before = {"set": "localgov", "queries": 4, "policy": {"answered_correct": 0.25},
              "per_question": {"ndcg@10": [1.0, 0.0, 0.5, 0.0], "p@1": [1.0, 0.0, 0.0, 0.0]}}
    now = {**before, "per_question": {"ndcg@10": [1.0, 1.0, 0.5, 0.63], "p@1": [1.0, 1.0, 0.0, 0.0]}}
    gain = against_baseline(now, before)
    assert gain["ndcg@10"]["better"] == 2 and gain["ndcg@10"]["worse"] == 0
    assert gain["p@1"]["mean"] == pytest.approx(0.25) and gain["policy_before"] == before["policy"]
    benchmark = Benchmark("localgov", [Query(f"q{i}", "ja", {"1": 2}) for i in range(4)], [])
    path = tmp_path / "before.json"
    for report, message in ((before, None), ({**before, "set": "jhu"}, "jhu"),
                            ({k: v for k, v in before.items() if k != "per_question"}, "no per-question")):
        path.write_text(json.dumps(report))
        if message is None:
            assert read_baseline(path, benchmark) == before
        else:
            with pytest.raises(SystemExit, match=message):
                read_baseline(path, benchmark)
