"""Which positions of a [B, T] batch the encoder computes, and how attention sees them.

The encoder runs on the real tokens only, packed into an [N, ...] matrix; attention re-pads them
in groups of rows of similar length (``TokenLayout.real_tokens``), or, on CUDA, runs flash
attention's variable-length kernel on the packed rows directly (``row_starts``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AttentionGroup:
    """Rows of similar length that attend together, padded to the longest of them."""

    rows: int
    length: int  # T_g: the longest row of the group
    offset: int  # the group's [rows * length] grid starts at this row of the layout's stacked grids
    key_mask: torch.Tensor | None  # [rows, 1, 1, length], True = a real key; None: no padding in the group
    first_row: int = 0  # the group's rows are the layout's rows first_row, first_row + 1, ...


@dataclass
class TokenLayout:
    """Which positions of a [B, T] batch the encoder computes, and how attention groups them.

    The computed tokens form an [N, ...] matrix in layout order. For attention they are laid out
    as a stack of grids, one [rows * length] grid per group (zeros at padding).
    """

    batch_size: int
    seq_len: int
    index: torch.Tensor | None  # [N]: each token's flat position b * T + t; None: every position, in order
    groups: list[AttentionGroup]
    slots: torch.Tensor | None  # [N]: each token's row in the stacked grids; None: the tokens are the grids
    # The layout's rows are the batch's rows in this order ([B]); None: in batch order. A row's
    # computed tokens are consecutive in the [N, ...] matrix.
    row_order: torch.Tensor | None = None
    row_lengths: torch.Tensor | None = None  # [B]: computed tokens per layout row; None: seq_len each
    longest: int = 0  # the longest row's computed tokens

    # A row joins the current group while its length is at least this fraction of the group's
    # longest row: fewer, larger attention calls against less attention work on padding.
    GROUP_RATIO = 0.75

    @classmethod
    def every_position(cls, attention_mask: torch.Tensor | None, B: int, T: int) -> TokenLayout:
        """Every position is computed, padding included; padded keys are masked (the reference's way)."""
        key_mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        return cls(B, T, None, [AttentionGroup(B, T, 0, key_mask)], None, longest=T)

    @classmethod
    def real_tokens(cls, attention_mask: torch.Tensor, multiple: int = 1) -> TokenLayout:
        """Only the real tokens, rows sorted longest first and grouped by length for attention.

        ``multiple``: group lengths are rounded up to a multiple of it (8 on CUDA, so that the
        fused attention kernels are not planned anew for every length)."""
        B, T = attention_mask.shape
        device = attention_mask.device
        real = attention_mask.bool()
        lengths = real.sum(1)  # [B]
        order = lengths.argsort(descending=True, stable=True)  # [B]
        real, lengths = real[order], lengths[order]
        index = (order[:, None] * T + torch.arange(T, device=device))[real]  # [N], sorted-row-major

        groups, row_starts, offset = [], [], 0
        sizes = lengths.tolist()
        for first, last in cls._group_bounds(sizes):
            rows, longest = last - first, -(-sizes[first] // multiple) * multiple
            key_mask = None
            if sizes[last - 1] < longest:
                key_mask = torch.arange(longest, device=device) < lengths[first:last, None]  # [rows, T_g]
                key_mask = key_mask[:, None, None, :]
            groups.append(AttentionGroup(rows, longest, offset, key_mask, first_row=first))
            row_starts += range(offset, offset + rows * longest, longest)
            offset += rows * longest
        rows = {"row_order": order, "row_lengths": lengths, "longest": sizes[0]}
        if offset == len(index):  # no group holds padding: the tokens are the grids
            return cls(B, T, index, groups, None, **rows)
        rank = real.cumsum(1) - 1  # [B, T]: a real token's place in its row
        slots = (torch.tensor(row_starts, device=device)[:, None] + rank)[real]  # [N]
        return cls(B, T, index, groups, slots, **rows)

    @classmethod
    def _group_bounds(cls, lengths: list[int]) -> list[tuple[int, int]]:
        """[first, last) row ranges over lengths sorted longest first."""
        bounds, first = [], 0
        for i, length in enumerate(lengths):
            if length < cls.GROUP_RATIO * lengths[first]:
                bounds.append((first, i))
                first = i
        bounds.append((first, len(lengths)))
        return bounds

    def pack(self, values: torch.Tensor) -> torch.Tensor:
        """[B, T, ...] -> [N, ...]: the computed positions, in layout order."""
        flat = values.reshape(self.batch_size * self.seq_len, *values.shape[2:])
        return flat if self.index is None else flat[self.index]

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """[N, H] -> [B, T, H], zeros at the positions not computed."""
        if self.index is not None:
            x = x.new_zeros(self.batch_size * self.seq_len, x.shape[-1]).index_copy_(0, self.index, x)
        return x.view(self.batch_size, self.seq_len, -1)

    def to_grids(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C] tokens -> [G, C] stacked group grids, zeros at padding."""
        if self.slots is None:
            return x
        g = self.groups[-1]
        return _ToGrids.apply(x, self.slots, g.offset + g.rows * g.length)

    def from_grids(self, y: torch.Tensor) -> torch.Tensor:
        """[G, C] stacked group grids -> [N, C] tokens."""
        return y if self.slots is None else y[self.slots]

    @property
    def rows_are_exact(self) -> bool:
        """Whether each row's computed tokens are exactly its real tokens (no padding among them)."""
        return self.index is not None or all(g.key_mask is None for g in self.groups)

    def row_starts(self, device: torch.device) -> torch.Tensor:
        """[B + 1] int32: where each layout row's tokens start in the [N, ...] matrix, then N
        (flash attention's cumulative sequence lengths)."""
        if self.row_lengths is None:
            T = self.seq_len
            return torch.arange(0, (self.batch_size + 1) * T, T, device=device, dtype=torch.int32)
        return F.pad(self.row_lengths.cumsum(0), (1, 0)).to(torch.int32)

    def first_tokens(self, device: torch.device) -> torch.Tensor:
        """[B]: each layout row's first token ([CLS]) in the [N, ...] matrix."""
        return self.row_starts(device)[:-1].long()

    def to_batch_order(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C] in layout row order -> [B, C] in batch order."""
        return x if self.row_order is None else torch.empty_like(x).index_copy_(0, self.row_order, x)


class _ToGrids(torch.autograd.Function):
    """``zeros.index_copy_(0, slots, x)`` whose backward keeps only ``slots``: autograd's index_copy_
    keeps ``x`` as well (for its shape), which held each layer's [N, 3H] q/k/v projection alive
    until the backward: 320 MB of a 32 x 384-token step of a 6-layer H=384 encoder."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, slots: torch.Tensor, size: int) -> torch.Tensor:
        ctx.save_for_backward(slots)
        return x.new_zeros(size, x.shape[-1]).index_copy_(0, slots, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (slots,) = ctx.saved_tensors
        return grad.index_select(0, slots), None, None
