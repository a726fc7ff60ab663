"""Structural surgery on a BertModel: remove attention heads (Michel et al. 2019), keep a subset of
layers (Sajjad et al.'s dropped top layers, DistilBERT-style students), and the head gates whose
gradients measure a head's importance (``model.head_gates``, the model's own mode).

Heads are named by their original index in the layer (Hugging Face's ``pruned_heads`` meaning), so
pruning twice composes and ``config.pruned_heads`` always says which heads are gone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .checkpoint import split_qkv
from .config import BertConfig
from .model import BertModel, head_gates

__all__ = [
    "kept_heads",
    "prune_heads",
    "select_layers",
    "drop_layers",
    "spread_layers",
    "head_gates",
    "unpruned_copy",
]


def kept_heads(config: BertConfig, layer: int) -> list[int]:
    """The original indices of the heads layer ``layer`` still has, in weight order."""
    pruned = set(config.pruned_heads.get(layer, ()))
    return [h for h in range(config.num_attention_heads) if h not in pruned]


def _select(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping the rows (dim 0: output features) or columns (dim 1) in ``index``."""
    weight = linear.weight.detach().index_select(dim, index).clone()
    bias = linear.bias.detach().clone() if dim == 1 else linear.bias.detach()[index].clone()
    new = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        new.bias.copy_(bias)
    new.requires_grad_(linear.weight.requires_grad)
    return new


def prune_heads(model: BertModel, heads: dict[int, Iterable[int]]) -> BertModel:
    """Remove ``heads`` ({layer: [original head index, ...]}) from ``model``, in place.

    q, k and v lose the heads' rows, the attention output projection their columns; every other
    weight is untouched, so the model computes what the unpruned one computes with those heads'
    outputs masked to zero. ``model.config.pruned_heads`` records them.
    """
    config = model.config
    pruned = {layer: set(h) for layer, h in config.pruned_heads.items()}
    d = config.head_size
    for layer, remove in heads.items():
        remove = set(int(h) for h in remove) - pruned.get(layer, set())
        if not remove:
            continue
        if not 0 <= layer < config.num_hidden_layers:
            raise ValueError(f"no layer {layer} in {config.num_hidden_layers} layers")
        current = kept_heads(config, layer)
        if remove - set(current):
            raise ValueError(f"layer {layer} has no heads {sorted(remove - set(current))}")
        if len(remove) == len(current):
            raise ValueError(f"pruning heads {sorted(remove)} would leave layer {layer} without a head")
        keep = torch.tensor(
            [p * d + i for p, h in enumerate(current) if h not in remove for i in range(d)], dtype=torch.long
        )  # rows of each of q, k, v (columns of the output projection) that stay
        attention = model.encoder.layer[layer].attention
        width = len(current) * d  # rows of each of q, k, v in the fused projection
        attention.self.qkv = _select(
            attention.self.qkv, torch.cat([keep, keep + width, keep + 2 * width]), dim=0
        )
        attention.output.dense = _select(attention.output.dense, keep, dim=1)
        attention.self.num_heads = len(current) - len(remove)
        pruned.setdefault(layer, set()).update(remove)
    model.config = dataclasses.replace(config, pruned_heads={k: sorted(v) for k, v in pruned.items()})
    return model


def select_layers(model: BertModel, layers: Sequence[int]) -> BertModel:
    """Keep only ``layers`` (indices into the current layers, in that order), in place."""
    config = model.config
    layers = [int(i) for i in layers]
    if not layers:
        raise ValueError("keep at least one layer")
    bad = [i for i in layers if not 0 <= i < config.num_hidden_layers]
    if bad:
        raise ValueError(f"no layer(s) {bad} in {config.num_hidden_layers} layers")
    model.encoder.layer = nn.ModuleList(model.encoder.layer[i] for i in layers)
    pruned = {new: config.pruned_heads[old] for new, old in enumerate(layers) if old in config.pruned_heads}
    model.config = dataclasses.replace(config, num_hidden_layers=len(layers), pruned_heads=pruned)
    return model


def drop_layers(model: BertModel, count: int) -> BertModel:
    """Remove the top ``count`` layers (Sajjad et al. 2020: the top layers matter least), in place."""
    total = model.config.num_hidden_layers
    if not 0 <= count < total:
        raise ValueError(f"can drop 0 to {total - 1} of {total} layers, not {count}")
    return select_layers(model, range(total - count))


def spread_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """``student_layers`` of ``teacher_layers`` spread evenly from the bottom: one in every
    ``L/K`` (DistilBERT took one layer in two): 3 of 6 -> [0, 2, 4], 4 of 12 -> [0, 3, 6, 9]."""
    if not 0 < student_layers <= teacher_layers:
        raise ValueError(f"a student of 1 to {teacher_layers} layers, not {student_layers}")
    return [i * teacher_layers // student_layers for i in range(student_layers)]


def unpruned_copy(model: BertModel) -> BertModel:
    """An equivalent model with every head back, the pruned ones zero (their outputs are zero):
    for libraries that no longer read ``pruned_heads`` (transformers 5 removed head pruning)."""
    config = model.config
    full = BertModel(dataclasses.replace(config, pruned_heads={}))
    state = split_qkv(model.state_dict())  # per projection: q, k and v each get their heads back
    target = split_qkv(full.state_dict())
    d = config.head_size
    for name, tensor in state.items():
        if tensor.shape == target[name].shape:
            target[name] = tensor
            continue
        layer = int(name.split(".")[2])  # encoder.layer.<i>.attention...
        rows = torch.tensor([h * d + i for h in kept_heads(config, layer) for i in range(d)])
        padded = torch.zeros_like(target[name])
        if ".output.dense.weight" in name:
            padded[:, rows] = tensor
        else:  # query/key/value weight or bias
            padded[rows] = tensor
        target[name] = padded
    full.load_state_dict(target)  # the names are joined into qkv again as it loads
    return full
