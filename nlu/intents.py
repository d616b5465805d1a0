"""Conversational intents beside the FAQ: asking for a person, greetings, thanks, goodbyes.

Kept as YAML a city edits (``faq_data/intents/*.yaml``, schema in ``faq_data/README.md``) and refused as
precisely as the FAQ: every error names the file, the intent and the field.  The NLU matches a message against
their phrasings with the same embeddings as the FAQ (``LanguageIndex.intent_match``); the dialogue replies.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from nlu.faq import LANGUAGES, FaqError, checked_id, listed_in, required_text

HANDOFF, REPLY = "handoff", "reply"  # a person takes the conversation over at once; the bot only replies
#: What a reply may name: the contact settings the fallback texts use.
PLACEHOLDERS = {"phone", "url"}
_KEYS = {"id", "action", *LANGUAGES}
_TEXT_KEYS = {"phrasings", "reply"}


@dataclass(frozen=True)
class Intent:
    id: str
    action: str  # HANDOFF or REPLY
    phrasings: dict  # language -> tuple of texts
    replies: dict  # language -> text, with {phone} and {url} filled in when sent


def phrasings_in(intents, lang: str) -> list[tuple[str, str]]:
    """(intent id, phrasing) of every intent in ``lang``: what a language's index embeds."""
    return [(intent.id, text) for intent in intents for text in intent.phrasings[lang]]


def load_intents(directory) -> tuple[Intent, ...]:
    """Every ``*.yaml`` file in ``directory`` (none when it does not exist); raise FaqError."""
    directory = Path(directory)
    if not directory.is_dir():
        return ()
    intents, seen = [], {}
    for path in sorted(directory.glob("*.yaml")):
        for intent in _read_file(path):
            if intent.id in seen:
                raise FaqError(path.name, intent.id, "id", f"duplicate id, already used in {seen[intent.id]}")
            seen[intent.id] = path.name
            intents.append(intent)
    return tuple(intents)


def _read_file(path: Path) -> list[Intent]:
    return [_parse(path.name, index, raw) for index, raw in enumerate(listed_in(path, "intents"), 1)]


def _parse(file: str, index: int, raw) -> Intent:
    name = checked_id(file, index, raw, _KEYS, "intent")
    if raw.get("action") not in (HANDOFF, REPLY):
        raise FaqError(file, name, "action", f"required: {HANDOFF} (a person takes over) or {REPLY}")
    phrasings, replies = {}, {}
    for lang in LANGUAGES:
        text = raw.get(lang)
        if not isinstance(text, dict) or set(text) - _TEXT_KEYS:
            raise FaqError(file, name, lang, "required: a mapping with phrasings and reply")
        listed = text.get("phrasings")
        if not isinstance(listed, list) or len(listed) < 3:
            raise FaqError(file, name, f"{lang}.phrasings", "at least 3 phrasings are required")
        phrasings[lang] = tuple(required_text(file, name, f"{lang}.phrasings[{i}]", p) for i, p in enumerate(listed))
        replies[lang] = _reply(file, name, f"{lang}.reply", text.get("reply"))
    return Intent(name, raw["action"], phrasings, replies)


def _reply(file: str, name: str, field: str, value) -> str:
    reply = required_text(file, name, field, value)
    try:
        named = {part[1] for part in string.Formatter().parse(reply) if part[1] is not None}
    except ValueError as error:
        raise FaqError(file, name, field, f"a brace without its pair ({error}); write {{{{ for a brace") from None
    if named - PLACEHOLDERS:
        raise FaqError(file, name, field, f"unknown placeholder {{{sorted(named - PLACEHOLDERS)[0]}}} "
                                          f"(allowed: {', '.join('{' + p + '}' for p in sorted(PLACEHOLDERS))})")
    return reply
