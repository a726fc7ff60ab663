"""Pre-training metrics over a whole split, from sums kept per sequence. Pure torch, no Lightning.
ELECTRA's (``electra_stats``, ``electra_scores``) keep the generator's and the discriminator's sums.

Each sequence's outputs shrink to ``(masked-token loss sum, masked tokens, correct ones, NSP loss,
NSP correct)`` as its batch is evaluated; the split's metrics are then ratios of the totals, so
that they do not depend on how sequences were batched.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

RTD_WEIGHT = 50.0  # ELECTRA's lambda: the binary loss is much smaller per token than the MLM loss
SequenceStats = tuple[float, float, float, float | None, bool | None]


def sequence_stats(
    mlm_logits: torch.Tensor, nsp_logits: torch.Tensor | None, batch: dict[str, Any]
) -> list[SequenceStats]:
    """Per sequence of ``batch``: ``mlm_logits`` ``[M, V]`` at the masked positions (flat indices
    into ``[B * T]``), ``nsp_logits`` ``[B, 2]`` or None without NSP."""
    B = len(batch["input_ids"])
    loss_sums, counts, corrects = masked_sums(mlm_logits, batch)
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


def masked_sums(logits: torch.Tensor, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """Per sequence [B] (float64, CPU): the masked tokens' loss sum, their count, the correct ones."""
    B, T = batch["input_ids"].shape
    labels = batch["mlm_labels"]
    losses = F.cross_entropy(logits.float(), labels, reduction="none").double().cpu()
    correct = (logits.argmax(-1) == labels).double().cpu()
    rows = (batch["mlm_positions"] // T).cpu()
    loss_sums = torch.zeros(B, dtype=torch.float64).index_add_(0, rows, losses)
    counts = torch.zeros(B, dtype=torch.float64).index_add_(0, rows, torch.ones_like(losses))
    corrects = torch.zeros(B, dtype=torch.float64).index_add_(0, rows, correct)
    return loss_sums, counts, corrects


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


def electra_stats(
    generator_logits: torch.Tensor, rtd_logits: torch.Tensor, replaced: torch.Tensor, batch: dict[str, Any]
) -> list[tuple]:
    """Per sequence: (generator loss sum, masked tokens, generator correct, RTD loss sum, real tokens,
    RTD correct, the real tokens' P(replaced) and labels, for the split's AUC)."""
    B, T = batch["input_ids"].shape
    loss_sums, counts, corrects = masked_sums(generator_logits, batch)
    mask = batch.get("attention_mask")
    real = torch.ones(B, T, dtype=torch.bool) if mask is None else mask.bool().cpu()
    rtd_logits, replaced = rtd_logits.float().cpu(), replaced.cpu()
    rtd_losses = F.binary_cross_entropy_with_logits(rtd_logits, replaced.float(), reduction="none").double()
    stats = []
    for b in range(B):
        keep = real[b]
        scores, truth = torch.sigmoid(rtd_logits[b][keep]), replaced[b][keep]
        stats.append(
            (
                loss_sums[b].item(), counts[b].item(), corrects[b].item(), rtd_losses[b][keep].sum().item(),
                float(keep.sum()), float(((scores > 0.5) == truth).sum()), scores.tolist(), truth.tolist(),
            )
        )  # fmt: skip
    return stats


def electra_scores(values: list[tuple]) -> dict[str, float]:
    """``generator_mlm_loss`` and ``generator_mlm_accuracy`` (over the masked tokens), ``rtd_loss``
    and ``rtd_accuracy`` (over every real token; replaced when P > 0.5), ``rtd_auc`` (ROC AUC of
    P(replaced) over the split's tokens), ``loss`` = generator_mlm_loss + 50 x rtd_loss."""
    masked = max(sum(v[1] for v in values), 1.0)
    tokens = max(sum(v[4] for v in values), 1.0)
    scores = {
        "generator_mlm_loss": sum(v[0] for v in values) / masked,
        "generator_mlm_accuracy": sum(v[2] for v in values) / masked,
        "rtd_loss": sum(v[3] for v in values) / tokens,
        "rtd_accuracy": sum(v[5] for v in values) / tokens,
        "rtd_auc": roc_auc([s for v in values for s in v[6]], [t for v in values for t in v[7]]),
    }
    scores["loss"] = scores["generator_mlm_loss"] + RTD_WEIGHT * scores["rtd_loss"]
    return scores


def roc_auc(scores: list[float], labels: list[bool]) -> float:
    """Mann-Whitney's AUC: the chance a replaced token scores above an original one (ties half);
    NaN when the split has only one class."""
    positives = sum(labels)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return float("nan")
    values = torch.tensor(scores, dtype=torch.float64)
    order = torch.argsort(values)
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=torch.float64)
    unique, inverse = torch.unique(values, return_inverse=True)  # ties share their mean rank
    sums = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, ranks)
    counts = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(ranks))
    ranks = (sums / counts)[inverse]
    positive_ranks = float(ranks[torch.tensor(labels, dtype=torch.bool)].sum())
    return (positive_ranks - positives * (positives + 1) / 2) / (positives * negatives)
