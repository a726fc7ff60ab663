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
        if not torch.is_grad_enabled() or not x.requires_grad:
            mask, keep = keep_mask(x, self.p)
            return x * mask.mul_(1.0 / keep)
        return _Dropout.apply(x, self.p)


def _scaled(flags: torch.Tensor, keep: float, like: torch.Tensor) -> torch.Tensor:
    """The {0, 1/keep} multiplier of dropout from its boolean keep flags."""
    return flags.to(like.dtype).mul_(1.0 / keep)


class _Dropout(torch.autograd.Function):
    """x * mask / keep, keeping the mask for the backward as bools (1 byte an element, not 4):
    three dropouts of [N, H] a layer held 216 MB of a 32 x 384-token training step's activations."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        flags, keep = keep_mask(torch.empty(x.shape, dtype=torch.bool, device=x.device), p)
        ctx.save_for_backward(flags)
        ctx.keep = keep
        return x * _scaled(flags, keep, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (flags,) = ctx.saved_tensors
        return grad * _scaled(flags, ctx.keep, grad), None


# Elements of [rows, heads, T_q, T_k] computed at once by attention_with_dropout: 4 Mi floats (16 MiB)
_ATTENTION_CHUNK = 1 << 22


def attention_with_dropout(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, p: float
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d), masked) with dropout on the probabilities, times v.

    q, k, v: [b, heads, T, d]; key_mask: [b, 1, 1, T] (True = attend) or None. Returns [b, heads, T, d].

    Memory: autograd would keep three [b, heads, T, T] float tensors a layer for the backward (the
    probabilities, the dropout mask, their product): 680 MB a layer at 32 x 384 tokens, 4 GB of a
    6-layer encoder's step. This keeps only the dropout mask, as bools, and computes the scores
    again in the backward, a few rows at a time (the forward too), so no [b, heads, T, T] float
    tensor is ever whole: the same numbers at 1/12 of the memory, for one more q k^T matmul.
    """
    return _AttentionWithDropout.apply(q, k, v, key_mask, p)


def _row_chunks(q: torch.Tensor, k: torch.Tensor) -> list[slice]:
    per_row = q.shape[1] * q.shape[2] * k.shape[2]  # heads * T_q * T_k
    step = max(1, _ATTENTION_CHUNK // max(per_row, 1))
    return [slice(start, start + step) for start in range(0, q.shape[0], step)]


def _probabilities(q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # [b, heads, T_q, T_k]
    if key_mask is not None:
        scores.masked_fill_(~key_mask, torch.finfo(scores.dtype).min)
    return scores.softmax(-1)


class _AttentionWithDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, key_mask, p):
        # The whole group's mask in one draw: the same random numbers as one keep_mask of the scores.
        flags, keep = keep_mask(
            torch.empty((*q.shape[:-1], k.shape[-2]), dtype=torch.bool, device=q.device), p
        )
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        for rows in _row_chunks(q, k):
            chunk_mask = None if key_mask is None else key_mask[rows]
            probs = _probabilities(q[rows], k[rows], chunk_mask) * flags[rows]
            # the 1/(1-p) rescale on [T, d] rather than on [T, T]
            torch.matmul(probs, v[rows], out=out[rows]).mul_(1.0 / keep)
        ctx.save_for_backward(q, k, v, flags, key_mask)
        ctx.keep = keep
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, flags, key_mask = ctx.saved_tensors
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        scale = q.shape[-1] ** -0.5
        for rows in _row_chunks(q, k):
            chunk_mask = None if key_mask is None else key_mask[rows]
            chunk_q, chunk_k, chunk_v = q[rows], k[rows], v[rows]
            probs = _probabilities(chunk_q, chunk_k, chunk_mask)
            grad_y = grad_out[rows] * (1.0 / ctx.keep)
            grad_v[rows] = (probs * flags[rows]).transpose(-2, -1) @ grad_y
            grad_probs = (grad_y @ chunk_v.transpose(-2, -1)).mul_(flags[rows])
            grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
            del probs, grad_probs
            if chunk_mask is not None:
                grad_scores.masked_fill_(~chunk_mask, 0.0)
            grad_q[rows] = (grad_scores @ chunk_k).mul_(scale)
            grad_k[rows] = grad_scores.transpose(-2, -1) @ (chunk_q * scale)
        return grad_q, grad_k, grad_v, None, None


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
