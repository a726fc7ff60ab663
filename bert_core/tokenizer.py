"""The tokenizer of a checkpoint: what it is (``tokenizer_spec``) and the one place it is built (``build_tokenizer``).

The spec is read from the checkpoint itself (vocab.txt, casing rules of ``vocab.py``, the model's
maximum length), so a tokenizer stored beside task weights can be rebuilt without the checkpoint.
An explicit casing that contradicts the checkpoint is an error: it silently loses accuracy.
transformers is imported only when a tokenizer is built, so importing bert_core stays cheap.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CheckpointError
from .sources import resolve_source
from .vocab import infer_lower_case, missing_special_tokens, read_vocab_tokens, vocab_ids

if TYPE_CHECKING:
    from transformers import BertTokenizerFast

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "TokenizerSpec",
    "build_tokenizer",
    "load_tokenizer",
    "tokenizer_spec",
]

DEFAULT_MAX_LENGTH = 512


@dataclass(frozen=True)
class TokenizerSpec:
    """Everything needed to rebuild a checkpoint's tokenizer, and why its casing is what it is."""

    tokens: list[str]  # in id order, as in vocab.txt
    do_lower_case: bool
    model_max_length: int
    evidence: str  # what decided do_lower_case, for messages


def tokenizer_spec(source: str | os.PathLike, do_lower_case: bool | None = None) -> TokenizerSpec:
    """The tokenizer of any source ``from_pretrained`` takes, read from its ``vocab.txt`` and checked."""
    resolved = resolve_source(source)
    vocab_path = resolved.directory / "vocab.txt"
    if not vocab_path.is_file():
        raise CheckpointError(
            f"{resolved.directory}: no vocab.txt, so no tokenizer can be built for {source}"
        )
    tokens = read_vocab_tokens(vocab_path)
    vocab_ids(tokens, source=vocab_path)  # warns of duplicated tokens, naming their lines
    inferred, evidence = infer_lower_case(resolved.directory, tokens, resolved.name)
    if do_lower_case is not None and do_lower_case != inferred:
        raise CheckpointError(
            f"do_lower_case={do_lower_case} contradicts the checkpoint {source}: {evidence}. "
            "Mismatched casing silently loses accuracy (about 9 F1 points on SQuAD); leave do_lower_case unset."
        )
    missing = missing_special_tokens(tokens)
    if missing:
        raise CheckpointError(
            f"{vocab_path}: special token(s) {', '.join(missing)} missing from the vocabulary"
        )
    return TokenizerSpec(tokens, inferred, _max_length(resolved.config_path), evidence)


def _max_length(config_path: Path) -> int:
    if not config_path.is_file():
        return DEFAULT_MAX_LENGTH
    config = json.loads(config_path.read_text(encoding="utf-8"))
    return config.get("max_position_embeddings", DEFAULT_MAX_LENGTH)


def build_tokenizer(
    vocab: Mapping[str, int] | Sequence[str], do_lower_case: bool, model_max_length: int = DEFAULT_MAX_LENGTH
) -> BertTokenizerFast:
    """A fast WordPiece tokenizer over ``vocab`` (token -> id, or tokens in id order).

    The vocabulary goes in as a dict because transformers 5's BertTokenizerFast silently ignores
    ``vocab_file=``.
    """
    from transformers import BertTokenizerFast

    ids = _as_vocab(vocab)
    missing = missing_special_tokens(ids)
    if missing:
        raise CheckpointError(f"the vocabulary lacks the special token(s) {', '.join(missing)}")
    return BertTokenizerFast(vocab=ids, do_lower_case=do_lower_case, model_max_length=model_max_length)


def _as_vocab(vocab: Mapping[str, int] | Sequence[str]) -> dict[str, int]:
    if isinstance(vocab, str):
        raise TypeError("a vocabulary is a mapping token -> id or a sequence of tokens, not a string")
    return dict(vocab) if isinstance(vocab, Mapping) else vocab_ids(vocab, warn=False)


def load_tokenizer(source: str | os.PathLike, do_lower_case: bool | None = None) -> BertTokenizerFast:
    """A fast WordPiece tokenizer from the source's ``vocab.txt`` (any source ``from_pretrained`` takes)."""
    spec = tokenizer_spec(source, do_lower_case)
    return build_tokenizer(spec.tokens, spec.do_lower_case, spec.model_max_length)
