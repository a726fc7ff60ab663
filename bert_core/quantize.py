"""Dynamic int8 quantization of a BERT encoder's Linear layers, for inference.

Weights are stored as int8 and activations quantized on the fly, per batch. Two backends:

* ``torchao`` (``quantize_`` with ``Int8DynamicActivationInt8WeightConfig``): the maintained API;
  per-row weight and per-token activation scales, so the closer of the two to fp32. In eager mode
  on CPU it is no faster than fp32 (its CPU int8 matmul is written for ``torch.compile``/Inductor).
* ``torch.ao`` (the deprecated ``torch.ao.quantization.quantize_dynamic``): fbgemm's fused int8
  kernels, several times faster than fp32 on x86 CPUs; one scale per output channel of a weight
  and one per activation tensor. The feed-forward down-projections stay in float: they read GELU
  outputs whose outliers a per-tensor activation scale crushes (with them in int8 and per-tensor
  weights, WNUT-17 NER lost 3.6 F1; like this, 0.3).

``auto`` takes torchao when it is installed, else torch.ao. The encoder's q, k and v are one
Linear (``qkv``), quantized as one: its weight scales are per output row and its activation scale
per tensor or per token of the same input, so that equals quantizing the three apart.
"""

from __future__ import annotations

import importlib.util
import warnings

import torch
from torch import nn

BACKENDS = ("auto", "torchao", "torch.ao")


def available_backend(backend: str = "auto") -> str:
    """The backend ``quantize_int8`` will use for ``backend`` (``auto`` resolved)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown int8 backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "torchao" if importlib.util.find_spec("torchao") is not None else "torch.ao"
    if backend == "torchao" and importlib.util.find_spec("torchao") is None:
        raise ValueError("the torchao int8 backend needs torchao: pip install torchao")
    return backend


def quantize_int8(model: nn.Module, backend: str = "auto") -> str:
    """Quantize every ``nn.Linear`` of ``model`` (in place) to dynamic int8; returns the backend used.

    The model must be in eval mode and stays an inference-only model (no gradients, no saving
    into a training checkpoint).
    """
    backend = available_backend(backend)
    model.eval()
    if backend == "torchao":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        quantize_(model, Int8DynamicActivationInt8WeightConfig())
    else:
        with warnings.catch_warnings():  # its deprecation notice: the fallback is chosen knowingly
            warnings.simplefilter("ignore")
            # The feed-forward down-projections read GELU outputs with large outliers: per-tensor
            # int8 activations lose them (WNUT-17 NER lost 3.6 F1), so those stay in float.
            names = {
                name
                for name, m in model.named_modules()
                if isinstance(m, nn.Linear)
                and not (name.endswith("output.dense") and "attention" not in name)
            }
            per_channel = torch.ao.quantization.per_channel_dynamic_qconfig
            quantized = torch.ao.quantization.quantize_dynamic(
                model, dict.fromkeys(names, per_channel), dtype=torch.qint8, inplace=True
            )
        assert quantized is model
    return backend


def count_quantized_linears(model: nn.Module) -> tuple[int, int]:
    """(quantized, float) Linear layers of ``model``: a quantized model has no float one left."""
    quantized = floating = 0
    for module in model.modules():
        if isinstance(module, torch.ao.nn.quantized.dynamic.Linear):
            quantized += 1
        elif isinstance(module, nn.Linear):
            weight = module.weight
            if type(weight) in (torch.Tensor, nn.Parameter) and weight.dtype.is_floating_point:
                floating += 1
            else:  # a torchao tensor subclass holding int8 data
                quantized += 1
    return quantized, floating
