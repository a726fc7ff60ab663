"""What a task checkpoint (.ckpt) carries besides weights, so that it alone can validate, test and predict.

The base module stores, under ``checkpoint["bert_tasks"]``: the encoder's config, the vocabulary and
the casing of its tokenizer. The label names and task are hyper-parameters of the module.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import IO, Any

import torch

from bert_core.checkpoint import load_torch_file
from bert_core.tokenizer import build_tokenizer, load_tokenizer

from .io import UserError, atomic_open

PAYLOAD_KEY = "bert_tasks"
DATA_SETTINGS_KEY = "bert_tasks_data_settings"  # the data module's state_dict (TaskDataModule.state_dict)


# An ONNX export directory (``python -m tasks export --format onnx``) holds model.onnx and, in
# this file, what a checkpoint carries besides weights: read_checkpoint reads it like a .ckpt.
EXPORT_METADATA = "bert_tasks.json"


def is_task_checkpoint(source: str | os.PathLike | None) -> bool:
    """A ``.ckpt`` file of this app (not Google's ``.../bert_model.ckpt``, the prefix of a TF
    checkpoint), or an ONNX export directory of one."""
    if is_onnx_export(source):
        return True
    if source is None or not str(source).endswith(".ckpt"):
        return False
    return not Path(f"{source}.index").is_file()


def is_onnx_export(source: str | os.PathLike | None) -> bool:
    """A directory written by ``python -m tasks export --format onnx``."""
    return source is not None and (Path(source) / EXPORT_METADATA).is_file()


def encoder_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The encoder weights of a task checkpoint (``encoder.*`` of its state dict, prefix removed)."""
    state = read_weights(path)["state_dict"]
    # Still backed by the file's mapping: load_state_dict copies them, and the pages go with the dict.
    return {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}


def read_weights(path: str | os.PathLike) -> dict[str, Any]:
    """The whole checkpoint (weights, and for a ``last.ckpt`` the optimizer and loop states),
    memory-mapped: the one reader of checkpoint files, for every command and for resuming a fit.
    Always ``weights_only=True``, whatever TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says (an explicit
    argument wins over it): a file never runs code. A file that cannot be read is a UserError."""
    try:
        checkpoint = load_mapped(path)
    except Exception as err:
        raise _unreadable(path, err) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise UserError(f"{path}: not a checkpoint written by fit (no state_dict)")
    return checkpoint


def mapped_weights(path: str | os.PathLike) -> dict[str, Any]:
    """``read_weights``, taking the checkpoint ``read_checkpoint`` has just unpickled when it is this
    file's (unchanged since): for a reader that only reads the result (``Source``)."""
    resolved = Path(path).resolve()
    try:
        checkpoint = _last_read.pop((str(resolved), resolved.stat().st_mtime), None)
    except OSError:
        checkpoint = None
    if checkpoint is None or not isinstance(checkpoint.get("state_dict"), dict):
        return read_weights(path)
    return checkpoint


def _unreadable(path: str | os.PathLike, err: Exception) -> UserError:
    if isinstance(err, IsADirectoryError) or Path(path).is_dir():
        return UserError(f"{path}: a directory, not a checkpoint file")
    if not Path(path).exists():
        return UserError(f"{path}: checkpoint not found")
    lines = str(err).strip().splitlines()
    first_line = lines[0] if lines else ""
    if "weights_only" in str(err) or "Unsupported global" in str(err):
        first_line = "it holds Python objects other than tensors and plain values, which are never unpickled"
    return UserError(
        f"{path}: cannot read the checkpoint ({type(err).__name__}: {first_line[:200]}); "
        "is it a complete .ckpt written by fit?"
    )


