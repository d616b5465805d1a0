"""Natural-language understanding: which FAQ entry does a resident's question mean?

``build_nlu(settings)`` (``nlu.build``) is the entry point; ``bot/`` uses only ``Nlu.answer``, ``Nlu.faq``,
``Nlu.intents`` and the plain types in ``nlu.decision``.  The offline tools that measure and train it are in
``lab/``.
"""
from __future__ import annotations

from nlu.build import (build_embedder, build_nlu, build_reranker, load_e5, load_encoders, outside_questions,
                       policies_from)
from nlu.decision import ANSWER, CLARIFY, FALLBACK, Candidate, Decision, Policy
from nlu.engine import Nlu
from nlu.faq import LANGUAGES, Faq, FaqEntry, FaqError, load_faq
from nlu.intents import HANDOFF, Intent, load_intents
from nlu.text import detect_language

__all__ = [
    "ANSWER", "CLARIFY", "FALLBACK", "LANGUAGES", "Candidate", "Decision", "Policy", "Nlu",
    "Faq", "FaqEntry", "FaqError", "load_faq", "detect_language", "HANDOFF", "Intent", "load_intents",
    "build_nlu", "build_embedder", "build_reranker", "load_e5", "load_encoders", "outside_questions", "policies_from",
]
