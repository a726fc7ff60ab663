"""What a task checkpoint (.ckpt) carries besides weights, so that it alone can validate, test and predict.

The base module stores, under ``checkpoint["bert_tasks"]``: the encoder's config, the vocabulary and
the casing of its tokenizer. The label names and task are hyper-parameters of the module.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch
from transformers import BertTokenizerFast

from .io import UserError

PAYLOAD_KEY = "bert_tasks"


def is_task_checkpoint(source: str | os.PathLike | None) -> bool:
    return source is not None and str(source).endswith(".ckpt")


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> dict[str, Any]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"{path}: cannot read the checkpoint ({type(err).__name__}: {err})") from None
    if PAYLOAD_KEY not in checkpoint:
        raise UserError(f"{path}: not a bert-tasks checkpoint (no '{PAYLOAD_KEY}' entry)")
    return {"payload": checkpoint[PAYLOAD_KEY], "hyper_parameters": checkpoint.get("hyper_parameters", {}),
            "datamodule_hyper_parameters": checkpoint.get("datamodule_hyper_parameters", {})}


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The payload and hyper-parameters of a task checkpoint (without its weights)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    return _load(str(path.resolve()), path.stat().st_mtime)


def tokenizer_from_checkpoint(path: str | os.PathLike) -> BertTokenizerFast:
    payload = read_checkpoint(path)["payload"]
    vocab: dict[str, int] = {}
    for index, token in enumerate(payload["vocab"]):
        vocab.setdefault(token, index)  # as bert_core.tokenizer.read_vocab: the first id of a duplicate wins
    return BertTokenizerFast(vocab=vocab, do_lower_case=payload["do_lower_case"],
                             model_max_length=payload["bert_config"].get("max_position_embeddings", 512))