def load_mapped(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint memory-mapped: only the tensors that are used get read (a fit's last.ckpt is
    three times its weights, with the optimizer's moments); always ``weights_only``."""
    return load_torch_file(path, mmap=True)


def save_checkpoint_file(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` atomically (``tasks.io.atomic_open``), streamed into the file: serialising in
    memory first held a whole checkpoint (273 MB for all-MiniLM-L6-v2 with its optimizer state, twice
    over while the buffer grew) on top of the fit's peak. torch's zip writer turns a failed write (a
    full disk) into an opaque RuntimeError: the OSError is kept and raised instead, and becomes a
    one-line error naming ``path``."""
    with atomic_open(path, "wb", encoding=None) as handle:
        writer = _KeepWriteError(handle)
        try:
            torch.save(checkpoint, writer)
        except RuntimeError:
            if writer.error is None:
                raise
            raise writer.error from None


class _KeepWriteError:
    """A binary file's write and flush, remembering the OSError a write raised."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle, self.error = handle, None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.handle.flush()


# What the payload must hold for a checkpoint alone to rebuild its model and tokenizer.
PAYLOAD_FIELDS = {"bert_config": dict, "vocab": list, "do_lower_case": bool}


def pack_vocab(tokens: list[str]) -> str | list[str]:
    """The vocabulary as a checkpoint stores it: one newline-joined string, which the weights_only
    unpickler (pure Python) reads at once where a list of 30,522 strings took 0.25 s of every
    start-up. A token holding a newline (never one of vocab.txt's lines) keeps the list, whose ids
    a split would shift. Checkpoints store either; ``check_payload`` hands on the list."""
    return tokens if any("\n" in token for token in tokens) else "\n".join(tokens)


def check_payload(path: str | os.PathLike, payload: Any) -> dict[str, Any]:
    """The payload, checked, with its vocabulary as a list (however it is stored)."""
    if not isinstance(payload, dict):
        raise UserError(f"{path}: its '{PAYLOAD_KEY}' entry is not a mapping")
    if isinstance(payload.get("vocab"), str):
        payload = {**payload, "vocab": payload["vocab"].split("\n")}
    for field, kind in PAYLOAD_FIELDS.items():
        if not isinstance(payload.get(field), kind):
            problem = "lacks" if field not in payload else f"has a {type(payload[field]).__name__} as"
            raise UserError(
                f"{path}: the checkpoint {problem} '{PAYLOAD_KEY}.{field}' ({kind.__name__} expected)"
            )
    return payload


# The mapped checkpoint ``_load`` read last, by (path, mtime), for one ``mapped_weights`` to take:
# a command that reads what a checkpoint stores and then its weights unpickles the file once (the
# weights_only unpickler is pure Python: about 0.3 s for a fit's last.ckpt).
_last_read: dict[tuple[str, float], dict[str, Any]] = {}


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> dict[str, Any]:
    try:
        checkpoint = load_mapped(path)  # the weights are not read: only the payload is kept
    except Exception as err:
        raise _unreadable(path, err) from None
    _last_read.clear()  # one kept at most: it holds the file's mapping
    _last_read[(path, mtime)] = checkpoint
    if not isinstance(checkpoint, dict) or PAYLOAD_KEY not in checkpoint:
        raise UserError(f"{path}: not a bert-tasks checkpoint (no '{PAYLOAD_KEY}' entry)")
    payload = check_payload(path, checkpoint[PAYLOAD_KEY])
    hyper_parameters = checkpoint.get("hyper_parameters", {})
    if not isinstance(hyper_parameters, dict):
        raise UserError(f"{path}: its hyper_parameters are not a mapping")
    data_settings = next(
        (v[DATA_SETTINGS_KEY] for v in checkpoint.values() if isinstance(v, dict) and DATA_SETTINGS_KEY in v),
        {},
    )
    return {
        "payload": payload,
        "hyper_parameters": hyper_parameters,
        "data_settings": data_settings,
    }


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The payload and hyper-parameters of a task checkpoint (without its weights), or of an ONNX export."""
    path = Path(path)
    if is_onnx_export(path):
        return _load_export(str((path / EXPORT_METADATA).resolve()), (path / EXPORT_METADATA).stat().st_mtime)
    if path.is_dir():
        raise UserError(
            f"{path}: a directory, not a checkpoint (an ONNX export directory holds {EXPORT_METADATA})"
        )
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    return _load(str(path.resolve()), path.stat().st_mtime)


@functools.lru_cache(maxsize=4)
def _load_export(path: str, mtime: float) -> dict[str, Any]:
    try:
        stored = json.loads(Path(path).read_text(encoding="utf-8"))
        found = {key: stored[key] for key in ("payload", "hyper_parameters", "data_settings")}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not a readable export description ({type(err).__name__}: {err})") from None
    found["payload"] = check_payload(path, found["payload"])
    return found


def load_task_tokenizer(source: str | os.PathLike, do_lower_case: bool | None = None):
    """The tokenizer of a model source: a task checkpoint carries its vocabulary and casing; any
    other source is read by ``bert_core``."""
    if not is_task_checkpoint(source):
        return load_tokenizer(source, do_lower_case=do_lower_case)
    payload = read_checkpoint(source)["payload"]
    max_length = payload["bert_config"].get("max_position_embeddings", 512)
    return build_tokenizer(payload["vocab"], payload["do_lower_case"], model_max_length=max_length)
