"""The sets ``python -m lab.evaluate`` measures on: FAQ sets in the LocalgovFAQ format (corpus, queries, graded
qrels), CLINC150 as an FAQ, and the demo paraphrases, loaded into one shape (``lab.metrics`` scores them)."""
from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from config.settings import PROJECT_ROOT
from nlu.retrieval import answer_head
from nlu.text import detect_language

DEMO_QUERIES = PROJECT_ROOT / "benchmarks" / "demo_paraphrases.yaml"
DATA_DIR = PROJECT_ROOT.parent / "shared" / "datasets"
CLINC_FILE = Path("oos") / "clinc150-dev.json"
_QUESTION_ANSWER = re.compile(r"\s*Question:\s*(?P<question>.*?)\n\s*Answer:\s*(?P<answer>.*)", re.S)
_CATEGORY_TAG = re.compile(r"^(【[^】]*】\s*)+")  # LocalgovFAQ questions start with one: residents type none
OUTSIDE_SAMPLE = 300  # of the LocalgovFAQ corpus questions, asked of our FAQ as out-of-scope ones


@dataclass(frozen=True)
class Query:
    """One question; its qrels grade the entries that answer it."""

    text: str
    lang: str
    qrels: dict = field(default_factory=dict)  # entry id -> grade; empty for out-of-scope questions


@dataclass(frozen=True)
class Corpus:
    """What an index is built from: a BM25 document, the question phrasings and the answer head of each entry."""

    ids: list
    documents: list
    phrasings: list
    lang: str
    heads: list = field(default_factory=list)  # "" for an entry without one; empty: none at all
    answers: list = field(default_factory=list)  # one per entry; empty: the corpus has none


@dataclass
class Benchmark:
    """A set to run: in-scope questions, out-of-scope questions, and the corpus to index."""

    name: str
    queries: list
    oos: list
    corpus: Corpus | None = None  # None: the demo FAQ, indexed by build_nlu

    def limited(self, limit: int | None) -> "Benchmark":
        """The first ``limit`` in-scope and out-of-scope questions, for quick runs."""
        if not limit:
            return self
        return Benchmark(self.name, self.queries[:limit], self.oos[:limit], self.corpus)


def read_json(path: Path):
    """The datasets are UTF-8 JSON whatever the locale says."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def split_entry(value) -> tuple[str, str]:
    """Entries come as {question, answer} or as one "Question: …\\nAnswer: …" text."""
    if isinstance(value, dict):
        return str(value.get("question", "")).strip(), str(value.get("answer", "")).strip()
    match = _QUESTION_ANSWER.match(value)
    return (match["question"].strip(), match["answer"].strip()) if match else (value.strip(), "")


def corpus_from_entries(entries: dict, lang: str, answer_chars: int = 0) -> Corpus:
    """BM25 reads question + answer; the phrasing is the question and, as the bot builds it, the head is the
    question with the first ``answer_chars`` characters of its answer."""
    ids, documents, phrasings, heads, answers = [], [], [], [], []
    for entry_id, value in entries.items():
        question, answer = split_entry(value)
        ids.append(str(entry_id))
        documents.append(f"{question}\n{answer}".strip())
        phrasings.append([question or answer])
        heads.append(answer_head(question, answer, answer_chars) if question else "")
        answers.append(answer)
    return Corpus(ids, documents, phrasings, lang, heads, answers)


def corpus_language(entries: dict) -> str:
    """The language most of a corpus's questions are written in (``text.detect_language``), so an FAQ set runs
    without being told: an English FAQ that names a Japanese place stays English."""
    votes = [detect_language(split_entry(value)[0]) for value in entries.values()]
    return max(("ja", "en"), key=votes.count)


def load_faq_set(name: str, corpus: Path, queries: Path, qrels: Path, lang: str,
                 answer_chars: int = 0, oos_texts=()) -> Benchmark:
    """Any FAQ set in the LocalgovFAQ format; queries with no relevant entry cannot be scored and are dropped."""
    grades = read_json(qrels)
    scored = [
        Query(text, lang, {str(doc): int(grade) for doc, grade in grades.get(str(qid), {}).items()})
        for qid, text in read_json(queries).items()
    ]
    kept = [q for q in scored if any(grade >= 1 for grade in q.qrels.values())]
    oos = [Query(text, lang) for text in oos_texts]
    return Benchmark(name, kept, oos, corpus_from_entries(read_json(corpus), lang, answer_chars))


def clinc_oos_texts(data_dir: Path) -> list[str]:
    """CLINC150's out-of-scope validation questions (English, about anything but an FAQ)."""
    return [text for text, _ in read_json(data_dir / CLINC_FILE)["oos_val"]]


