"""The NLU as the bot sees it: ``answer(text, lang) -> Decision``.

Holds the current FAQ and its index and swaps both at once when the FAQ files
change, so a broken edit never replaces the last good FAQ.  A worker may start
on a questions-only index (``staged``) and embed the answer heads afterwards
(``complete_index``): on a cold start of a large FAQ the answer heads are most
of the embedding time, and residents get "did you mean…" choices meanwhile.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

from nlu.decision import ANSWER, CLARIFY, Decision, Policy, one_per_answer
from nlu.faq import Faq, FaqError, load_faq, signature_of, with_alternates
from nlu.intents import load_intents
from nlu.retrieval import HybridRetriever
from nlu.text import detect_language

log = logging.getLogger(__name__)


def rank_and_decide(retriever, policies: dict, reranker, top_k: int, text: str, lang: str | None) -> Decision:
    """The pipeline over any index: retrieval, the optional re-ranker, entries that give the same answer folded
    into one, then the language's policy."""
    started = time.perf_counter()
    lang = lang or detect_language(text)
    index = retriever.indexes[lang]
    candidates = retriever.search(text, lang, top_k)
    if reranker is not None:
        candidates = reranker.rerank(text, candidates, index)
    candidates = one_per_answer(candidates, index.same_answer)
    outside = index.outside_score(text)
    kind = policies[lang].decide(candidates, outside)
    intent, intent_score = index.intent_match(text)
    best_entry = candidates[0].score if candidates else float("-inf")
    intent = intent if policies[lang].takes_intent(best_entry, intent_score) else ""
    latency_ms = (time.perf_counter() - started) * 1000
    return Decision(kind=kind, lang=lang, candidates=tuple(candidates), latency_ms=latency_ms, outside=outside,
                    intent=intent)


def warm_up(reranker, retriever) -> None:
    """Let a re-ranker that keeps per-phrasing work (late interaction) do it before residents ask."""
    warm = getattr(reranker, "warm", None)
    if warm is not None:
        started = time.perf_counter()
        count = warm(retriever)
        log.info("re-ranker warmed up: %d FAQ phrasings in %.1f s", count, time.perf_counter() - started)


class Nlu:
    """Retrieval, an optional re-ranker, then the decision policy."""

    def __init__(self, faq_dir, policies: dict[str, Policy], embedder, reranker=None, top_k: int = 10, overlay=None,
                 answer_chars: int = 0, staged: bool = False, outside=(), max_chars: int | None = None,
                 intents_dir=None):
        self.faq_dir = faq_dir
        self.max_chars = max_chars  # how much of a text ``answer`` reads (``truncate``; None: all)
        self.outside = tuple(outside)  # questions the FAQ does not answer (``LanguageIndex.outside_score``)
        self.outside_in_service = self.outside  # with those operators marked (the overlay's), as last loaded
        self.intents_dir = intents_dir  # ``nlu.intents``, matched beside the FAQ and reloaded with it (None: none)
        self.intents = ()
        self.answer_chars = answer_chars  # how much of each answer the index embeds with its question
        self.overlay = overlay  # () -> (version, {(faq id, lang): [accepted alternates]}, outside questions), or None
        self.policies = policies  # language -> Policy
        self.embedder = embedder
        self.reranker = reranker
        self.top_k = top_k
        self.last_error: str | None = None
        self.loaded_at = 0.0
        self._lock = threading.Lock()
        faq = self._load()  # the first load must succeed: nothing to fall back to
        chars = 0 if staged else answer_chars
        self._current = (faq, self._index(faq, chars), chars)
        self.loaded_at = time.time()

    @property
    def faq(self) -> Faq:
        return self._current[0]

    @property
    def retriever(self) -> HybridRetriever:
        return self._current[1]

    @property
    def index_complete(self) -> bool:
        """False while a staged start still serves the questions-only index."""
        return self._current[2] == self.answer_chars

    def complete_index(self) -> None:
        """Embed the answer heads a staged start left out, then swap the full index in (built outside the lock,
        so a reload is never kept waiting; dropped if a reload replaced the FAQ meanwhile); then warm the
        re-ranker up on it."""
        faq = self.faq
        if not self.index_complete:
            started = time.perf_counter()
            retriever = self._index(faq, self.answer_chars)
            with self._lock:
                if self.faq is faq:
                    self._current = (faq, retriever, self.answer_chars)
                    log.info("FAQ index completed with answer heads in %.1f s", time.perf_counter() - started)
        warm_up(self.reranker, self.retriever)

    def truncate(self, text: str) -> str:
        """The part of ``text`` the NLU reads: a question fits in far fewer than ``max_chars`` characters, and a
        40,000-character message would exceed the word splitter's input limit and hold the queue for seconds."""
        return text[: self.max_chars]

    def answer(self, text: str, lang: str | None = None) -> Decision:
        """Rank the FAQ for ``text`` and decide: answer, clarify or fall back.

        Until a staged start has its answer heads, the bot offers choices rather than answering outright: the
        thresholds are calibrated on the full index, and questions alone score higher (demo out-of-scope
        questions answered .04 -> .08, JHU wrong answers .061 -> .079).  Reads ``truncate(text)`` only."""
        decision = rank_and_decide(self.retriever, self.policies, self.reranker, self.top_k, self.truncate(text), lang)
        if decision.kind == ANSWER and not self.index_complete:
            return replace(decision, kind=CLARIFY)
        return decision

    def reload_if_changed(self) -> bool:
        """Reload when the files changed; keep the old FAQ (and say why) if the new one is broken."""
        with self._lock:
            if self._signature() == self.faq.signature:
                return False
            try:
                faq = self._load()
            except FaqError as error:
                if self.last_error != str(error):
                    log.error("FAQ not reloaded, still serving the previous version: %s", error)
                self.last_error = str(error)
                return False
            self._current = (faq, self._index(faq, self.answer_chars), self.answer_chars)
            self.last_error = None
            self.loaded_at = time.time()
            log.info("FAQ reloaded: %d entries", len(faq.entries))
            return True

    def _index(self, faq: Faq, answer_chars: int) -> HybridRetriever:
        return HybridRetriever.for_faq(faq, self.embedder, answer_chars, self.outside_in_service, self.intents)

    def _signature(self) -> tuple:
        """The FAQ's and the intents' files, plus the overlay's version: a change in any means reload."""
        version = self.overlay()[0] if self.overlay else 0
        intents = signature_of(self.intents_dir) if self.intents_dir else ()
        return (signature_of(self.faq_dir), intents, version)

    def _load(self) -> Faq:
        """The FAQ files with the overlay's alternates, and the intents (both whole, or FaqError); also takes the
        overlay's outside questions."""
        signature = self._signature()
        _, extra, marked = self.overlay() if self.overlay else (0, {}, ())
        faq = with_alternates(load_faq(self.faq_dir), extra, signature)
        self.intents = load_intents(self.intents_dir) if self.intents_dir else ()
        self.outside_in_service = self.outside + tuple(text for text in marked if text not in self.outside)
        return faq

    def status(self) -> dict:
        """What /healthz and operators need to know about the FAQ in service."""
        return {"faq_entries": len(self.faq.entries), "faq_loaded_at": self.loaded_at, "faq_error": self.last_error or "",
                "faq_index": "complete" if self.index_complete else "questions only (answer heads being embedded)",
                "outside_questions": len(self.outside_in_service)}
