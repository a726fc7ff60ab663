"""Magnitude (unstructured) pruning: the smallest weights of the encoder's Linear layers set to zero
and kept at zero (Gordon et al. 2020, "Compressing BERT"; Chen et al. 2020, lottery tickets).

During ``fit`` (``--model.sparsity_target S``) the sparsity follows Zhu & Gupta (2017)'s cubic
schedule: from step t0 to t0 + n*dt, every dt steps, each weight matrix is pruned to

    s_t = S + (s_0 - S) * (1 - (t - t0) / (n * dt)) ** 3

(s_0 = 0: fast at first, when many weights are redundant, slowly at the end). The masks are applied
after every optimizer step, so pruned weights stay zero although AdamW's moments would move them;
they live in the callback's state (``fit --ckpt_path last`` resumes them), never in the model, so
the checkpoint's weight names are the ordinary ones and export writes dense tensors with the zeros.
``python -m tasks prune --magnitude S`` prunes a fine-tuned checkpoint once (``magnitude_masks``).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from .io import UserError

SPARSITY_KEY = "bert_tasks_sparsity"  # in a checkpoint: the target, the sparsity reached, the weights pruned
EMBEDDINGS = ("word_embeddings", "position_embeddings", "token_type_embeddings")
SCOPES = ("layer", "global")  # magnitude ranking: each weight matrix alone, or all of them together


def check_sparsity(option: str, value: float) -> None:
    """A UserError naming ``option`` when the sparsity is outside [0, 1) (1 would remove every weight)."""
    if not 0.0 <= value < 1.0:
        raise UserError(f"{option} must be in [0, 1), not {value}")


def check_scope(option: str, value: str) -> None:
    """A UserError naming ``option`` when the scope is not one of ``SCOPES``."""
    if value not in SCOPES:
        raise UserError(f"{option} must be one of {', '.join(SCOPES)}, not {value!r}")


def cubic_sparsity(step: int, target: float, start: int, end: int, initial: float = 0.0) -> float:
    """Zhu & Gupta's s_t at optimizer step ``step``: ``initial`` up to ``start``, ``target`` from ``end``."""
    if step <= start:
        return initial
    if step >= end:
        return target
    progress = (step - start) / (end - start)
    return target + (initial - target) * (1.0 - progress) ** 3


def prunable_weights(encoder: nn.Module, embeddings: bool = False) -> dict[str, nn.Parameter]:
    """The encoder's prunable weights by name: every Linear weight of its transformer layers (the
    fused q/k/v, attention output, intermediate and output), and with ``embeddings`` the word,
    position and token-type tables. Biases, LayerNorms and the pooler stay dense."""
    weights = {
        f"encoder.{name}.weight": module.weight
        for name, module in encoder.encoder.named_modules()
        if isinstance(module, nn.Linear)
    }
    if embeddings:
        for name in EMBEDDINGS:
            table = getattr(encoder.embeddings, name, None)
            if table is not None:
                weights[f"embeddings.{name}.weight"] = table.weight
    return weights


def _smallest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """A bool mask of ``scores`` (1-D) with the ``count`` smallest False (ties broken by position)."""
    mask = torch.ones_like(scores, dtype=torch.bool)
    if count:
        # kthvalue is linear time where topk of millions would sort; the ties at the threshold are
        # pruned first-come, so the count is exact.
        threshold = torch.kthvalue(scores, count).values
        below = scores < threshold
        mask &= ~below
        ties = (scores == threshold).nonzero().flatten()
        mask[ties[: count - int(below.sum())]] = False
    return mask


@torch.no_grad()
def magnitude_masks(
    weights: dict[str, torch.Tensor],
    sparsity: float,
    masks: dict[str, torch.Tensor] | None = None,
    scope: str = "layer",
) -> dict[str, torch.Tensor]:
    """Bool masks keeping all but the smallest |w|: ``layer``, round(sparsity * n) of each weight
    matrix; ``global``, round(sparsity * N) of all of them together, so matrices whose weights
    matter less give up more (Chen et al. 2020's global magnitude pruning). Ties are broken by
    position, so the count is exact. Weights already masked are pruned first: masks only grow."""
    check_scope("the sparsity scope", scope)
    scores = {}
    for name, weight in weights.items():
        score = weight.detach().abs().flatten().float()
        if masks is not None:
            score = score.masked_fill(~masks[name].flatten(), -1.0)
        scores[name] = score
    if scope == "global" and scores:
        flat = torch.cat(list(scores.values()))
        kept = _smallest(flat, int(round(sparsity * flat.numel()))).split(
            [s.numel() for s in scores.values()]
        )
        flat_masks = dict(zip(scores, kept, strict=True))
    else:
        flat_masks = {name: _smallest(s, int(round(sparsity * s.numel()))) for name, s in scores.items()}
    new = {}
    for name, weight in weights.items():
        mask = flat_masks[name]
        if masks is not None:  # a schedule's value below the pruned share prunes nothing back
            mask = mask & masks[name].flatten()
        new[name] = mask.view_as(weight)
    return new


