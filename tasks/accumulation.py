"""Gradient accumulation that equals the big batch: the loss of an accumulation window is the mean
over the window's real labels, not the mean of its micro-batches' means.

Lightning divides each micro-batch's loss by ``accumulate_grad_batches`` (k), which gives the big
batch's gradient only when every micro-batch holds as many labels: not for token labels (a
tagging batch of short sentences holds fewer than one of long ones), nor for an epoch's last,
shorter batch. So with k > 1 each micro-batch returns its loss *summed* over its labels, and
before the optimizer step (before clipping) the accumulated gradient is multiplied by
k / (labels in the window, all processes together): the gradient of the window's per-label mean,
whatever the micro-batches hold. With k = 1 nothing changes (each batch is its own window).

Why per label: the big batch's loss is a mean over its labels (cross-entropy's "mean" over the
tokens that carry one, or over the rows), so ``b x k`` equals ``k*b`` only when the window is
normalised the same way. No Lightning here: the trainer's numbers are handed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

IGNORE_INDEX = -100  # a token without a label (batching.IGNORE_INDEX)


def labels_in(batch: dict[str, Any]) -> int:
    """How many labels a training batch's loss is the mean over: the labelled tokens of token
    labels ([B, T] integers, -100 = none), the masked tokens of pre-training (whose next-sentence
    term, a mean over rows, is then weighted alike: exact without NSP), else one per row."""
    labels = batch.get("labels")
    if isinstance(labels, torch.Tensor) and labels.dim() == 2 and not labels.is_floating_point():
        return int((labels != IGNORE_INDEX).sum())
    masked = batch.get("mlm_labels")
    if isinstance(masked, torch.Tensor):
        return int((masked != IGNORE_INDEX).sum())
    return len(batch["input_ids"])


class Window:
    """Counts the labels of the micro-batches since the last optimizer step."""

    def __init__(self) -> None:
        self.labels = 0

    def loss(self, mean_loss: torch.Tensor, labels: int, accumulate: int) -> torch.Tensor:
        """What a micro-batch backpropagates: its mean loss (k = 1), or its sum over its labels."""
        if accumulate == 1:
            return mean_loss
        self.labels += labels
        return mean_loss * labels

    def finish(self, parameters: Iterable[torch.Tensor], accumulate: int, world_size: int) -> None:
        """Before the optimizer step: the summed gradients (which Lightning divided by k, and DDP
        averaged over the processes) become the gradient of the window's per-label mean."""
        if accumulate == 1:
            return
        labels, self.labels = self.labels, 0
        grads = [param.grad for param in parameters if param.grad is not None]
        if world_size > 1:  # every process must scale alike: the window's labels on all of them
            total = torch.tensor([float(labels)], device=grads[0].device if grads else None)
            torch.distributed.all_reduce(total)
            labels = int(total.item())
        if labels == 0:  # a training step of its own (distillation's): Lightning's mean, untouched
            return
        torch._foreach_mul_(grads, accumulate * world_size / labels)
