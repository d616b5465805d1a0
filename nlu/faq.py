"""The FAQ: loading ``faq_data/*.yaml`` and refusing broken files precisely.

An operator edits these files by hand, so every error names the file, the
entry and the field, and nothing half-valid is ever served (see
``faq_data/README.md`` for the schema).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

LANGUAGES = ("ja", "en")
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_ENTRY_KEYS = {"id", "category", "url", "ja", "en"}
_TEXT_KEYS = {"question", "alternates", "answer"}


class FaqError(ValueError):
    """A broken FAQ file; ``str()`` says where (file, entry, field) and what."""

    def __init__(self, file: str, entry: str, field: str, problem: str):
        self.file, self.entry, self.field, self.problem = file, entry, field, problem
        super().__init__(f"{file}: entry {entry}: field {field}: {problem}")


@dataclass(frozen=True)
class FaqText:
    """One language's version of an entry."""

    question: str
    alternates: tuple[str, ...]
    answer: str

    @property
    def phrasings(self) -> tuple[str, ...]:
        return (self.question, *self.alternates)


@dataclass(frozen=True)
class FaqEntry:
    id: str
    category: str
    url: str | None
    texts: dict  # language -> FaqText

    def text(self, lang: str) -> FaqText:
        return self.texts[lang]


@dataclass(frozen=True)
class Faq:
    """A validated FAQ and the file state it was read from (to notice edits)."""

    entries: tuple[FaqEntry, ...]
    signature: tuple

    def __post_init__(self):
        object.__setattr__(self, "_by_id", {entry.id: entry for entry in self.entries})

    def get(self, faq_id: str) -> FaqEntry | None:
        return self._by_id.get(faq_id)


def read_outside_questions(path) -> tuple[str, ...]:
    """``NLU_OUTSIDE_FILE``: one question a line that the FAQ does not answer (another department's FAQ, say),
    in either language; blank lines and lines starting with ``#`` are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise FaqError(str(path), "-", "-", f"cannot read the outside questions: {error}") from None
    return tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))


def with_alternates(faq: Faq, extra: dict, signature: tuple) -> Faq:
    """The FAQ plus alternates accepted by operators: {(faq id, lang): [texts]}; unknown ids are skipped."""
    entries = []
    for entry in faq.entries:
        texts = dict(entry.texts)
        for lang in LANGUAGES:
            added = [t for t in extra.get((entry.id, lang), []) if t not in texts[lang].phrasings]
            if added:
                text = texts[lang]
                texts[lang] = FaqText(text.question, text.alternates + tuple(added), text.answer)
        entries.append(FaqEntry(entry.id, entry.category, entry.url, texts))
    return Faq(entries=tuple(entries), signature=signature)


def signature_of(directory: Path) -> tuple:
    """Names, sizes and modification times: cheap to poll, changes on every save."""
    return tuple(
        (path.name, stat.st_size, stat.st_mtime_ns)
        for path in sorted(Path(directory).glob("*.yaml"))
        for stat in [path.stat()]
    )


def load_faq(directory) -> Faq:
    """Read and validate every ``*.yaml`` file in ``directory``; raise FaqError."""
    directory = Path(directory)
    signature = signature_of(directory)
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise FaqError(str(directory), "-", "-", "no *.yaml FAQ files found")
    entries, seen = [], {}
    for path in files:
        for entry in _read_file(path):
            if entry.id in seen:
                raise FaqError(path.name, entry.id, "id", f"duplicate id, already used in {seen[entry.id]}")
            seen[entry.id] = path.name
            entries.append(entry)
    return Faq(entries=tuple(entries), signature=signature)


def _read_file(path: Path) -> list[FaqEntry]:
    return [_parse_entry(path.name, index, raw) for index, raw in enumerate(listed_in(path, "entries"), 1)]


def listed_in(path: Path, key: str) -> list:
    """The list under ``key`` in a YAML file (the FAQ's entries, the intents), or FaqError naming the file."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise FaqError(path.name, "-", "-", f"not valid YAML: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get(key), list):
        raise FaqError(path.name, "-", key, f"the file must be a mapping with a list under '{key}'")
    return document[key]


def checked_id(file: str, index: int, raw, allowed: set, kind: str) -> str:
    """The id of the ``index``-th item of a file (an entry, an intent), once it is a mapping of ``allowed`` fields
    with a valid id."""
    if not isinstance(raw, dict):
        raise FaqError(file, f"#{index}", "-", f"each {kind} must be a mapping")
    name = str(raw.get("id") or f"#{index}")
    unknown = set(raw) - allowed
    if unknown:
        raise FaqError(file, name, sorted(unknown)[0], f"unknown field (allowed: {', '.join(sorted(allowed))})")
    if not isinstance(raw.get("id"), str) or not ID_PATTERN.match(raw["id"]):
        raise FaqError(file, name, "id", "required; lowercase letters, digits and hyphens")
    return raw["id"]


def _parse_entry(file: str, index: int, raw) -> FaqEntry:
    faq_id = name = checked_id(file, index, raw, _ENTRY_KEYS, "entry")
    category = required_text(file, name, "category", raw.get("category"))
    url = raw.get("url")
    if url is not None and not (isinstance(url, str) and url.startswith(("https://", "http://"))):
        raise FaqError(file, name, "url", "must be an http(s) URL or left out")
    texts = {lang: _parse_text(file, name, lang, raw.get(lang)) for lang in LANGUAGES}
    return FaqEntry(id=faq_id, category=category, url=url, texts=texts)


def _parse_text(file: str, name: str, lang: str, raw) -> FaqText:
    if not isinstance(raw, dict):
        raise FaqError(file, name, lang, "required: a mapping with question, alternates and answer")
    unknown = set(raw) - _TEXT_KEYS
    if unknown:
        raise FaqError(file, name, f"{lang}.{sorted(unknown)[0]}", "unknown field")
    question = required_text(file, name, f"{lang}.question", raw.get("question"))
    answer = required_text(file, name, f"{lang}.answer", raw.get("answer"))
    alternates = raw.get("alternates")
    if not isinstance(alternates, list) or len(alternates) < 2:
        raise FaqError(file, name, f"{lang}.alternates", "at least 2 alternate phrasings are required")
    cleaned = tuple(
        required_text(file, name, f"{lang}.alternates[{i}]", text) for i, text in enumerate(alternates)
    )
    return FaqText(question=question, alternates=cleaned, answer=answer)


def required_text(file: str, name: str, field: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise FaqError(file, name, field, "required: a non-empty text")
    return value.strip()

