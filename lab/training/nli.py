"""Sentence pairs with 3-way entailment labels, for the NLI head the issue asks to compare with the match head.

JSICK ``train`` rows in both languages (its ``trial`` / ``test`` rows are left
alone) and JNLI v1.3 valid + test (JNLI's train split is not in the shared
folder).  Rows come as (premise, hypothesis, label index in ``NLI_LABELS``).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from nlu.crossencoder import NLI_LABELS


def jsick(path: Path) -> list[tuple[str, str, int]]:
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["data"] != "train":
                continue
            for lang in ("Ja", "En"):
                label = row[f"entailment_label_{lang}"].strip()
                if label in NLI_LABELS:
                    out.append((row[f"sentence_A_{lang}"], row[f"sentence_B_{lang}"], NLI_LABELS.index(label)))
    return out


def jnli(path: Path) -> list[tuple[str, str, int]]:
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [(r["sentence1"], r["sentence2"], NLI_LABELS.index(r["label"])) for r in rows if r["label"] in NLI_LABELS]


def nli_pairs(data_dir) -> list[tuple[str, str, int]]:
    nli = Path(data_dir) / "nli"
    return jsick(nli / "jsick.tsv") + jnli(nli / "jnli-valid.json") + jnli(nli / "jnli-test.json")
