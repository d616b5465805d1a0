"""Language detection and the word segmentation BM25 needs.

Residents write Japanese or English; the script tells which.  Japanese has no
spaces, so BM25 needs a morphological analyser (Sudachi) to find the words.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from bm25s.stopwords import STOPWORDS_EN

_JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f]")
_ENGLISH_WORD = re.compile(r"[a-z0-9]{2,}")
# Particles, auxiliaries, punctuation and blanks carry no topic.
_JA_SKIPPED_POS = {"助詞", "助動詞", "補助記号", "空白", "記号"}
_EN_STOPWORDS = frozenset(STOPWORDS_EN) | {"can", "do", "does", "i", "my", "me", "how", "what"}


def detect_language(text: str) -> str:
    """'ja' when the text has any kana or kanji, else 'en'."""
    return "ja" if _JAPANESE.search(text) else "en"


def normalize(text: str) -> str:
    """NFKC folds full-width letters and half-width kana; case is folded too."""
    return unicodedata.normalize("NFKC", text).lower()


def same_text_key(text: str) -> str:
    """``normalize`` with blanks collapsed: two texts with one key read the same to a resident."""
    return " ".join(normalize(text).split())


@lru_cache(maxsize=1)
def _sudachi():
    """Sudachi's small dictionary: its short units (mode A) are the core one's for our FAQs (LocalgovFAQ dev
    P@1 .595 either way, 2026-12-02), and it installs in 110 MB instead of 193."""
    from sudachipy import Dictionary

    return Dictionary(dict="small").tokenizer()


def _japanese_terms(text: str) -> list[str]:
    from sudachipy import SplitMode

    return [
        morpheme.normalized_form().lower()
        for morpheme in _sudachi().tokenize(text, SplitMode.A)
        if morpheme.part_of_speech()[0] not in _JA_SKIPPED_POS
    ]


def _english_terms(text: str) -> list[str]:
    return [_stem(word) for word in _ENGLISH_WORD.findall(text) if word not in _EN_STOPWORDS]


def _stem(word: str) -> str:
    """A light suffix stripper: 'registering'/'registered'/'registers' meet."""
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def terms(text: str, lang: str) -> list[str]:
    """BM25 terms of ``text``; Latin words inside Japanese text are kept too."""
    text = normalize(text)
    if lang == "ja":
        return _japanese_terms(text)
    return _english_terms(text)


SENTENCE_CHARS = 80  # a sentence is cut here: what a resident asks about is in its first words
_SENTENCE_END = re.compile(r"(?<=[。．？！?!])|(?<=[.?!])\s")
_NOT_PROSE = re.compile(r"[（(]?[０-９0-9]+[．.)）]|[【＜<［\[]")  # list items ("１．…") and headings ("【関連するＦＡＱ】")


def answer_sentences(answer: str, count: int) -> list[str]:
    """Up to ``count`` sentences of an answer that say what it is about: its first sentence, then the next ones
    that read like prose (not list items, headings or links; 8 characters or more), each cut to
    ``SENTENCE_CHARS``.  None if the first sentence is shorter than 8 characters.

    Residents ask about any part of an answer, not only what its question says: the Japanese index embeds these
    beside the question (``retrieval.SENTENCE_WEIGHTS``), and training uses them as questions to the entry."""
    first, *rest = _SENTENCE_END.split(" ".join(answer.split()).lstrip("■・ "))
    first = first[:SENTENCE_CHARS].strip()
    if len(first) < 8:
        return []
    rest = [part.strip().lstrip("■・ ")[:SENTENCE_CHARS].strip() for part in rest]
    rest = [part for part in rest if len(part) >= 8 and not _NOT_PROSE.match(part) and "ＵＲＬ" not in part
            and "http" not in part]
    return [first, *rest[: count - 1]]
