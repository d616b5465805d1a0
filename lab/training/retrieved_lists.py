"""The cross-encoder's training lists: per query, the 8 groups the bot's own retrieval ranks first, kept only
when the query's own group is among them.

Mined lists (``lab.training.lists``) pick the negatives nearest the query and the gold at random, so there
retrieval ranks the gold first in only a third of the lists, against 88 % in the retrieved ones and 68 % on
JHU's real questions: a re-ranker trained on mined lists learns that the nearest candidate is usually wrong.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from lab.pipeline import ProgressEmbedder
from lab.training.lists import (ANSWER_SENTENCES, LANG, RETRIEVED_SOURCES, SIZE, PoolScorer, RankList,
                                capped_split, clinc_rows, corpus_entries, labelled_rows,
                                phrasing_rows, with_qa_lists)
from nlu.faq import LANGUAGES, load_faq
from nlu.text import answer_sentences as sentences_of
from nlu.retrieval import IDENTITY, language_embedder


def retrieved_lists(queries: list[str], query_groups: list, pool: list[str], pool_groups: list, embedder,
                    source: str, lang: str, score_map: tuple = IDENTITY) -> list[RankList]:
    """Lists as the re-ranker meets them at run time: per query, the ``SIZE`` groups whose best text in ``pool``
    retrieval ranks first (``embedder``'s cosines fused with BM25, mapped by ``score_map`` as the bot's scores
    are), each as that best text, the query's own group first.  A query whose group retrieval leaves out gets no
    list, as the re-ranker can do nothing for it; the query's own text in ``pool`` is not a candidate."""
    query_vectors = np.asarray(embedder.query(queries))
    # CLINC and FAQ phrasings are their own pool: embedded once
    pool_vectors = query_vectors if pool == queries else np.asarray(embedder.query(pool))
    score, (scale, shift) = PoolScorer(pool, lang), score_map
    names = {name: n for n, name in enumerate(sorted(set(pool_groups)))}
    groups = np.asarray([names[g] for g in pool_groups])
    members = [np.flatnonzero(groups == n) for n in range(len(names))]
    rows_of: dict = {}
    for row, text in enumerate(pool):
        rows_of.setdefault(text, []).append(row)
    out = []
    for query, group, vector in zip(queries, query_groups, query_vectors):
        sims = pool_vectors @ vector
        sims[rows_of.get(query, [])] = -np.inf
        best = np.array([m[np.argmax(sims[m])] for m in members])
        top = best[np.argsort(-sims[best], kind="stable")[:SIZE]]
        own = int(best[names[group]]) if group in names else -1
        if own not in top or not np.isfinite(sims[own]):
            continue
        candidates = [own] + [int(j) for j in top if j != own]
        fused = score(query, candidates, sims[candidates])
        out.append(RankList(query, tuple(pool[j] for j in candidates),
                            tuple(round(scale * s + shift, 4) for s in fused), source, str(group)))
    return out


def with_dense_scores(lists: list[RankList], embedder) -> list[RankList]:
    """JaQuAD lists (``qa_lists``, which hold only BM25's half of the fused score) with the dense half added as
    the bot scores Japanese: its encoder's cosines, then its score map.  The cross-encoder learns a correction to
    the whole score, so it must see the whole score."""
    model, (scale, shift) = language_embedder(embedder, "ja")
    texts = list(dict.fromkeys(t for lst in lists for t in (lst.query, *lst.candidates)))
    vectors = dict(zip(texts, ProgressEmbedder(model, "JaQuAD lists: embedding").query(texts)))
    return [RankList(lst.query, lst.candidates,
                     tuple(round(float(scale * (vectors[c] @ vectors[lst.query] + bm25) + shift), 4)
                           for c, bm25 in zip(lst.candidates, lst.retrieval)), lst.source, lst.group)
            for lst in lists]


def runtime_lists(data_dir, faq_dir, embedder, seed: int = 13, sources=RETRIEVED_SOURCES,
                  answer_sentences: int = ANSWER_SENTENCES, labelled: Path | None = None,
                  caps: dict | None = None) -> tuple[list[RankList], list[RankList]]:
    """(train, held-out) ``retrieved_lists`` of ``sources``, retrieved by ``embedder`` as the bot retrieves (a
    ``PerLanguage`` gives each language its tuned encoder and score map): CLINC utterances against the others
    of the sample, our FAQ's phrasings against the others, corpus answer sentences against the entries'
    questions.  Trained on the mined lists (``build_lists``), the English cross-encoder cost JHU P@1 .660 ->
    .337 at weight .5; on these, .681 -> .653 (30 min, 2026-11-26).  ``labelled``: residents' questions
    labelled with entries of ``faq_dir`` (``labelled_rows``), each against the FAQ's phrasings as a list of
    source "labelled", for the FAQ languages in ``sources``.  ``qa-ja``: JaQuAD's lists (``qa_lists``) with
    ``with_dense_scores``; not retrieved from a pool, as 31k questions against ~100k sentences would take hours.
    ``caps``: lists per source, as ``build_lists`` takes them."""
    from lab.training.qa_lists import qa_lists

    if unknown := set(sources) - set(RETRIEVED_SOURCES):
        raise ValueError(f"no retrieved lists for {sorted(unknown)}: JSTS pairs have no entries to retrieve from")
    data, rng = Path(data_dir), random.Random(seed)
    pools = []  # (source, language, queries, their groups, texts to retrieve, their groups)
    if "clinc" in sources:
        rows = clinc_rows(data / "oos/clinc150-dev.json", rng)
        pools.append(("clinc", "en", *zip(*rows), *zip(*rows)))
    faq = load_faq(faq_dir) if {"faq-ja", "faq-en"} & set(sources) else None
    for lang in LANGUAGES:
        if f"faq-{lang}" in sources and (rows := phrasing_rows(faq, lang)):
            pools.append((f"faq-{lang}", lang, *zip(*rows), *zip(*rows)))
            if labelled and (asked := labelled_rows(labelled, faq, lang)):
                pools.append(("labelled", lang, *zip(*asked), *zip(*rows)))
    for source, folder in (("localgov", "localgov"), ("jhu", "jhu-covid")):
        if source in sources:
            entries = [(key, q, a) for key, q, a in corpus_entries(data / "faq" / folder / "corpus.json") if q and a]
            asked = [(query, key) for key, _, a in entries for query in sentences_of(a, answer_sentences)]
            pools.append((source, LANG[source], *zip(*asked), [q for _, q, _ in entries], [key for key, _, _ in entries]))
    lists = []
    for source, lang, queries, groups, pool, pool_groups in pools:
        model, score_map = language_embedder(embedder, lang)
        lists += retrieved_lists(list(queries), list(groups), list(pool), list(pool_groups), model, source, lang,
                                 score_map)
    train, dev = capped_split(lists, rng, {lst.source for lst in lists}, caps)  # only the sources asked for were built
    if "qa-ja" in sources:
        train, dev = with_qa_lists(train, dev, qa_lists(data), rng, caps, lambda kept: with_dense_scores(kept, embedder))
    return train, dev
