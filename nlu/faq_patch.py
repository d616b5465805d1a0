"""Turn accepted alternates into a patch of the FAQ files, keeping their formatting.

YAML round-tripping would drop the authors' comments and layout, so the new
phrasings are inserted as lines after the entry's last alternate, and the
result is a unified diff an operator can review and ``git apply``.
"""
from __future__ import annotations

import difflib
import json
from pathlib import Path


def _entry_start(lines: list[str], faq_id: str) -> int:
    for i, line in enumerate(lines):
        if line.strip() in (f"- id: {faq_id}", f'- id: "{faq_id}"', f"- id: '{faq_id}'"):
            return i
    raise KeyError(faq_id)


def _insertion_point(lines: list[str], start: int, lang: str) -> tuple[int, str]:
    """The line after the last item of ``lang``'s alternates, and that list's indentation."""
    i = start + 1
    while i < len(lines) and not lines[i].lstrip().startswith("- id:"):
        if lines[i].strip() == f"{lang}:":
            j = i + 1
            while j < len(lines) and lines[j].strip() != "alternates:":
                j += 1
            k, indent = j + 1, None
            while k < len(lines) and lines[k].lstrip().startswith("- ") and not lines[k].lstrip().startswith("- id:"):
                indent = lines[k][: len(lines[k]) - len(lines[k].lstrip())]
                k += 1
            return k, indent or " " * 8
        i += 1
    raise KeyError(f"{lang}.alternates")


def add_alternates(text: str, faq_id: str, lang: str, phrasings: list[str]) -> str:
    """``text`` (a FAQ file) with ``phrasings`` appended to the entry's ``lang`` alternates."""
    lines = text.splitlines(keepends=True)
    at, indent = _insertion_point(lines, _entry_start(lines, faq_id), lang)
    new = [f"{indent}- {json.dumps(p, ensure_ascii=False)}\n" for p in phrasings]
    return "".join(lines[:at] + new + lines[at:])


def patch(faq_dir, additions: dict) -> str:
    """A unified diff adding {(faq id, lang): [texts]} to the files in ``faq_dir``."""
    diffs = []
    for path in sorted(Path(faq_dir).glob("*.yaml")):
        before = after = path.read_text(encoding="utf-8")
        for (faq_id, lang), texts in sorted(additions.items()):
            try:
                after = add_alternates(after, faq_id, lang, texts)
            except KeyError:
                continue  # the entry lives in another file
        if after != before:
            name = f"{Path(faq_dir).name}/{path.name}"
            diffs.extend(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                              f"a/{name}", f"b/{name}"))
    return "".join(diffs)
