"""What every model class shares besides its layers: loading and saving pretrained weights
(``PretrainedMixin``) and BERT's initialisation (``init_weights``)."""

from __future__ import annotations

import os

import torch
from torch import nn

from .config import BertConfig
from .initialization import fills_skipped


class PretrainedMixin:
    """``from_pretrained`` / ``save_pretrained`` / ``num_parameters`` for the model classes."""

    config: BertConfig

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, config: BertConfig | None = None, **overrides):
        """Load weights from a Google TF checkpoint, an HF directory, ``all-MiniLM-L6-v2`` or a hub id.

        ``overrides`` replace config fields (e.g. ``hidden_act="gelu_new"``, dropout rates).
        """
        from .checkpoint import load_pretrained

        return load_pretrained(cls, source, config=config, **overrides)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write HF format: ``config.json`` + ``model.safetensors`` (+ tokenizer files when known)."""
        from .checkpoint import save_pretrained

        save_pretrained(self, directory)

    @classmethod
    def uninitialised(cls, config: BertConfig):
        """``cls(config)`` with its tensors allocated but not initialised: for a model whose weights
        are loaded next. BERT's initialisation of all-MiniLM-L6-v2 (the 30,522 x 384 table's
        truncated normal above all) takes about a second on a laptop CPU, for values a checkpoint
        overwrites. (Not built on the meta device: its fills import torch._dynamo, seconds of start-up.)"""
        with fills_skipped():
            return cls(config)

    def initialise_missing(self, loaded: set[str]) -> None:
        """BERT's initialisation for the parameters of an ``uninitialised`` model not in ``loaded``
        (new pre-training heads, a checkpoint without a pooler); other parameters start at zero (the
        MLM head's output bias, as when built)."""
        for prefix, module in self.named_modules():
            missing = [
                name
                for name, _ in module.named_parameters(recurse=False)
                if (f"{prefix}.{name}" if prefix else name) not in loaded
            ]
            if not missing:
                continue
            if isinstance(module, (nn.Linear, nn.Embedding, nn.LayerNorm)):
                init_weights(module, self.config.initializer_range)
            else:
                with torch.no_grad():
                    for name in missing:
                        getattr(module, name).zero_()

    def num_parameters(self) -> int:
        """Unique parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters())  # parameters() already deduplicates ties


def init_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation: truncated-normal-like N(0, std) weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
