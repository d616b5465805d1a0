"""Every benchmark ends the same way: its numbers as JSON, for the closing notes and docs/benchmarks.md."""
from __future__ import annotations

import json
from pathlib import Path


def write_json(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"wrote {path}")
