"""Training lists from Japanese reading-comprehension data (``shared/datasets/qa-ja``, JaQuAD train).

Residents ask questions whose words are often in the answer, not in the FAQ's question ("婚姻届" asked of
"戸籍の届出はいつできますか").  JaQuAD has 31,748 questions written by people on Wikipedia paragraphs, each
with the span that answers it: the pairs our FAQ data lacks.  Each list is

* query: the question;
* gold: the sentence that holds the answer, after its article's title ("手塚治虫 兵庫県宝塚市出身…"), as the
  index puts an FAQ question before its answer head;
* negatives: sentences of *other* paragraphs that do not contain the answer text: up to 3 from the same
  article (on the topic, not the answer), the nearest by BM25, then the sentences BM25 ranks nearest the
  question across all articles.

No encoder runs to build them (31k questions would take most of an hour on two cores), so each list's
``retrieval`` holds only the BM25 half of the fused score (the dense half as 0); the bi-encoder does not read
it.  10 % of paragraphs are held out, as ``lists.held_out`` holds out groups.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from lab.training.lists import SIZE, RankList, _json_lines
from nlu.retrieval import Fusion
from nlu.text import terms

QA_DIR = Path("qa-ja")
SENTENCE_CHARS = 120  # a sentence is cut here, as the index reads 100 characters of an answer
_SENTENCE_END = re.compile(r"(?<=[。？！])|\n")
_NEAREST = 40  # BM25 hits read per question to find 7 negatives
_SAME_ARTICLE = 3  # of them at most this many from the question's own article, the nearest by BM25


def sentences(text: str) -> list[str]:
    """A paragraph's sentences of 8 characters or more."""
    return [s.strip() for s in _SENTENCE_END.split(text) if len(s.strip()) >= 8]


def qa_lists(data_dir: Path, split: str = "jaquad-train") -> list[RankList]:
    """One list per question whose answer text is found in a sentence of its paragraph (see module docstring)."""
    import bm25s

    folder = Path(data_dir) / QA_DIR
    contexts = json.loads((folder / f"{split}-contexts.json").read_text(encoding="utf-8"))
    texts, paragraph_of, rows_of, article_rows = [], [], {}, {}
    for context_id, context in contexts.items():
        for sentence in sentences(context["text"]):
            rows_of.setdefault(context_id, []).append(len(texts))
            article_rows.setdefault(context["title"], []).append(len(texts))
            texts.append(f"{context['title']} {sentence[:SENTENCE_CHARS]}")
            paragraph_of.append(context_id)
    bm25 = bm25s.BM25()
    bm25.index([terms(t, "ja") or ["-"] for t in texts], show_progress=False)
    paragraph_of = np.array(paragraph_of)
    fusion, out = Fusion(), []
    for row in _json_lines(folder / f"{split}-questions.jsonl"):
        context_id, answer = row["context"], row["answer"].strip()
        gold = next((i for i in rows_of.get(context_id, []) if answer and answer in texts[i]), None)
        words = terms(row["question"], "ja")
        if gold is None or not words:
            continue
        scores = bm25.get_scores(words)
        nearest = np.argpartition(-scores, min(_NEAREST, len(texts) - 1))[:_NEAREST]
        same_article = sorted(article_rows[contexts[context_id]["title"]], key=lambda i: -scores[i])
        hits = [int(i) for i in nearest[np.argsort(-scores[nearest])]]
        negatives = list(dict.fromkeys(i for i in [*same_article[:_SAME_ARTICLE * 3], *hits]
                                       if paragraph_of[i] != context_id and answer not in texts[i]))
        in_article = set(same_article)
        negatives = [*[i for i in negatives if i in in_article][:_SAME_ARTICLE],
                     *[i for i in negatives if i not in in_article]][: SIZE - 1]
        if len(negatives) < SIZE - 1:
            continue
        candidates = [gold, *negatives]
        bm25_part = fusion(np.zeros(SIZE, dtype=np.float32), scores[candidates].astype(np.float32))
        out.append(RankList(row["question"], tuple(texts[i] for i in candidates),
                            tuple(round(float(s), 4) for s in bm25_part), "qa-ja", context_id))
    return out
