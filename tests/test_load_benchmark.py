"""The load benchmark runs the Procfile's processes, counts every answer once, and writes its JSON and picture."""
import json

from benchmarks import load


def test_a_short_run_answers_every_message_once_and_writes_its_report(tmp_path):
    out = tmp_path / "load.json"
    load.main(["--rate", "10", "--seconds", "2", "--redelivered", "0.5", "--warm-up", "5", "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["messages"] == report["answered"] == 20 and report["lost"] == report["doubled"] == 0
    assert report["posted_with_redeliveries"] > 20 and report["webhook_statuses"] == {"200": report["posted_with_redeliveries"]}
    assert report["by_reply"] == 1.0 and report["webhook_to_answer_s"]["p99"] < 30
    assert report["memory_after"]["worker1"]["processes"] >= 2  # the supervisor and its job-taking processes
    assert "log:turns:line" in report["redis_keys_by_kind"] and out.with_suffix(".png").stat().st_size > 10_000
