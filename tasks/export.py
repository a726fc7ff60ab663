"""``python -m tasks export --ckpt_path CKPT --format hf|onnx --output DIR``: a fine-tuned model out of the app.

* ``hf``: a directory transformers loads as the task's own class (``BertForSequenceClassification``,
  ``BertForTokenClassification``, ``BertForQuestionAnswering``) and its ``pipeline``: config.json
  with ``id2label``/``label2id``, model.safetensors, vocab.txt and tokenizer_config.json (casing).
* ``onnx``: ``model.onnx`` (inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` [batch,
  sequence], both axes dynamic) computing what the task module's forward computes, every position
  included (the encoder's static layout: no data-dependent shapes), plus the same config and
  tokenizer files and ``bert_tasks.json``, what a checkpoint carries besides weights, so that
  ``predict --model.runtime onnx --ckpt_path DIR`` runs on onnxruntime. ``--quantize int8``
  quantizes the graph's MatMul weights with onnxruntime's dynamic quantization.

A checkpoint is always fp32 (``--model.quantize int8`` acts at load time, and fit refuses it); a
head-pruned one exports too (hf: the pruned heads as zeros, since transformers 5 no longer reads
``pruned_heads``).

Heavy imports (torch, Lightning, onnx) wait until an export runs, so ``python -m tasks`` stays quick.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .io import CommandParser, UserError, fsync_directory, fsync_tree, refuse_overwriting_inputs
from .registry import TASKS, TaskKind, kind_of_class
from .source import load_task_module

if TYPE_CHECKING:
    import torch

    from .module import TaskModule

FORMATS = ("hf", "onnx")
OPSET = 18  # the torch.export-based exporter's own; >= 14 has everything BERT needs
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


# -- the fine-tuned module, rebuilt from its checkpoint ---------------------------------------------


def task_kind(module: TaskModule) -> str:
    """classification, regression, tagging or qa: the registry's kind, STS-B's regression apart."""
    row = kind_of_class(type(module))
    if row is None or row.hf_architecture is None:
        raise UserError(
            f"cannot export a {type(module).__name__}: not a classification, tagging or QA module"
        )
    return "regression" if getattr(module, "regression", False) else row.key


def export_row(kind: str) -> TaskKind:
    """The registry row of an export kind (regression is a classification model)."""
    return TASKS["classification" if kind == "regression" else kind]


def hf_config_fields(module: TaskModule, kind: str) -> dict[str, Any]:
    """What config.json says about the task: labels (and regression) in transformers' terms."""
    if kind == "qa":
        return {}
    if (
        kind == "regression"
    ):  # the text-classification pipeline gives the raw score with function_to_apply="none"
        return {"id2label": {"0": "score"}, "label2id": {"score": 0}, "problem_type": "regression"}
    labels = list(module.label_names)
    if kind == "classification":  # GLUE's names as predict writes them: negative/positive, not 0/1
        from .data.glue import GLUE_TASKS

        spec = GLUE_TASKS.get(module.hparams.task)
        if spec is not None:
            labels = [spec.display_name(label) for label in labels]
    fields: dict[str, Any] = {
        "id2label": {str(i): name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
    }
    if kind == "classification":  # a sigmoid per label, as our multi-label head: pipeline(top_k=None)
        multilabel = getattr(module, "multilabel", False)
        fields["problem_type"] = "multi_label_classification" if multilabel else "single_label_classification"
    return fields


def _check_exportable(module: TaskModule, fmt: str, ckpt_path: str | Path) -> None:
    head_layers = getattr(module, "head_layers", None)
    if fmt == "hf" and head_layers is not None:
        raise UserError(
            f"{ckpt_path}: its head reads --model.head_layers {module.hparams.head_layers}, which transformers' "
            "BertFor* classes cannot express (they read the last layer): export it with --format onnx"
        )
    if fmt == "onnx" and any(name in ("thresholds", "threshold") for name, _ in module.named_buffers()):
        # The ONNX runtime rebuilds the module from bert_tasks.json: tuned thresholds would be lost.
        raise UserError(
            f"{ckpt_path}: its decision thresholds were tuned and are not carried by an ONNX export yet: "
            "predict from the .ckpt, or export --format hf"
        )
    if module.hparams.get("quantize"):
        raise UserError(
            f"{ckpt_path}: a quantized model; export the fp32 checkpoint (int8 is applied at load time)"
        )


# -- hf ---------------------------------------------------------------------------------------------


def export_hf(module: TaskModule, stored: dict[str, Any], directory: Path) -> None:
    """transformers' task layout: the encoder under ``bert.*``, the head under its HF name."""
    from bert_core.pruning import unpruned_copy

    kind = task_kind(module)
    encoder = module.encoder
    if encoder.config.pruned_heads:  # transformers 5 no longer reads pruned_heads: the zero heads back
        encoder = unpruned_copy(encoder)
    head_name = "qa_outputs" if kind == "qa" else "classifier"
    head = {f"{head_name}.{k}": v for k, v in getattr(module, head_name).state_dict().items()}
    from bert_core.checkpoint import save_pretrained  # the one writer of HF weights

    save_pretrained(
        encoder,
        directory,
        head=head,
        architecture=export_row(kind).hf_architecture,
        config_fields=hf_config_fields(module, kind),
        with_pooler=kind in ("classification", "regression"),  # token-level heads have no pooler
    )
    _write_tokenizer(stored, directory)


def _write_tokenizer(stored: dict[str, Any], directory: Path) -> None:
    from bert_core.vocab import write_vocab_files

    payload = stored["payload"]
    max_length = payload["bert_config"].get("max_position_embeddings", 512)
    write_vocab_files(payload["vocab"], payload["do_lower_case"], directory, model_max_length=max_length)


# -- onnx -------------------------------------------------------------------------------------------


def _graph(module: TaskModule) -> torch.nn.Module:
    """The task module's forward as a function of the three input tensors (what ONNX sees)."""
    import torch

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = module

        def forward(self, input_ids, attention_mask, token_type_ids):
            batch = {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "token_type_ids": token_type_ids,
            }
            return self.module(batch)

    return Graph().eval()  # the exporter checks the wrapper's mode; the module is in eval already


def example_inputs(vocab_size: int, batch: int = 2, length: int = 12) -> tuple[torch.Tensor, ...]:
    """A padded batch (the second row shorter) to trace with."""
    import torch

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, min(vocab_size, 2000), (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, length // 2 :] = 0
    ids = ids * mask
    types = torch.zeros_like(ids)
    types[:, length // 3 : length // 2] = 1
    return ids, mask, types


@contextlib.contextmanager
def quiet_onnx_exporter() -> Iterator[None]:
    """torch's exporter without its known harmless messages: that torchvision's ops cannot be
    registered (we use none) and that the three inputs' equal dynamic axes share one name.
    Its errors and other warnings still show."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"# The axis name: .* will not be used", category=UserWarning
            )
            yield
    finally:
        registration.setLevel(level)


def export_onnx(
    module: TaskModule, stored: dict[str, Any], directory: Path, quantize: str | None = None
) -> None:
    import torch

    from bert_core.model import static_layout

    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError as err:
        raise UserError(f"--format onnx needs the [onnx] extra: pip install -e '.[onnx]' ({err})") from None
    kind = task_kind(module)
    config = module.encoder.config
    with static_layout(module.encoder):  # every position computed, no data-dependent shapes
        batch = torch.export.Dim("batch", min=1, max=4096)
        sequence = torch.export.Dim("sequence", min=2, max=config.max_position_embeddings)
        axes = {name: {0: batch, 1: sequence} for name in INPUT_NAMES}
        with torch.no_grad(), quiet_onnx_exporter():
            program = torch.onnx.export(
                _graph(module),
                example_inputs(config.vocab_size),
                dynamic_shapes=axes,
                input_names=list(INPUT_NAMES),
                output_names=list(export_row(kind).onnx_outputs),
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
        program.save(str(directory / "model.onnx"))
        if quantize == "int8":
            quantize_onnx_int8(directory / "model.onnx")
    # The same config.json and tokenizer files as the hf format (no weights: they are in model.onnx).
    fields = {"architectures": [export_row(kind).hf_architecture], **hf_config_fields(module, kind)}
    config_json = {**config.to_hf_dict(), **fields}
    (directory / "config.json").write_text(
        json.dumps(config_json, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    _write_tokenizer(stored, directory)
    from .checkpoint import EXPORT_METADATA

    metadata = {
        "format": "onnx",
        "model": "model.onnx",
        "task_kind": kind,
        "inputs": list(INPUT_NAMES),
        "outputs": list(export_row(kind).onnx_outputs),
        "quantize": quantize,
        **stored,
    }
    (directory / EXPORT_METADATA).write_text(json.dumps(metadata) + "\n", encoding="utf-8")


# -- the command --------------------------------------------------------------------------------------


def quantize_onnx_int8(path: Path) -> None:
    """The graph's MatMul weights to int8, activations quantized per batch (onnxruntime's dynamic
    quantization: what ``--model.quantize int8`` does in PyTorch, in the ONNX world). Only the
    MatMuls by a weight (Linear layers) are quantized, as in PyTorch: attention's activation x
    activation products stay float (recent onnxruntime quantizes every MatMul it is given, and
    int8 attention scores cost far more accuracy than int8 weights)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(path), load_external_data=False).graph
    constants = {t.name for t in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output
    }
    weights = [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in constants]
    float_path = path.with_name("model.float.onnx")
    path.rename(float_path)
    quantize_dynamic(
        str(float_path),
        str(path),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        nodes_to_quantize=weights,
        per_channel=True,
        reduce_range=True,  # 7-bit weights: x86 CPUs without VNNI saturate u8 x s8 products at 8 bits
    )
    float_path.unlink()


def export(
    ckpt_path: str | Path, fmt: str, output: str | Path, overwrite: bool = False, quantize: str | None = None
) -> Path:
    """Export a task checkpoint; the directory is written aside and renamed into place when complete."""
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    output = Path(output)
    refuse_overwriting_inputs(output, [ckpt_path])
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output}: a file, not a directory")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise UserError(f"--output {output}: not empty (pass --overwrite to replace it)")
    module, stored = load_task_module(ckpt_path)
    _check_exportable(module, fmt, ckpt_path)
    if quantize is not None and fmt != "onnx":
        raise UserError(
            "--quantize int8 applies to --format onnx; transformers' format holds float weights "
            "(quantize when loading: --model.quantize int8 here, or your serving stack's own)"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.parent / f".{output.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        if fmt == "hf":
            export_hf(module, stored, partial)
        else:
            export_onnx(module, stored, partial, quantize=quantize)
        fsync_tree(partial)  # the files reach the disk before the rename makes them the export
        previous = output.parent / f".{output.name}.previous"
        shutil.rmtree(previous, ignore_errors=True)
        if output.exists():
            output.rename(previous)  # kept until the new export is in place
        partial.rename(output)
        fsync_directory(output.parent)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(
        prog="python -m tasks export",
        description="Export a fine-tuned checkpoint to a Hugging Face directory or to ONNX.",
    )
    parser.add_argument(
        "--ckpt_path", required=True, help="a .ckpt written by fit (e.g. outputs/sst2/checkpoints/best.ckpt)"
    )
    parser.add_argument(
        "--format", required=True, choices=FORMATS, help="hf: transformers' task classes; onnx: model.onnx"
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="the directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output directory")
    parser.add_argument(
        "--quantize", choices=["int8"], help="onnx: dynamic int8 weights (onnxruntime's quantize_dynamic)"
    )
    args = parser.parse_args(argv)
    from .runtime import quiet_lightning

    quiet_lightning()
    output = export(
        args.ckpt_path, args.format, args.output, overwrite=args.overwrite, quantize=args.quantize
    )
    print(f"exported {args.ckpt_path} ({args.format}) to {output}")
    return 0
