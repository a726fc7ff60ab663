"""Where a task's encoder comes from: a pretrained source ``bert_core`` reads, a task checkpoint of
this app, or an ONNX export directory; and what its tokenizer needs stored beside it."""

from __future__ import annotations

import os
from typing import Any

from bert_core import BertConfig, BertModel
from bert_core.tokenizer import tokenizer_spec

from .checkpoint import (
    is_onnx_export,
    is_task_checkpoint,
    load_task_tokenizer,
    mapped_weights,
    read_checkpoint,
    read_weights,
)
from .io import UserError
from .registry import TaskKind, stored_kind


class Source:
    """Where a command's model comes from, answered once: a pretrained encoder that ``bert_core``
    reads (TF checkpoint, HF directory, the embedded MiniLM, a hub id), a task checkpoint of this
    app (``.ckpt``), or an ONNX export directory of one. What a checkpoint stores is read once
    (``read_checkpoint`` keeps it by path and modification time), its weights only when asked for.
    """

    PRETRAINED, CHECKPOINT, ONNX = "pretrained", "checkpoint", "onnx"

    def __init__(self, location: str | os.PathLike):
        self.location = str(location)
        self._state: dict[str, Any] | None = None
        if is_onnx_export(location):
            self.kind = Source.ONNX
        elif is_task_checkpoint(location):
            self.kind = Source.CHECKPOINT
        else:
            self.kind = Source.PRETRAINED

    def __repr__(self) -> str:
        return f"Source({self.location!r}, {self.kind})"

    @property
    def is_task_model(self) -> bool:
        """A fine-tuned model of this app (a checkpoint or its ONNX export), not a bare encoder."""
        return self.kind != Source.PRETRAINED

    def stored(self) -> dict[str, Any]:
        """A task model's payload, hyper-parameters and data settings (no weights)."""
        if not self.is_task_model:
            raise UserError(f"{self.location}: a pretrained encoder, not a task checkpoint of this app")
        return read_checkpoint(self.location)

    def task_kind(self) -> TaskKind:
        """The registry row the task model names (never a class path read from the file)."""
        return stored_kind(self.location, self.stored())

    def state_dict(self) -> dict[str, Any]:
        """A task checkpoint's weights, memory-mapped, through the one weights_only reader."""
        if self.kind != Source.CHECKPOINT:
            raise UserError(f"{self.location}: no PyTorch weights (a {self.kind} source)")
        if self._state is None:  # read once: the encoder and the head take their weights from it
            self._state = mapped_weights(self.location)["state_dict"]
        return self._state

    def tokenizer(self, do_lower_case: bool | None = None):
        return load_task_tokenizer(self.location, do_lower_case=do_lower_case)

    def encoder(self, mapped: bool = False, **overrides) -> tuple[BertModel, dict[str, Any]]:
        """The encoder and what a checkpoint must carry to rebuild its tokenizer (vocab and casing).
        ``mapped``: a task checkpoint's tensors become the parameters, still in the file's pages
        (copy on write), instead of being copied: for inference, which never writes them (0.25 s of
        a predict's start for all-MiniLM-L6-v2, and only the embedding rows used are ever read)."""
        if self.kind == Source.PRETRAINED:
            encoder = BertModel.from_pretrained(self.location, **overrides)
            spec = tokenizer_spec(self.location)
            return encoder, {"vocab": spec.tokens, "do_lower_case": spec.do_lower_case}
        payload = self.stored()["payload"]
        config = BertConfig.from_dict({**payload["bert_config"], **overrides})
        tokenizer = {k: payload[k] for k in ("vocab", "do_lower_case")}
        if self.kind == Source.ONNX:
            # The weights are in model.onnx (run by onnxruntime): this encoder only gives the heads their shapes.
            return BertModel(config), tokenizer
        # A fine-tuned model's encoder: the start of another fine-tuning (MNLI -> RTE), or the model
        # itself for validate/test/predict (where Lightning loads the same weights again, head included).
        encoder = BertModel.uninitialised(config)
        state = {
            k.removeprefix("encoder."): v for k, v in self.state_dict().items() if k.startswith("encoder.")
        }
        try:
            encoder.load_state_dict(state, assign=mapped)
        except RuntimeError as err:
            raise mismatched_weights(self.location, err) from None
        return encoder, tokenizer


def load_encoder(pretrained: str, **overrides) -> tuple[BertModel, dict[str, Any]]:
    """The encoder of any model source and what a checkpoint must carry to rebuild its tokenizer."""
    return Source(pretrained).encoder(**overrides)


def mismatched_weights(source: Any, err: RuntimeError) -> Exception:
    """torch's "Error(s) in loading state_dict" as a one-line UserError naming the checkpoint."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines or not lines[0].startswith("Error(s) in loading state_dict"):
        return err
    detail = lines[1] if len(lines) > 1 else lines[0]
    return UserError(f"{source}: its weights do not fit the model its settings describe ({detail[:300]})")


def load_task_module(path: str | os.PathLike, expected: TaskKind | None = None) -> tuple[Any, dict]:
    """The task module of a ``.ckpt`` written by ``fit`` (encoder rebuilt from the config stored in
    it, weights loaded, eval mode) and what the checkpoint stores besides weights: the one rebuild
    that export, prune, distillation's teacher and the report use. Its class is the registry's for
    the task kind the checkpoint names; its arguments only those that class takes."""
    source = Source(path)
    if source.kind == Source.ONNX:
        raise UserError(f"{path}: an ONNX export already; give the .ckpt it was made from")
    stored = source.stored()
    kind = source.task_kind()
    if expected is not None and kind.key not in (expected.key, expected.saves_as):
        raise UserError(
            f"{path}: a checkpoint of a {kind.key} model (task {stored['hyper_parameters'].get('task')!r}), "
            f"but a {expected.saves_as or expected.key} model is needed here"
        )
    cls = kind.module_class()
    known = _init_parameters(cls)
    kwargs = {k: v for k, v in stored["hyper_parameters"].items() if k in known and k != "pretrained"}
    module = cls(**kwargs, pretrained=str(path))
    checkpoint = read_weights(path)
    module.load_state_dict(checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)
    return module.eval(), stored


def _init_parameters(cls: type) -> set[str]:
    import inspect

    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            names.update(p for p in inspect.signature(klass.__init__).parameters if p not in ("self",))
    return names