def load_clinc(path: Path, per_intent: int = 10, seed: int = 0) -> Benchmark:
    """CLINC150 as an FAQ: one entry per intent, phrased by a fixed sample of its train utterances."""
    data = read_json(path)
    by_intent = defaultdict(list)
    for text, intent in data["train"]:
        by_intent[intent].append(text)
    rng = random.Random(seed)
    ids = sorted(by_intent)
    phrasings = [rng.sample(by_intent[i], min(per_intent, len(by_intent[i]))) for i in ids]
    corpus = Corpus(ids, [" ".join(texts) for texts in phrasings], phrasings, "en")
    queries = [Query(text, "en", {intent: 1}) for text, intent in data["val"]]
    return Benchmark("clinc-oos", queries, [Query(text, "en") for text, _ in data["oos_val"]], corpus)


def city_questions(data_dir: Path) -> tuple[list[str], list[str]]:
    """Another city's FAQ questions (the LocalgovFAQ corpus's entries, never its queries; category tags
    removed), as (the fixed sample of ``OUTSIDE_SAMPLE`` the demo set asks as out-of-scope, the rest); the rest
    is what ``lab.evaluate --outside`` was measured with.  Empty where the corpus is missing."""
    corpus = Path(data_dir) / "faq" / "localgov" / "corpus.json"
    if not corpus.exists():
        return [], []
    questions = sorted({_CATEGORY_TAG.sub("", split_entry(v)[0]).strip() for v in read_json(corpus).values()})
    asked = random.Random(0).sample(questions, OUTSIDE_SAMPLE)
    return asked, sorted(set(questions) - set(asked))


def extra_out_of_scope(data_dir: Path) -> list[Query]:
    """What a city's residents ask its account besides our FAQ's topic (QR-code contact tracing), as
    out-of-scope questions: ``city_questions``' sample (Japanese) and CLINC150's ``oos_train`` (English; JHU's
    out-of-scope set is ``oos_val``).  Empty where the shared datasets are missing.

    The paraphrase YAML's 25 a language were too few and too far from city matters: with them the bot answered
    4 % of out-of-scope Japanese questions, but 9 % of 300 LocalgovFAQ questions ("I lost my health insurance
    card", "where do I ask about nursing care") got an answer from the tracing FAQ (2026-11-26)."""
    clinc = Path(data_dir) / CLINC_FILE
    out = [Query(text, "ja") for text in city_questions(data_dir)[0]]
    if clinc.exists():
        out += [Query(text, "en") for text, _ in read_json(clinc)["oos_train"]]
    return out


def load_demo(path: Path = DEMO_QUERIES, data_dir: Path | None = DATA_DIR) -> Benchmark:
    """Our own paraphrase set (or a labelled export in its format, ``bot.labelled``) against ``faq_data``: one
    right entry per question, plus the out-of-scope questions it lists and, unless ``data_dir`` is None,
    ``extra_out_of_scope``."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    queries = [Query(q["text"], q["lang"], {q["faq"]: 1}) for q in data["queries"]]
    oos = [Query(text, lang) for lang, texts in data.get("out_of_scope", {}).items() for text in texts]
    return Benchmark("demo", queries, oos + (extra_out_of_scope(data_dir) if data_dir else []))


def load_set(name: str, data_dir: Path, answer_chars: int = 0) -> Benchmark:
    """The named public sets, read in place from the shared datasets folder."""
    faq = Path(data_dir) / "faq"
    if name == "localgov":
        folder = faq / "localgov"
        return load_faq_set(name, folder / "corpus.json", folder / "queries-dev.json",
                            folder / "qrels-dev.json", "ja", answer_chars)
    if name == "jhu":
        folder = faq / "jhu-covid"
        return load_faq_set(name, folder / "corpus.json", folder / "queries.json", folder / "qrels.json",
                            "en", answer_chars, clinc_oos_texts(Path(data_dir)))
    if name == "clinc-oos":
        return load_clinc(Path(data_dir) / CLINC_FILE)
    if name == "demo":
        return load_demo(data_dir=data_dir)
    raise ValueError(f"unknown set {name!r}")
