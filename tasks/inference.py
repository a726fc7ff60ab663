"""Inference options of validate/test/predict: ``--model.quantize int8`` and ``--model.runtime onnx``.

Both act when the model is loaded (after Lightning has put the checkpoint's weights in), never
during ``fit``: int8 quantizes the encoder in place (``bert_core.quantize``), the ONNX runtime
replaces the module's forward with an onnxruntime session over an export directory's model.onnx.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .io import UserError
from .source import Source

RUNTIMES = ("torch", "onnx")


def check_inference_options(pretrained: str, quantize: str | None, backend: str, runtime: str) -> None:
    """--model.quantize / --model.runtime: known values, and an ONNX export only with the onnx runtime."""
    from bert_core.quantize import BACKENDS, available_backend

    if quantize not in (None, "int8"):
        raise UserError(f"--model.quantize must be int8 (or unset), not {quantize!r}")
    if backend not in BACKENDS:
        raise UserError(f"--model.quantize_backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if quantize:
        try:
            available_backend(backend)
        except ValueError as err:  # torchao asked for but not installed
            raise UserError(f"--model.quantize_backend {backend}: {err}") from None
    if runtime not in RUNTIMES:
        raise UserError(f"--model.runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    exported = Source(pretrained).kind == Source.ONNX
    if runtime == "onnx" and not exported:
        raise UserError(
            f"--model.runtime onnx runs an ONNX export, not {pretrained}: python -m tasks export "
            "--ckpt_path CKPT --format onnx --output DIR, then --ckpt_path DIR"
        )
    if exported and runtime != "onnx":
        raise UserError(
            f"{pretrained} is an ONNX export (its weights are in model.onnx): pass --model.runtime onnx"
        )
    if quantize and runtime == "onnx":
        raise UserError(
            "--model.quantize int8 quantizes the PyTorch encoder; it does not apply to --model.runtime onnx"
        )


def prepare_inference(module: Any) -> None:
    """Open the ONNX session or quantize the encoder of a TaskModule, once (its weights are loaded by now)."""
    hparams = module.hparams
    if hparams.runtime == "onnx" and module._onnx is None:
        module._onnx = OnnxRunner(hparams.pretrained)
        _note(module, onnx_note(hparams.pretrained))
    if hparams.quantize == "int8" and module.int8_backend is None:
        from bert_core.quantize import available_backend, quantize_int8

        backend = available_backend(hparams.quantize_backend)
        if backend == "torch.ao" and module.device.type != "cpu":
            raise UserError(
                f"--model.quantize int8 with torch.ao runs on the CPU only, not on {module.device.type}: "
                "use --model.quantize_backend torchao there"
            )
        module.int8_backend = quantize_int8(module.encoder, backend)
        _note(module, int8_note(module.encoder, module.int8_backend))


def onnx_note(directory: str | Path) -> str:
    """The line validate/test/predict print when they run an ONNX export."""
    return f"runtime: onnxruntime on {Path(directory) / 'model.onnx'}"


def int8_note(encoder: Any, backend: str) -> str:
    """The line they print once the encoder is quantized."""
    from bert_core.quantize import count_quantized_linears

    quantized, floating = count_quantized_linears(encoder)
    return (
        f"int8: {quantized} Linear layers of the encoder quantized to dynamic int8 with "
        f"{backend} ({floating} left in float)"
    )


def _note(module: Any, message: str) -> None:
    if module._trainer is None or module.trainer.is_global_zero:
        print(message, file=sys.stderr)


class OnnxRunner:
    """An ONNX export run by onnxruntime: a batch dict -> what the task module's forward returns."""

    def __init__(self, directory: str | Path, threads: int | None = None):
        try:
            import onnxruntime
        except ImportError:
            raise UserError("--model.runtime onnx needs onnxruntime: pip install -e '.[onnx]'") from None
        path = Path(directory) / "model.onnx"
        if not path.is_file():
            raise UserError(
                f"{directory}: no model.onnx (write one with python -m tasks export --format onnx)"
            )
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, batch: dict[str, Any]):
        import numpy as np
        import torch

        feeds = {}
        for name in self.inputs:
            value = batch.get(name)
            if value is None and name == "token_type_ids":
                value = torch.zeros_like(batch["input_ids"])
            feeds[name] = np.ascontiguousarray(value.cpu().numpy().astype(np.int64))
        outputs = [torch.from_numpy(o) for o in self.session.run(None, feeds)]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)
