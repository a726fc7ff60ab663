"""Knowledge distillation: a smaller student task model learns from a fine-tuned teacher checkpoint.

``python -m tasks fit --config configs/distill_sst2.yaml --model.teacher outputs/sst2/checkpoints/best.ckpt``

The student is the task's own module (``SequenceClassifier``, ``TaggingModule``) with a teacher
beside it: its ``best.ckpt`` records the plain task class and hyper-parameters, so it validates,
tests and predicts with the task's config (or alone), without the teacher. The teacher is frozen,
in eval mode, run without gradients on each training batch, and never part of the student's
state dict, optimizer or checkpoints.

Loss (Hinton et al. 2015): ``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) +
(1 - alpha) * hard-label loss``, plus ``hidden_loss_weight`` times the MSE between hidden states of
mapped layers (TinyBERT's uniform map). For NER the KL is taken at each labelled word position;
for regression (STS-B) the soft loss is the MSE to the teacher's score.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from bert_core.pruning import select_layers, spread_layers

from .checkpoint import PAYLOAD_KEY
from .classification import SequenceClassifier
from .datamodule import IGNORE_INDEX
from .io import UserError
from .module import TaskModule, check_range
from .registry import kind_of_class
from .source import load_task_module
from .tagging import TaggingModule

# Hyper-parameters of the distillation itself: left out of the student's best.ckpt, which is an
# ordinary checkpoint of the task class.
DISTILLATION_OPTIONS = (
    "teacher",
    "student_layers",
    "student_layer_map",
    "temperature",
    "alpha",
    "hidden_loss_weight",
)
PROVENANCE_KEY = "bert_tasks_distillation"  # what the student was distilled from (informative only)

# -- the loss, pure tensor math ------------------------------------------------------------------


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, summed over classes, averaged over
    rows ([N, C] each). The T^2 keeps its gradients on the scale of the hard loss (Hinton et al.)."""
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(-1)  # [N]
    return kl.mean() * temperature**2


def hidden_mse(
    student_states: list[torch.Tensor],
    teacher_states: list[torch.Tensor],
    attention_mask: torch.Tensor | None,
) -> torch.Tensor:
    """Mean squared error between paired hidden states ([B, T, H] each) over the real tokens,
    averaged over the pairs."""
    losses = []
    for student, teacher in zip(student_states, teacher_states, strict=True):
        if attention_mask is not None:
            keep = attention_mask.bool()
            student, teacher = student[keep], teacher[keep]  # [N, H]
        losses.append(F.mse_loss(student.float(), teacher.float()))
    return torch.stack(losses).mean()


def teacher_layer_for(student_layer: int, student_layers: int, teacher_layers: int) -> int:
    """The teacher layer whose output student layer ``j`` (0-based) learns to match: layer
    ``(j + 1) * L / K`` counted from 1 (TinyBERT), so the last layers meet: 3 of 6 -> 2, 4, 6."""
    return (student_layer + 1) * teacher_layers // student_layers


# -- the teacher -----------------------------------------------------------------------------------


def load_teacher(path: str, expected: type[TaskModule]) -> TaskModule:
    """The task module stored in a fine-tuned checkpoint, frozen and in eval mode."""
    try:
        teacher, _ = load_task_module(path, expected=kind_of_class(expected))
    except UserError as err:
        raise UserError(f"--model.teacher {err}; distil from a checkpoint of the same task") from None
    teacher.requires_grad_(False)
    return teacher


def _forward(module: TaskModule, batch: dict[str, Any], hidden: bool) -> tuple[torch.Tensor, Any]:
    """The module's outputs and, with ``hidden``, its encoder's hidden states (embeddings, layer 1, ...)."""
    if not hidden:
        return module(batch), None
    captured: dict[str, Any] = {}

    def encode(b: dict[str, torch.Tensor], cls_only: bool = False):  # every layer's states: never cls_only
        out = module.encoder(
            b["input_ids"], b.get("attention_mask"), b.get("token_type_ids"), output_hidden_states=True
        )
        captured["states"] = out.hidden_states
        return out

    module.encode = encode  # an instance attribute, for this call only
    try:
        return module(batch), captured["states"]
    finally:
        del module.encode


# -- the student ---------------------------------------------------------------------------------


