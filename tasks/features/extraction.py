"""Feature-extraction inputs: text lines -> model inputs that remember each token's word, and the
file layout the vectors are written in. Pure: no Lightning.

A line is split on whitespace into words (a pair ``a<TAB>b`` into two runs of words); every token
keeps the number of the word it came from (the words of ``b`` count on from those of ``a``), so
that per-word vectors can be put together again after the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.tables import Example
from ..feature_cache import INPUT_LENGTHS
from ..io import UserError
from .classification import whole_lengths

FORMATS = ("npy", "google_jsonl")
NO_WORD = -100  # [CLS], [SEP], padding: no word's vector takes them


def line_row(item: Example | None) -> dict[str, Any]:
    """A line as the featurizer reads it (a blank line has no words)."""
    words = (item.text if item else "").split()
    pair = item.text_pair.split() if item and item.text_pair is not None else None
    return {"words": words, "pair_words": pair}


@dataclass(frozen=True)
class LineFeaturizer:
    """Batched ``datasets`` function: rows of ``line_row`` -> input ids, token types, attention
    mask, each token's word number (``NO_WORD`` for special tokens) and the line's word count.
    Its fields are part of the feature cache key."""

    tokenizer: Any
    max_seq_length: int

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        firsts, seconds = batch["words"], batch["pair_words"]
        options = {"is_split_into_words": True, "truncation": True, "max_length": self.max_seq_length}
        pairs = [s or [] for s in seconds] if any(s is not None for s in seconds) else None
        encoding = self.tokenizer(firsts, pairs, **options)
        word_ids = []
        for i, first in enumerate(firsts):
            sides = encoding.sequence_ids(i)
            word_ids.append(
                [
                    NO_WORD if w is None else w + (len(first) if side == 1 else 0)
                    for w, side in zip(encoding.word_ids(i), sides)
                ]
            )
        return {
            "input_ids": encoding["input_ids"],
            "token_type_ids": encoding["token_type_ids"],
            "attention_mask": encoding["attention_mask"],
            "word_ids": word_ids,
            "num_words": [len(a) + len(b or []) for a, b in zip(firsts, seconds)],
            "example": batch["example"],
            INPUT_LENGTHS: whole_lengths(self.tokenizer, firsts, pairs, is_split_into_words=True),
        }


@dataclass(frozen=True)
class ExtractionLayout:
    """How the vectors are laid out in files: ``npy`` (pooled rows in ``.npy``, or per-word
    matrices in ``.safetensors`` with pooling ``none``) or Google's ``extract_features`` JSONL."""

    features_format: str = "npy"
    pooling: str = "mean"

    def __post_init__(self) -> None:
        if self.features_format not in FORMATS:
            raise UserError(
                f"--data.features_format must be one of {', '.join(FORMATS)}, not {self.features_format!r}"
            )

    @property
    def per_token_layers(self) -> bool:
        """Google's JSONL: every token, each layer apart."""
        return self.features_format == "google_jsonl"

    @property
    def per_word(self) -> bool:
        return not self.per_token_layers and self.pooling == "none"

    @property
    def suffix(self) -> str:
        return ".jsonl" if self.per_token_layers else ".safetensors" if self.per_word else ".npy"

    def default_name(self) -> str:
        return f"features{self.suffix}"

    def check_target(self, path: Path) -> None:
        """A file named for another layout (per-word safetensors bytes in ``out.npy``) would be
        unreadable by the tool its name promises: refused before any work."""
        wanted = self.suffix
        if path.suffix.lower() != wanted:
            why = {".jsonl": "--data.features_format google_jsonl", ".safetensors": "--model.pooling none"}
            raise UserError(
                f"--data.predictions_file {path}: {why.get(wanted, 'pooled vectors')} are written as "
                f"{wanted}; name the file {path.with_suffix(wanted).name}"
            )
