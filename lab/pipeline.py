"""The pipeline as the harness builds it: the bot's own ``Nlu`` over the demo FAQ, or the same retrieval, re-ranker
and policy over any corpus in the LocalgovFAQ format, with a progress bar while it embeds."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from config.settings import Settings
from lab.datasets import Benchmark
from nlu import Nlu, build_embedder, load_intents, outside_questions, policies_from
from nlu.engine import rank_and_decide, warm_up
from nlu.intents import phrasings_in
from nlu.retrieval import HybridRetriever, LanguageIndex, language_embedder, sentences_of


class ProgressEmbedder:
    """Embeds a corpus in batches so its (minutes-long) index build shows progress on stderr; batches large
    enough that the encoder still sorts most of the corpus by length (batches of 32: LocalgovFAQ 60 s, not 40)."""

    def __init__(self, embedder, label: str, batch: int = 256):
        self.embedder, self.label, self.batch = embedder, label, batch
        self.embedded = 0  # texts embedded for the index (not served from the cache)

    def query(self, texts):
        if isinstance(texts, str):
            return self.embedder.query(texts)
        vectors = []
        with tqdm(total=len(texts), desc=self.label, unit="text", file=sys.stderr) as bar:
            for start in range(0, len(texts), self.batch):
                vectors.append(np.atleast_2d(self.embedder.query(texts[start:start + self.batch])))
                bar.update(len(vectors[-1]))
                self.embedded += len(vectors[-1])
        return np.concatenate(vectors)


@dataclass
class CorpusPipeline:
    """The bot's own pipeline (``rank_and_decide``) over an external corpus's index."""

    retriever: HybridRetriever
    policies: dict
    reranker: object = None
    top_k: int = 10

    def answer(self, text: str, lang: str | None = None):
        return rank_and_decide(self.retriever, self.policies, self.reranker, self.top_k, text, lang)


def build_pipeline(benchmark: Benchmark, settings: Settings, encoders: tuple, reranker) -> tuple[Nlu, dict]:
    """The pipeline, and how its index was built: entries, seconds until the questions-only index a staged
    worker answers from (with the cache on), seconds until the full index, texts embedded (the rest came from
    the embedding cache); ``encoders``: ``nlu.load_encoders``."""
    started, staged = time.perf_counter(), settings.nlu_cache_dir != "off"
    counters = []

    def counting(model):
        counters.append(ProgressEmbedder(model, f"{benchmark.name}: embedding the FAQ"))
        return counters[-1]
    cached = build_embedder(settings, *encoders, wrap=counting)
    if benchmark.corpus is None:
        nlu = Nlu(settings.faq_dir, policies_from(settings), cached, reranker=reranker, top_k=settings.nlu_top_k,
                  answer_chars=settings.nlu_answer_chars, staged=staged, outside=outside_questions(settings),
                  intents_dir=settings.intents_dir)
        first_s = time.perf_counter() - started
        nlu.complete_index()
        entries = len(nlu.faq.entries)
    else:
        corpus = benchmark.corpus
        encoder = language_embedder(cached, corpus.lang)
        if staged:  # the questions-only index a staged worker starts on
            LanguageIndex(corpus.ids, corpus.documents, corpus.phrasings, corpus.lang, *encoder)
        first_s = time.perf_counter() - started
        index = LanguageIndex(corpus.ids, corpus.documents, corpus.phrasings, corpus.lang, *encoder, heads=corpus.heads,
                              answers=corpus.answers, outside=outside_questions(settings),
                              intents=phrasings_in(load_intents(settings.intents_dir), corpus.lang),
                              sentences=sentences_of(corpus.answers, corpus.lang, settings.nlu_answer_chars))
        nlu = CorpusPipeline(HybridRetriever({corpus.lang: index}), policies_from(settings), reranker, settings.nlu_top_k)
        warm_up(reranker, nlu.retriever)  # as the worker's complete_index does
        entries = len(corpus.ids)
    build = {"faq_entries": entries, "index_first_s": first_s if staged else None,
             "index_build_s": time.perf_counter() - started, "index_texts_embedded": sum(c.embedded for c in counters)}
    return nlu, build
