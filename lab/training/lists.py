"""Retrieval-shaped training lists: one query, its gold phrasing, and the 7 nearest wrong ones.

A pairwise (BCE) prototype on NLI + nearest-neighbour pairs learned "similar
wording = no match" and ranked worse than retrieval.  Here every example is a
list shaped like what the re-ranker sees at run time (the gold plus the
candidates dense retrieval would put next to it) and the loss is softmax
cross-entropy over the list, so the model learns to *order* close candidates.

* CLINC150 ``train`` (en): query = an utterance; gold = another utterance of
  its intent; negatives = the utterance nearest the query in each of the 7
  nearest other intents (by intent centroid).
* Our FAQ (``faq_data``, ja + en): query = one phrasing of an entry; gold =
  another phrasing of it; negatives = the nearest phrasing of each of the 7
  nearest other entries.
* JGLUE JSTS ``train`` (ja), similarity >= 4: query = sentence1, gold =
  sentence2; negatives = sentence2 of the 7 pairs whose sentence1 is nearest,
  other images only (captions of one image may be paraphrases).
* LocalgovFAQ (ja) / JHU-COVID-QA (en) corpora, entries only (never their
  queries): query = one of the first sentences of an answer (``nlu.text.answer_sentences``);
  gold = its question; negatives = questions of the nearest entries after
  skipping the 3 nearest (near-duplicates).
* JaQuAD ``train`` (ja, ``qa_lists``): query = a question; gold = the sentence of its paragraph that holds the
  answer; negatives = sentences of other paragraphs, of its article first, nearest by BM25.
* ``adapt_lists``: the same two kinds from one deployment's FAQ alone, plus, when it has them, residents'
  questions labelled by their own choices (``labelled_lists``, exported from the operator console).

The cross-encoder trains on lists of what retrieval ranks first instead (``lab.training.retrieved_lists``).

Lists of 10% of CLINC intents, FAQ entries and corpus entries are held out
(never trained on) to choose the weight of the CE's correction.  Each list
keeps the retrieval score of every candidate as the bot computes it (e5 cosine
fused with BM25 over the list's own text pool), because the CE learns a
correction *to that score*: trained on cosine alone it learned to redo what
BM25 already adds.
"""
from __future__ import annotations

import argparse
import json
import random
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab.datasets import load_demo
from nlu.faq import LANGUAGES, load_faq
from nlu.retrieval import Fusion
from nlu.text import answer_sentences, terms

SIZE = 8  # gold + 7 negatives
CAP = {"clinc": 2400, "jsts": 1000, "faq-ja": 700, "faq-en": 700, "localgov": 1500, "jhu": 68, "qa-ja": 3000}
LANG = {"clinc": "en", "faq-ja": "ja", "faq-en": "en", "jsts": "ja", "localgov": "ja", "jhu": "en", "qa-ja": "ja"}
RETRIEVED_SOURCES = ("clinc", "faq-en", "faq-ja", "jhu", "localgov", "qa-ja")  # the cross-encoder's: all but JSTS
ANSWER_SENTENCES = 3  # pseudo-queries per answer (see ``answer_lists``)
QA_HELD_OUT = 300  # of JaQuAD's ~2,800 held-out lists, scored before and after training (each costs 9 passes)


@dataclass(frozen=True)
class RankList:
    query: str
    candidates: tuple[str, ...]  # gold first
    retrieval: tuple[float, ...]  # the retrieval score (cosine fused with BM25) of each candidate
    source: str
    group: str  # intent / entry / image: what makes two texts the same answer