class Distillation:
    """What every distilled task module adds to its task class (the second base class)."""

    task_class: type[TaskModule]

    def __init__(
        self,
        teacher: str | None = None,
        student_layers: int | None = None,
        student_layer_map: list[int] | None = None,
        temperature: float = 2.0,
        alpha: float = 0.5,
        hidden_loss_weight: float = 0.0,
        pretrained: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(pretrained=pretrained or teacher or _DEFAULT_ENCODER, **kwargs)
        self._init_distillation(
            teacher,
            student_layers,
            student_layer_map,
            temperature,
            alpha,
            hidden_loss_weight,
            from_teacher=teacher is not None and (pretrained is None or pretrained == teacher),
        )

    def _init_distillation(
        self,
        teacher: str | None,
        student_layers: int | None,
        student_layer_map: list[int] | None,
        temperature: float,
        alpha: float,
        hidden_loss_weight: float,
        from_teacher: bool,
    ) -> None:
        check_range("temperature", temperature, low=0.0, low_open=True)
        check_range("alpha", alpha, low=0.0, high=1.0)
        check_range("hidden_loss_weight", hidden_loss_weight, low=0.0)
        self.temperature, self.alpha, self.hidden_loss_weight = temperature, alpha, hidden_loss_weight
        if from_teacher and student_layers is None and student_layer_map is None:
            student_layers = (self.encoder.config.num_hidden_layers + 1) // 2  # DistilBERT's half
        layers = self._student_layers(student_layers, student_layer_map)
        if layers is not None:
            self.encoder = select_layers(self.encoder, layers)
        self.layer_map = layers
        # Not a registered submodule: never in the state dict, the optimizer or a device move.
        object.__setattr__(
            self, "teacher", None if teacher is None else load_teacher(teacher, self.task_class)
        )
        if self.teacher is not None:
            self._check_teacher(teacher)
            if from_teacher:  # the head too: the student starts as a copy of part of the teacher
                own = self.state_dict()
                head = {
                    k: v
                    for k, v in self.teacher.state_dict().items()
                    if not k.startswith("encoder.") and k in own and own[k].shape == v.shape
                }
                self.load_state_dict(head, strict=False)

    def _student_layers(self, count: int | None, layer_map: list[int] | None) -> list[int] | None:
        total = self.encoder.config.num_hidden_layers
        if layer_map is not None:
            layer_map = [int(i) for i in layer_map]
            if count is not None and count != len(layer_map):
                raise UserError(
                    f"--model.student_layers {count} but --model.student_layer_map has {len(layer_map)} layers"
                )
            bad = [i for i in layer_map if not 0 <= i < total]
            if bad or not layer_map or len(set(layer_map)) != len(layer_map):
                raise UserError(
                    f"--model.student_layer_map {layer_map}: distinct layers of 0..{total - 1} "
                    f"(the initial encoder has {total})"
                )
            return layer_map
        if count is None:
            return None
        if not 0 < count <= total:
            raise UserError(
                f"--model.student_layers must be in [1, {total}] (the initial encoder's layers), not {count}"
            )
        return spread_layers(total, count)

    def _check_teacher(self, path: str) -> None:
        teacher = self.teacher
        mine, theirs = self.hparams.task, teacher.hparams.task
        if mine and theirs and mine != theirs:
            raise UserError(f"--model.teacher {path}: a checkpoint of task {theirs!r}, the data is {mine!r}")
        if self.label_names != teacher.label_names:
            raise UserError(
                f"--model.teacher {path}: its labels {teacher.label_names} differ from the data's {self.label_names}"
            )
        if (self._tokenizer_payload["vocab"], self._tokenizer_payload["do_lower_case"]) != (
            teacher._tokenizer_payload["vocab"],
            teacher._tokenizer_payload["do_lower_case"],
        ):
            raise UserError(
                f"--model.teacher {path}: the student's vocabulary or casing differs from the teacher's "
                "(both read the same token ids): pick a --model.pretrained with the teacher's vocabulary"
            )
        if self.hidden_loss_weight > 0 and self.hidden_size != teacher.hidden_size:
            raise UserError(
                f"--model.hidden_loss_weight needs equal hidden sizes; student {self.hidden_size}, "
                f"teacher {teacher.hidden_size}"
            )

    # -- training --------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.teacher is None:
            raise UserError(
                "distillation needs a teacher: --model.teacher CKPT (a fine-tuned checkpoint of the task)"
            )

    def on_fit_start(self) -> None:
        self.teacher.to(self.device)
        self.teacher.eval()

    def soft_loss(self, student: torch.Tensor, teacher: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        hidden = self.hidden_loss_weight > 0
        outputs, student_states = _forward(self, batch, hidden)
        with torch.no_grad():
            teacher_outputs, teacher_states = _forward(self.teacher, batch, hidden)
        hard = self.training_loss(outputs, batch)
        soft = self.soft_loss(outputs, teacher_outputs, batch)
        loss = self.alpha * soft + (1.0 - self.alpha) * hard
        size = len(batch["input_ids"])
        if hidden:
            k, t = len(student_states) - 1, len(teacher_states) - 1
            pairs = [teacher_layer_for(j, k, t) for j in range(k)]
            mse = hidden_mse(
                list(student_states[1:]), [teacher_states[i] for i in pairs], batch.get("attention_mask")
            )
            loss = loss + self.hidden_loss_weight * mse
            self.log("train/hidden_loss", mse, batch_size=size)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/soft_loss", soft, batch_size=size)
        self.log("train/hard_loss", hard, batch_size=size)
        self.log("train/lr", max(group["lr"] for group in self.optimizers().param_groups))
        return loss

    # -- checkpoints -----------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[PROVENANCE_KEY] = {
            "teacher": self.hparams.get("teacher"),
            "layer_map": self.layer_map,
            "temperature": self.temperature,
            "alpha": self.alpha,
            "hidden_loss_weight": self.hidden_loss_weight,
        }
        if "optimizer_states" in checkpoint:
            return  # last.ckpt resumes the distillation: it keeps the distillation class
        # best.ckpt (weights only) is the task's own checkpoint: its class and options alone.
        hyper = checkpoint.get("hyper_parameters")
        if hyper is not None:
            for name in DISTILLATION_OPTIONS:
                hyper.pop(name, None)
            hyper["_class_path"] = f"{self.task_class.__module__}.{self.task_class.__qualname__}"
        checkpoint[PAYLOAD_KEY]["task_kind"] = kind_of_class(self.task_class).key


_DEFAULT_ENCODER = "all-MiniLM-L6-v2"


class DistilledClassifier(Distillation, SequenceClassifier):
    """A ``SequenceClassifier`` student distilled from a ``SequenceClassifier`` teacher.

    Args:
        teacher: a fine-tuned checkpoint of the same task and labels.
        student_layers: keep K layers of the initial encoder, spread evenly (3 of 6: 0, 2, 4);
            by default half of the teacher's (all of a ``pretrained`` encoder's).
        student_layer_map: the initial encoder's layers to keep, e.g. ``[0, 2, 4]``.
        temperature: T of the softened distributions.
        alpha: weight of the soft (teacher) loss; ``1 - alpha`` weighs the hard-label loss.
        hidden_loss_weight: weight of the hidden-state MSE on mapped layers (0: off).
        pretrained: the student's initial encoder; by default the teacher's (encoder and head).
    """

    task_class = SequenceClassifier

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.multilabel:  # the soft loss below is a softmax KL: one label per example
            raise UserError("distillation is for single-label classification, not --data.task multilabel")

    def soft_loss(self, student: torch.Tensor, teacher: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        if self.regression:
            return F.mse_loss(student.float(), teacher.float())
        return soft_kl(student, teacher, self.temperature)


class DistilledTagger(Distillation, TaggingModule):
    """A ``TaggingModule`` student distilled from a ``TaggingModule`` teacher: the KL is taken at
    each labelled word position (the first sub-token of each word, as the hard loss).

    Args: as ``DistilledClassifier``.
    """

    task_class = TaggingModule

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.teacher is not None and self.teacher.scheme != self.scheme:
            raise UserError(
                f"the teacher's tags are in {self.teacher.scheme}, the data's in {self.scheme}: "
                f"pass --data.tag_scheme {self.teacher.scheme}"
            )

    def soft_loss(self, student: torch.Tensor, teacher: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        labelled = batch["labels"] != IGNORE_INDEX  # [B, T]
        return soft_kl(student[labelled], teacher[labelled], self.temperature)
