"""Building a model whose weights are loaded next, without paying for its initialisation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def fills_skipped() -> Iterator[None]:
    """``torch.nn.init``'s in-place fills as no-ops: modules built inside keep their tensors as
    allocated (``torch.empty``), for weights that are loaded next."""
    names = ("trunc_normal_", "normal_", "uniform_", "kaiming_uniform_", "zeros_", "ones_", "constant_")
    saved = {name: getattr(nn.init, name) for name in names}
    try:
        for name in names:
            setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, function in saved.items():
            setattr(nn.init, name, function)
