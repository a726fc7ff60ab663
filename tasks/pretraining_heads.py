"""BERT's pre-training heads (MLM, NSP) in and out of files, outside the Lightning module.

In: the heads a source already has (a Google pre-training checkpoint) are checked against the
encoder and loaded; those it lacks start new. Out: ``<run dir>/pretrained/``, the adapted
encoder with its heads as an HF directory (BertForPreTraining weights, config.json, vocab.txt
and the casing), published atomically; what ``--model.pretrained`` and transformers both load.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from bert_core import BertForPreTraining
from bert_core.checkpoint import save_state
from bert_core.config import BertConfig
from bert_core.vocab import write_vocab_files

from .io import UserError, fsync_directory, fsync_tree

HEAD_GROUPS = (("predictions.", "MLM"), ("seq_relationship.", "NSP"))


def load_heads(heads: torch.nn.Module, state: dict[str, Any], source: str) -> list[str]:
    """Load into ``heads`` (``PreTrainingHeads``) the ``cls.*`` tensors of a source's ``state``;
    returns the names of the heads the source does not have (they keep their fresh weights). A
    head whose tensors do not fit the encoder is an error."""
    found_all = {k.removeprefix("cls."): v for k, v in state.items() if k.startswith("cls.")}
    # the MLM decoder is the word embeddings, tied: never loaded on its own
    found_all = {k: v for k, v in found_all.items() if not k.startswith("predictions.decoder.")}
    expected = heads.state_dict()
    new = []
    for group, name in HEAD_GROUPS:
        wanted = {k for k in expected if k.startswith(group)}
        found = {k: v for k, v in found_all.items() if k.startswith(group)}
        if not found:
            new.append(name)
            continue
        if set(found) != wanted or any(found[k].shape != expected[k].shape for k in found):
            raise UserError(f"{source}: its {name} head does not match the encoder (tensors {sorted(found)})")
        heads.load_state_dict(found, strict=False)
    return new


def write_pretrained(
    directory: str | os.PathLike,
    config: BertConfig,
    state: dict[str, Any],
    tokenizer_payload: dict[str, Any],
    heads: bool = True,
) -> Path:
    """``directory`` from a pre-training module's ``state`` (``encoder.*`` and ``cls.*``) and its
    tokenizer (``vocab``, ``do_lower_case``). Written beside, then renamed into place: a crash
    leaves the previous directory or the new one, never half of one. Without ``heads``, the
    encoder alone as an HF ``BertModel`` (ELECTRA's discriminator: its heads are not BERT's)."""
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # BertForPreTraining's names, written from ``state`` itself: building that model to load the
    # state into held a third copy of the weights (and their initialisation) above the fit's peak.
    prefix = "bert." if heads else ""
    hf_state = {f"{prefix}{k}": v for k, v in _under(state, "encoder.").items()}
    if heads:
        hf_state.update({f"cls.{k}": v for k, v in _under(state, "cls.").items()})
    # float32, as that model held them (no copy when they are already)
    hf_state = {k: v.float() if v.is_floating_point() else v for k, v in hf_state.items()}
    save_state(tmp, config, hf_state, BertForPreTraining.__name__ if heads else "BertModel")
    vocab, lower = tokenizer_payload["vocab"], tokenizer_payload["do_lower_case"]
    write_vocab_files(vocab, lower, tmp, model_max_length=config.max_position_embeddings)
    fsync_tree(tmp)  # on the disk before the rename publishes it
    previous = directory.with_name(f".{directory.name}.previous")
    shutil.rmtree(previous, ignore_errors=True)
    if directory.exists():
        directory.rename(previous)  # kept until the new directory is in place
    os.replace(tmp, directory)
    fsync_directory(directory.parent)
    shutil.rmtree(previous, ignore_errors=True)
    return directory


def _under(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The entries of ``state`` under ``prefix``, without it."""
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