@torch.no_grad()
def apply_masks(weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> None:
    for name, weight in weights.items():
        weight.mul_(masks[name].to(weight.device))


def sparsity_of(weights: dict[str, torch.Tensor]) -> float:
    """The share of exact zeros over all the weights."""
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    return zeros / max(1, sum(w.numel() for w in weights.values()))


def sparsity_record(
    weights: dict[str, torch.Tensor], target: float, schedule: str, scope: str = "layer"
) -> dict[str, Any]:
    """What a checkpoint says of its sparsity (``SPARSITY_KEY``)."""
    return {
        "target": target,
        "sparsity": sparsity_of(weights),
        "schedule": schedule,
        "scope": scope,
        "weights": sorted(weights),
    }


class MagnitudePruning(L.Callback):
    """Gradual magnitude pruning during ``fit`` (the module configures it for ``--model.sparsity_target``).

    Args:
        target: the final sparsity S of each pruned weight matrix (``scope`` layer) or of all of
            them together (``scope`` global).
        start, end: where the schedule begins and reaches S, as shares of the fit's optimizer steps.
        every: dt, optimizer steps between two mask updates.
        embeddings: prune the embedding tables too.
        scope: ``layer`` or ``global`` (``magnitude_masks``).
    """

    def __init__(
        self, target: float, start: float, end: float, every: int, embeddings: bool, scope: str = "layer"
    ) -> None:
        self.target, self.start, self.end, self.every, self.embeddings = target, start, end, every, embeddings
        self.scope = scope
        self.masks: dict[str, torch.Tensor] | None = None
        self.sparsity = 0.0  # the schedule's value the masks were last made for
        self._updated_at = -1

    @property
    def state_key(self) -> str:
        return "MagnitudePruning"

    def state_dict(self) -> dict[str, Any]:
        masks = {k: v.cpu() for k, v in (self.masks or {}).items()}
        return {"masks": masks, "sparsity": self.sparsity, "updated_at": self._updated_at}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.masks = state_dict["masks"] or None
        self.sparsity, self._updated_at = state_dict["sparsity"], state_dict["updated_at"]

    def _steps(self, trainer: L.Trainer) -> tuple[int, int]:
        total = max(1, int(trainer.estimated_stepping_batches))
        first = int(self.start * total)
        return first, max(first + 1, int(self.end * total))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        weights = prunable_weights(pl_module.encoder, self.embeddings)
        if self.masks is None:  # a fresh fit: zeros already there (a pruned checkpoint's) stay zero
            self.masks = {name: w.detach() != 0 for name, w in weights.items()}
        self.masks = {name: m.to(weights[name].device) for name, m in self.masks.items()}
        apply_masks(weights, self.masks)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # After the optimizer step (ModelCheckpoint, always the last callback, saves after this).
        weights = prunable_weights(pl_module.encoder, self.embeddings)
        step = trainer.global_step
        first, last = self._steps(trainer)
        due = first <= step <= last and ((step - first) % self.every == 0 or step == last)
        if due and step != self._updated_at:
            self._updated_at = step
            sparsity = cubic_sparsity(step, self.target, first, last)
            if sparsity > self.sparsity:
                self.masks = magnitude_masks(weights, sparsity, self.masks, self.scope)
                self.sparsity = sparsity
        apply_masks(weights, self.masks)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        weights = prunable_weights(pl_module.encoder, self.embeddings)
        checkpoint[SPARSITY_KEY] = sparsity_record(weights, self.target, "cubic", self.scope)


def check_schedule(target: float, start: float, end: float, every: int, scope: str = "layer") -> None:
    """The ``--model.sparsity_*`` options, checked when the module is built."""
    check_sparsity("--model.sparsity_target", target)
    check_scope("--model.sparsity_scope", scope)
    if not 0.0 <= start < end <= 1.0:
        raise UserError(
            f"--model.sparsity_start and --model.sparsity_end are shares of the training steps with "
            f"0 <= start < end <= 1, not {start} and {end}"
        )
    if every < 1:
        raise UserError(f"--model.sparsity_every must be at least 1 step, not {every}")


def pruning_callbacks(hparams: Any) -> list[L.Callback]:
    """The module's callbacks for its ``--model.sparsity_*`` options (none without a target)."""
    target = hparams.get("sparsity_target", 0.0)
    if not target:
        return []
    return [
        MagnitudePruning(
            target,
            hparams["sparsity_start"],
            hparams["sparsity_end"],
            hparams["sparsity_every"],
            hparams["prune_embeddings"],
            hparams.get("sparsity_scope", "layer"),  # checkpoints from before the option: per layer
        )
    ]