def _json_lines(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class PoolScorer:
    """Retrieval scores of a query against candidates from one text pool, as ``nlu.retrieval`` fuses them."""

    def __init__(self, pool: list[str], lang: str, fusion: Fusion = Fusion()):
        import bm25s

        self.lang, self.fusion = lang, fusion
        self.bm25 = bm25s.BM25()
        self.bm25.index([terms(t, lang) or ["-"] for t in pool], show_progress=False)

    def __call__(self, query: str, candidates: list[int], cosines) -> tuple[float, ...]:
        words = terms(query, self.lang)
        bm25 = self.bm25.get_scores(words)[candidates] if words else np.zeros(len(candidates))
        fused = self.fusion(np.asarray(cosines, dtype=np.float32), np.asarray(bm25, dtype=np.float32))
        return tuple(round(float(s), 4) for s in fused)


def nearest_other(vectors: np.ndarray, groups: list, k: int, skip: int = 0) -> list[list[int]]:
    """Per row, the k most similar rows of a different group (after skipping the first ``skip``)."""
    sims = vectors @ vectors.T
    sims[np.asarray(groups)[:, None] == np.asarray(groups)[None, :]] = -np.inf
    return np.argsort(-sims, axis=1)[:, skip : skip + k].tolist()


def corpus_entries(path: Path, answer_chars: int | None = None) -> list[tuple[str, str, str]]:
    """(id, question, answer start) from either corpus format: "Question: ..\\nAnswer: .." or {question, answer}."""
    out = []
    for key, value in json.loads(path.read_text(encoding="utf-8")).items():
        if isinstance(value, str):
            q, _, a = value.partition("\nAnswer:")
            value = {"question": q.removeprefix("Question:"), "answer": a}
        out.append((key, value["question"].strip(), " ".join(value["answer"].split())[:answer_chars]))
    return out


def grouped_lists(texts: list[str], groups: list, embedder, source: str, rng: random.Random,
                  golds: int = 1) -> list[RankList]:
    """Each text as query against ``golds`` other texts of its group (one list each), with the nearest
    text of each of the 7 nearest other groups as negatives."""
    vectors = np.asarray(embedder.query(texts))
    score = PoolScorer(texts, LANG[source])
    groups_arr = np.asarray(groups)
    names = sorted(set(groups))
    members = {g: np.flatnonzero(groups_arr == g) for g in names}
    centroids = np.stack([vectors[members[g]].mean(0) for g in names])
    out = []
    for i, g in enumerate(groups):
        same = [j for j in members[g] if j != i and texts[j] != texts[i]]
        if not same:
            continue
        near = [names[c] for c in np.argsort(-(centroids @ vectors[i])) if names[c] != g][: SIZE - 1]
        negatives = [int(members[h][np.argmax(vectors[members[h]] @ vectors[i])]) for h in near]
        for gold in rng.sample(same, min(golds, len(same))):
            cand = [int(gold)] + negatives
            out.append(RankList(texts[i], tuple(texts[j] for j in cand), score(texts[i], cand, vectors[cand] @ vectors[i]),
                                source, str(g)))
    return out


def clinc_rows(path: Path, rng: random.Random, per_intent: int = 20) -> list[tuple[str, str]]:
    """(utterance, intent): a sample of CLINC ``train`` per intent (val / oos are evaluation only)."""
    by_intent: dict = {}
    for text, intent in json.loads(path.read_text(encoding="utf-8"))["train"]:
        by_intent.setdefault(intent, []).append(text)
    return [(t, i) for i, ts in sorted(by_intent.items()) for t in rng.sample(ts, min(per_intent, len(ts)))]


def clinc(path: Path, embedder, rng: random.Random) -> list[RankList]:
    """Each sampled utterance against another of its intent (``grouped_lists``)."""
    rows = clinc_rows(path, rng)
    return grouped_lists([t for t, _ in rows], [i for _, i in rows], embedder, "clinc", rng)


def phrasing_rows(faq, lang: str) -> list[tuple[str, str]]:
    """(phrasing, entry id) of every ``lang`` phrasing of every entry."""
    return [(p, e.id) for e in faq.entries for p in e.text(lang).phrasings]


def phrasing_lists(faq, lang: str, embedder, rng: random.Random) -> list[RankList]:
    """Every ``lang`` phrasing of every entry as a query against each other phrasing of it."""
    rows = phrasing_rows(faq, lang)
    return grouped_lists([p for p, _ in rows], [g for _, g in rows], embedder, f"faq-{lang}", rng, golds=9)


def faq_lists(faq_dir, embedder, rng: random.Random) -> list[RankList]:
    """``phrasing_lists`` of our FAQ, per language."""
    faq = load_faq(faq_dir)
    return [lst for lang in LANGUAGES for lst in phrasing_lists(faq, lang, embedder, rng)]


def jsts(path: Path, embedder, rng: random.Random, pool: int = 5000) -> list[RankList]:
    """sentence1 -> its sentence2 (similarity >= 4) among sentence2 of pairs with the nearest sentence1.

    Candidates come from a pool of ``pool`` pairs (every >= 4 pair plus a sample); captions of the same
    image are never negatives.  Dense scores are sentence1 cosines, BM25 is over sentence2 (JSTS lists are
    never held out).
    """
    rows = _json_lines(path)
    good = [r for r in rows if r["label"] >= 4]
    rows = good + rng.sample([r for r in rows if r["label"] < 4], pool - len(good))
    images = [r["yjcaptions_id"].split("_")[0] for r in rows]
    vectors = np.asarray(embedder.query([r["sentence1"] for r in rows]))
    score = PoolScorer([r["sentence2"] for r in rows], "ja")
    out = []
    for i in range(len(good)):
        sims = vectors @ vectors[i]
        cand = [i] + [int(j) for j in np.argsort(-sims) if images[j] != images[i]][: SIZE - 1]
        out.append(RankList(rows[i]["sentence1"], tuple(rows[j]["sentence2"] for j in cand),
                            score(rows[i]["sentence1"], cand, sims[cand]), "jsts", images[i]))
    return out


def answer_lists(entries: list[tuple[str, str]], embedder, source: str, lang: str,
                 sentences: int = ANSWER_SENTENCES) -> list[RankList]:
    """Each of an answer's first ``sentences`` sentences (``nlu.text.answer_sentences``) -> its question, among
    questions of similar (not near-duplicate) entries; ``entries``: (question, answer) pairs of one FAQ.

    Residents ask about any part of an answer, not only what its first sentence says: with three sentences
    instead of one, adapting to the LocalgovFAQ corpus (``--adapt``, 160 steps, ``--keep .5``) gave hybrid
    nDCG@10 / P@1 .666 / .603 instead of .644 / .576 (stock .635 / .579), 2026-11-26."""
    entries = [(q, answer_sentences(a, sentences)) for q, a in entries if q and a]
    entries = [(q, queries) for q, queries in entries if queries]
    if len(entries) < SIZE + 3:  # the gold, 7 negatives and the 3 nearest skipped as near-duplicates
        return []
    questions = [q for q, _ in entries]
    vectors = np.asarray(embedder.query(questions))
    near = nearest_other(vectors, list(range(len(entries))), SIZE - 1, skip=3)
    pairs = [(i, query) for i, (_, queries) in enumerate(entries) for query in queries]
    query_vectors = np.asarray(embedder.query([query for _, query in pairs]))
    score = PoolScorer(questions, lang)
    out = []
    for (i, query), vector in zip(pairs, query_vectors):
        candidates = [i] + near[i]
        out.append(RankList(query, tuple(questions[j] for j in candidates),
                            score(query, candidates, vectors[candidates] @ vector), source, str(i)))
    return out


def corpus_lists(path: Path, embedder, source: str, sentences: int = ANSWER_SENTENCES) -> list[RankList]:
    """``answer_lists`` of a corpus file's entries (never its queries)."""
    return answer_lists([(q, a) for _, q, a in corpus_entries(path)], embedder, source, LANG[source], sentences)


def labelled_rows(path: Path, faq, lang: str) -> list[tuple[str, str]]:
    """(question, entry id) of each ``lang`` question in a paraphrase YAML (``benchmarks/demo_paraphrases.yaml``'s
    format, as the operator console exports residents' questions, ``bot.labelled``) whose entry ``faq`` has."""
    return [(q.text, faq_id) for q in load_demo(path, data_dir=None).queries for faq_id in q.qrels
            if q.lang == lang and faq.get(faq_id)]


def labelled_lists(path: Path, faq, lang: str, embedder) -> list[RankList]:
    """Each labelled question of ``lang`` -> its entry's question, among the questions of the 7 entries nearest
    to it; ``path``: a paraphrase YAML (``benchmarks/demo_paraphrases.yaml``'s format, as the operator console
    exports residents' questions, ``bot.labelled``).

    These are the pairs the FAQ's own texts cannot give: a resident's wording against the FAQ's.  Questions
    labelled with an entry the FAQ no longer has are skipped."""
    rows = labelled_rows(path, faq, lang)
    if not rows or len(faq.entries) < SIZE:
        return []
    ids = [e.id for e in faq.entries]
    questions = [e.text(lang).question for e in faq.entries]
    vectors, asked = np.asarray(embedder.query(questions)), np.asarray(embedder.query([t for t, _ in rows]))
    score = PoolScorer(questions, lang)
    out = []
    for (text, faq_id), vector in zip(rows, asked):
        gold = ids.index(faq_id)
        candidates = [gold] + [int(j) for j in np.argsort(-(vectors @ vector)) if j != gold][: SIZE - 1]
        out.append(RankList(text, tuple(questions[j] for j in candidates),
                            score(text, candidates, vectors[candidates] @ vector), "labelled", faq_id))
    return out


def adapt_lists(path, lang: str, embedder, seed: int = 13, sentences: int = ANSWER_SENTENCES,
                labelled: Path | None = None) -> tuple[list[RankList], list[RankList]]:
    """(train, held-out) lists from one FAQ alone, to adapt an encoder to it.

    ``path``: a FAQ folder (YAML, as ``faq_data/``: each phrasing against the entry's others, and the first
    sentences of each answer against its question) or a corpus JSON in the LocalgovFAQ format (answers only).  Needs no
    shared datasets, so a deployment can run it on its own FAQ after editing it.  ``labelled``: residents'
    questions labelled with entries of a FAQ folder (``labelled_lists``).
    """
    path, rng = Path(path), random.Random(seed)
    if path.is_dir():
        faq = load_faq(path)
        lists = phrasing_lists(faq, lang, embedder, rng)
        entries = [(e.text(lang).question, e.text(lang).answer) for e in faq.entries]
        lists += labelled_lists(labelled, faq, lang, embedder) if labelled else []
    else:
        lists, entries = [], [(q, a) for _, q, a in corpus_entries(path)]
    lists += answer_lists(entries, embedder, "answers", lang, sentences)
    train = [lst for lst in lists if not held_out(lst)]
    rng.shuffle(train)
    return train, [lst for lst in lists if held_out(lst)]


def held_out(lst: RankList) -> bool:
    """10% of CLINC intents, FAQ entries and corpus entries, stable across runs."""
    return lst.source != "jsts" and zlib.crc32(lst.group.encode()) % 10 == 0


def source_names(text: str) -> list[str]:
    """The ``--sources`` argument of the training commands: comma-separated source names."""
    names = sorted(set(text.split(",")))
    if unknown := set(names) - set(LANG):
        raise argparse.ArgumentTypeError(f"unknown sources {sorted(unknown)}; known: {', '.join(LANG)}")
    return names


def source_caps(text: str) -> dict:
    """The ``--cap`` argument of the training commands: ``qa-ja=27000,localgov=800`` as {source: lists}."""
    caps = {}
    for item in filter(None, text.split(",")):
        name, _, count = item.partition("=")
        if name not in LANG or not count.isdigit():
            raise argparse.ArgumentTypeError(f"{item!r}: expected SOURCE=N with SOURCE one of {', '.join(LANG)}")
        caps[name] = int(count)
    return caps


def build_lists(data_dir, faq_dir, embedder, seed: int = 13, sources=tuple(LANG),
                answer_sentences: int = ANSWER_SENTENCES, caps: dict | None = None) -> tuple[list[RankList], list[RankList]]:
    """(train, held-out) lists of ``sources``, capped per source (``CAP``, or ``caps`` where it names one),
    shuffled with ``seed``.  The QA lists (``qa_lists``) are built only when asked for: the rest are always
    built, so a choice of sources does not change their order."""
    from lab.training.qa_lists import qa_lists

    data, rng = Path(data_dir), random.Random(seed)
    lists = (clinc(data / "oos/clinc150-dev.json", embedder, rng) + faq_lists(faq_dir, embedder, rng)
             + jsts(data / "nli/jsts-train.json", embedder, rng)
             + corpus_lists(data / "faq/localgov/corpus.json", embedder, "localgov", answer_sentences)
             + corpus_lists(data / "faq/jhu-covid/corpus.json", embedder, "jhu", answer_sentences))
    train, dev = capped_split(lists, rng, sources, caps)
    if "qa-ja" in sources:
        train, dev = with_qa_lists(train, dev, qa_lists(data), rng, caps)
    return train, dev


def with_qa_lists(train: list, dev: list, qa: list, rng: random.Random, caps: dict | None,
                  scored=lambda lists: lists) -> tuple[list, list]:
    """``train`` and ``dev`` with the capped JaQuAD lists ``qa`` and ``QA_HELD_OUT`` of its held-out ones (each costs
    9 passes to score); split apart from the other sources, so their lists and order stay what they were without
    it.  ``scored``: what is done to the lists kept (the cross-encoder's get their dense scores)."""
    qa_train, qa_dev = capped_split(qa, rng, ["qa-ja"], caps)
    train = train + scored(qa_train)
    rng.shuffle(train)
    return train, dev + scored(rng.sample(qa_dev, min(QA_HELD_OUT, len(qa_dev))))


def capped_split(lists: list[RankList], rng: random.Random, sources,
                 caps: dict | None = None) -> tuple[list[RankList], list[RankList]]:
    """(train, held-out) of ``sources``: held-out groups apart, each source's training lists capped (``CAP``,
    or ``caps`` where it names the source) and shuffled."""
    dev = [lst for lst in lists if held_out(lst)]
    by_source: dict = {}
    for lst in lists:
        if not held_out(lst):
            by_source.setdefault(lst.source, []).append(lst)
    cap = {**CAP, **(caps or {})}
    train = [x for src, xs in sorted(by_source.items()) for x in rng.sample(xs, min(cap.get(src, len(xs)), len(xs)))]
    rng.shuffle(train)  # before choosing sources, so a choice does not change the order of the rest
    return [x for x in train if x.source in sources], [x for x in dev if x.source in sources]
