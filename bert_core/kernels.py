"""What the encoder's layers call: the cheap dropout mask, attention with dropout written out for
CPU, flash attention's variable-length kernel (imported on first use), and the activations.

Dropout draws 16 random bits per element from 64-bit words instead of calling ``bernoulli_``
(several times cheaper on CPU, where dropout RNG dominates a training step), and attention with
dropout is written out (the fused SDPA kernels have no CPU dropout; its fallback is slower).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# Flash attention's variable-length kernel (torch >= 2.10, CUDA only), imported on first use by
# varlen_supported: its module imports torch._dynamo, about 2 s of every start-up otherwise.
varlen_attn = None
_varlen_imported = False

_BITS = 16  # random bits per element: the drop rate is p rounded to a multiple of 2**-16


def keep_mask(like: torch.Tensor, p: float) -> tuple[torch.Tensor, float]:
    """A {0., 1.} mask shaped like ``like`` keeping each element with probability ~1-p, and that rate.

    torch's CPU dropout draws one 32-bit number per element through ``bernoulli_`` (about 15 ns
    per element here); cutting four 16-bit draws out of each 64-bit word costs about 2 ns.
    """
    numel = like.numel()
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=like.device).random_(-(2**63), None)
    draws = words.view(torch.int16)[:numel].view(like.shape)  # uniform integers in [-2**15, 2**15)
    dropped = round(p * 2**_BITS)  # the `dropped` smallest of the 2**16 values are dropped
    mask = torch.ge(draws, dropped - 2 ** (_BITS - 1), out=torch.empty_like(like))
    return mask, 1.0 - dropped / 2**_BITS


class Dropout(nn.Dropout):
    """``nn.Dropout`` (zero with probability p, scale the rest by 1/(1-p)) with the cheaper mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        mask, keep = keep_mask(x, self.p)
        return x * mask.mul_(1.0 / keep)


def attention_with_dropout(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, p: float
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d), masked) with dropout on the probabilities, times v.

    q, k, v: [b, heads, T, d]; key_mask: [b, 1, 1, T] (True = attend) or None. Returns [b, heads, T, d].
    """
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # [b, heads, T, T]
    if key_mask is not None:  # in place: the matmul's backward does not need its output
        scores.masked_fill_(~key_mask, torch.finfo(scores.dtype).min)
    mask, keep = keep_mask(scores, p)
    probs = scores.softmax(-1) * mask
    return (probs @ v).mul_(1.0 / keep)  # the 1/(1-p) rescale on [T, d] rather than on [T, T]


def varlen_supported(x: torch.Tensor) -> bool:
    """Whether flash attention's variable-length kernel takes ``x``'s device and dtype."""
    return x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and varlen_kernel() is not None


def varlen_kernel() -> Callable[..., torch.Tensor] | None:
    """``torch.nn.attention.varlen.varlen_attn``, imported once (None where torch lacks it)."""
    global varlen_attn, _varlen_imported
    if not _varlen_imported:
        _varlen_imported = True
        try:
            from torch.nn.attention.varlen import varlen_attn as kernel
        except ImportError:  # pragma: no cover - torch < 2.10
            kernel = None
        varlen_attn = varlen_attn or kernel  # a stand-in set before the first use stays
    return varlen_attn


def activation(name: str) -> Callable[..., torch.Tensor]:
    """``act(x, inplace=False)`` for a config's ``hidden_act``."""
    if name == "relu":
        return F.relu
    if name == "gelu":
        approximate = "none"  # exact erf form: what transformers computes for "gelu"
    elif name in ("gelu_new", "gelu_tanh", "gelu_pytorch_tanh"):
        approximate = "tanh"  # what Google's TF code computed for "gelu"
    else:
        raise ValueError(f"unknown hidden_act {name!r}")

    def gelu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        if inplace:
            return torch.ops.aten.gelu_(x, approximate=approximate)
        return F.gelu(x, approximate=approximate)

    return gelu
