"""Pre-training metrics over a whole split, from sums kept per sequence. Pure torch, no Lightning.

Each sequence's outputs shrink to ``(masked-token loss sum, masked tokens, correct ones, NSP loss,
NSP correct)`` as its batch is evaluated; the split's metrics are then ratios of the totals, so
that they do not depend on how sequences were batched.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

SequenceStats = tuple[float, float, float, float | None, bool | None]


def sequence_stats(
    mlm_logits: torch.Tensor, nsp_logits: torch.Tensor | None, batch: dict[str, Any]
) -> list[SequenceStats]:
    """Per sequence of ``batch``: ``mlm_logits`` ``[M, V]`` at the masked positions (flat indices
    into ``[B * T]``), ``nsp_logits`` ``[B, 2]`` or None without NSP."""
    B, T = batch["input_ids"].shape
    labels = batch["mlm_labels"]
    losses = F.cross_entropy(mlm_logits.float(), labels, reduction="none").double().cpu()
    correct = (mlm_logits.argmax(-1) == labels).double().cpu()
    rows = (batch["mlm_positions"] // T).cpu()
    loss_sums = torch.zeros(B, dtype=torch.float64).index_add_(0, rows, losses)
    counts = torch.zeros(B, dtype=torch.float64).index_add_(0, rows, torch.ones_like(losses))
    corrects = torch.zeros(B, dtype=torch.float64).index_add_(0, rows, correct)
    if nsp_logits is not None:
        nsp_labels = batch["next_sentence_label"]
        nsp_loss = F.cross_entropy(nsp_logits.float(), nsp_labels, reduction="none").tolist()
        nsp_correct = (nsp_logits.argmax(-1) == nsp_labels).tolist()
    else:
        nsp_loss = nsp_correct = [None] * B
    return [
        (loss_sums[b].item(), counts[b].item(), corrects[b].item(), nsp_loss[b], nsp_correct[b])
        for b in range(B)
    ]


def pretraining_scores(values: list[SequenceStats], nsp: bool) -> dict[str, float]:
    """``mlm_loss`` (mean over the masked tokens), ``mlm_accuracy``, ``perplexity`` (exp of
    mlm_loss), with NSP ``nsp_loss`` and ``nsp_accuracy`` (means over sequences); ``loss`` is
    their sum."""
    count = sum(v[1] for v in values)
    mlm_loss = sum(v[0] for v in values) / max(count, 1.0)
    scores = {
        "mlm_loss": mlm_loss,
        "mlm_accuracy": sum(v[2] for v in values) / max(count, 1.0),
        "perplexity": math.exp(min(mlm_loss, 700.0)),
        "loss": mlm_loss,
    }
    if nsp:
        scores["nsp_loss"] = sum(v[3] for v in values) / len(values)
        scores["nsp_accuracy"] = sum(bool(v[4]) for v in values) / len(values)
        scores["loss"] += scores["nsp_loss"]
    return scores
