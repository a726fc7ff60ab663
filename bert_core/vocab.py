"""Google's ``vocab.txt`` and the casing rules of a checkpoint, in pure Python (no torch, no transformers).

Lower-casing a cased model's input (or not lower-casing an uncased one's) silently costs several
points of accuracy, so the casing comes from, in order: ``tokenizer_config.json``, Google's
``uncased_L-...``/``cased_L-...`` directory names, and the vocabulary itself (an uncased vocabulary
has no upper-case letters).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import CheckpointError

__all__ = [
    "SPECIAL_TOKENS",
    "infer_lower_case",
    "missing_special_tokens",
    "read_vocab",
    "read_vocab_tokens",
    "vocab_ids",
    "write_tokenizer_files",
    "write_vocab_files",
]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def read_vocab_tokens(path: str | os.PathLike) -> list[str]:
    """The tokens of a vocab.txt in line order (the id is the line number); a final newline ends the last line."""
    tokens = [line.rstrip("\r") for line in Path(path).read_text(encoding="utf-8").split("\n")]
    if tokens and tokens[-1] == "":
        tokens.pop()
    if not tokens:
        raise CheckpointError(f"{path}: empty vocabulary")
    return tokens


def vocab_ids(
    tokens: Sequence[str], source: str | os.PathLike | None = None, warn: bool = True
) -> dict[str, int]:
    """Token -> id (its position). A duplicated token keeps its *last* id, as Google's ``load_vocab``
    and transformers' ``BertTokenizer`` do (the same files must give the same ids), with a warning
    naming the token and its lines (1-based) in ``source``."""
    vocab: dict[str, int] = {}
    duplicates: dict[str, list[int]] = {}
    for index, token in enumerate(tokens):
        if token in vocab:
            duplicates.setdefault(token, [vocab[token] + 1]).append(index + 1)
        vocab[token] = index
    if duplicates and warn:
        shown = "; ".join(
            f"{token!r} on lines {', '.join(map(str, lines))}"
            for token, lines in list(duplicates.items())[:5]
        )
        more = f" (and {len(duplicates) - 5} more)" if len(duplicates) > 5 else ""
        warnings.warn(
            f"{source or 'vocabulary'}: {len(duplicates)} token(s) listed more than once, the last line's id "
            f"is used (as Google's and transformers' loaders do): {shown}{more}",
            stacklevel=2,
        )
    return vocab


def read_vocab(path: str | os.PathLike) -> dict[str, int]:
    """Google's vocab.txt as token -> id."""
    return vocab_ids(read_vocab_tokens(path), source=path)


def missing_special_tokens(vocab: Iterable[str]) -> list[str]:
    """The BERT special tokens a vocabulary lacks, in SPECIAL_TOKENS order."""
    present = set(vocab)
    return [token for token in SPECIAL_TOKENS if token not in present]


def infer_lower_case(directory: str | os.PathLike, vocab: Iterable[str], name: str = "") -> tuple[bool, str]:
    """Returns (do_lower_case, the evidence for it) for the checkpoint in ``directory``."""
    directory = Path(directory)
    from_config = _casing_from_tokenizer_config(directory / "tokenizer_config.json")
    if from_config is not None:
        return from_config
    for label in (directory.name.lower(), Path(name).name.lower()):
        if label.startswith("uncased_") or "-uncased" in label or "_uncased" in label:
            return True, f"the checkpoint is named '{label}'"
        if label.startswith("cased_") or "-cased" in label or "_cased" in label:
            return False, f"the checkpoint is named '{label}'"
    if any(token[:1].isupper() for token in vocab if not token.startswith("[") and token[:1].isalpha()):
        return False, "its vocab.txt has upper-case tokens (a cased vocabulary)"
    return True, "its vocab.txt has no upper-case tokens (an uncased vocabulary)"


def _casing_from_tokenizer_config(path: Path) -> tuple[bool, str] | None:
    if not path.is_file():
        return None
    config = json.loads(path.read_text(encoding="utf-8"))
    if "do_lower_case" not in config:
        return None
    return bool(config["do_lower_case"]), f"{path} says do_lower_case={config['do_lower_case']}"


def write_tokenizer_files(
    source_directory: str | os.PathLike, directory: str | os.PathLike, name: str = ""
) -> None:
    """Copy vocab.txt and write a tokenizer_config.json that records the casing, so it is not guessed again."""
    source_directory, directory = Path(source_directory), Path(directory)
    vocab_path = source_directory / "vocab.txt"
    if not vocab_path.is_file():
        return
    do_lower_case, _ = infer_lower_case(source_directory, read_vocab(vocab_path), name)
    (directory / "vocab.txt").write_bytes(vocab_path.read_bytes())
    _write_tokenizer_config(directory, do_lower_case)


def write_vocab_files(
    tokens: Sequence[str],
    do_lower_case: bool,
    directory: str | os.PathLike,
    model_max_length: int | None = None,
) -> None:
    """vocab.txt (one token a line, in id order) and a tokenizer_config.json recording the casing."""
    directory = Path(directory)
    (directory / "vocab.txt").write_text("".join(f"{token}\n" for token in tokens), encoding="utf-8")
    _write_tokenizer_config(directory, do_lower_case, model_max_length)


def _write_tokenizer_config(
    directory: Path, do_lower_case: bool, model_max_length: int | None = None
) -> None:
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": do_lower_case}
    if model_max_length is not None:
        config["model_max_length"] = model_max_length
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
