"""Distillation: the loss against hand-computed values, the student's layers, a frozen teacher, and a
student checkpoint that is an ordinary task checkpoint."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from tasks.app import BertTasksCLI
from tasks.distillation import (
    DistilledClassifier,
    DistilledTagger,
    hidden_mse,
    soft_kl,
    teacher_layer_for,
)
from tasks.io import UserError
from tests.conftest import FAST_TRAINER_ARGS, ROOT, evaluation_metrics, run_cli

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI.s args parameter")

FAST = list(FAST_TRAINER_ARGS)
SAMPLE = ROOT / "data" / "glue" / "SST-2"
DATA = [
    "--data.train_file",
    SAMPLE / "train.tsv",
    "--data.validation_file",
    SAMPLE / "dev.tsv",
    "--data.test_file",
    SAMPLE / "dev.tsv",
]


def test_soft_kl_by_hand():
    student, teacher, T = torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[2.0, 1.0, 0.5]]), 2.0

    def softmax(values):
        exps = [math.exp(v / T) for v in values]
        return [e / sum(exps) for e in exps]

    p, q = softmax([2.0, 1.0, 0.5]), softmax([1.0, 2.0, 0.0])
    expected = T**2 * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    assert soft_kl(student, teacher, T).item() == pytest.approx(expected, rel=1e-6)
    # Rows are averaged; a student equal to its teacher has no soft loss.
    two = soft_kl(torch.cat([student, teacher]), torch.cat([teacher, teacher]), T)
    assert two.item() == pytest.approx(expected / 2, rel=1e-6)
    assert soft_kl(teacher, teacher, 5.0).item() == pytest.approx(0.0, abs=1e-7)


def test_hidden_mse_counts_real_tokens_only():
    student = torch.zeros(1, 3, 2)
    teacher = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [100.0, 100.0]]])  # the last is padding
    mask = torch.tensor([[1, 1, 0]])
    assert hidden_mse([student], [teacher], mask).item() == pytest.approx((1 + 1 + 4 + 0) / 4)
    assert [teacher_layer_for(j, 3, 6) for j in range(3)] == [2, 4, 6]  # TinyBERT's uniform map


def test_tagger_soft_loss_at_labelled_positions(deep_bert_dir: Path):
    labels = ["B-LOC", "I-LOC", "O"]
    student = DistilledTagger(pretrained=str(deep_bert_dir), task="ner", label_names=labels, temperature=3.0)
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    batch = {"labels": torch.tensor([[-100, 0, -100, 2], [-100, 1, -100, -100]])}
    rows = [(0, 1), (0, 3), (1, 1)]  # each word's first sub-token
    expected = soft_kl(torch.stack([s[r] for r in rows]), torch.stack([t[r] for r in rows]), 3.0)
    assert student.soft_loss(s, t, batch).item() == pytest.approx(expected.item(), rel=1e-6)


def test_student_starts_from_the_mapped_teacher_layers(sst2_teacher_ckpt: Path):
    teacher = torch.load(sst2_teacher_ckpt, weights_only=True)["state_dict"]
    student = DistilledClassifier(
        teacher=str(sst2_teacher_ckpt), student_layer_map=[1, 3], task="sst2", label_names=["0", "1"]
    )
    assert student.encoder.config.num_hidden_layers == 2
    state = student.state_dict()
    for new, old in ((0, 1), (1, 3)):
        prefix = f"encoder.encoder.layer.{new}."
        layer = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        for name, tensor in layer.items():
            assert torch.equal(tensor, teacher[f"encoder.encoder.layer.{old}.{name}"]), name
    for name in (
        "encoder.embeddings.word_embeddings.weight",
        "encoder.pooler.dense.weight",
        "classifier.weight",
    ):
        assert torch.equal(state[name], teacher[name])
    assert not any(k.startswith("teacher") for k in state)
    # Spread evenly by default: 2 of 4 layers are 0 and 2.
    even = DistilledClassifier(
        teacher=str(sst2_teacher_ckpt), student_layers=2, task="sst2", label_names=["0", "1"]
    )
    assert even.layer_map == [0, 2]
    assert torch.equal(
        even.state_dict()["encoder.encoder.layer.1.output.dense.weight"],
        teacher["encoder.encoder.layer.2.output.dense.weight"],
    )


def test_mismatched_teacher_is_an_error(sst2_teacher_ckpt: Path, tmp_path: Path, capsys):
    with pytest.raises(UserError, match="labels"):
        DistilledClassifier(teacher=str(sst2_teacher_ckpt), task="sst2", label_names=["a", "b", "c"])
    with pytest.raises(UserError, match="task 'sst2'"):
        DistilledClassifier(teacher=str(sst2_teacher_ckpt), task="cola", label_names=["0", "1"])
    with pytest.raises(UserError, match="same task"):
        DistilledTagger(teacher=str(sst2_teacher_ckpt), task="ner", label_names=["B-X", "I-X", "O"])
    with pytest.raises(UserError, match="student_layers"):
        DistilledClassifier(
            teacher=str(sst2_teacher_ckpt), student_layers=9, task="sst2", label_names=["0", "1"]
        )
    # Through the command line: one line naming the problem, exit status 2.
    code = run_cli(
        "fit",
        "--config",
        ROOT / "configs" / "distill_ner.yaml",
        "--model.teacher",
        sst2_teacher_ckpt,
        "--trainer.default_root_dir",
        tmp_path,
        *FAST,
    )
    assert code == 2
    assert "same task" in capsys.readouterr().err


def test_distillation_run_frozen_teacher_and_an_ordinary_student(sst2_teacher_ckpt: Path, tmp_path: Path):
    teacher_ckpt = tmp_path / "teacher.ckpt"
    shutil.copy(sst2_teacher_ckpt, teacher_ckpt)
    before = torch.load(teacher_ckpt, weights_only=True)["state_dict"]
    run_dir = tmp_path / "student"
    cli = BertTasksCLI(
        args=[
            "fit",
            "--config",
            str(ROOT / "configs" / "distill_sst2.yaml"),
            "--model.teacher",
            str(teacher_ckpt),
            "--model.student_layers",
            "2",
            "--model.hidden_loss_weight",
            "0.5",
            "--trainer.max_steps",
            "3",
            "--trainer.default_root_dir",
            str(run_dir),
            *[str(a) for a in DATA + FAST],
        ]
    )
    teacher, student = cli.model.teacher, cli.model
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    for name, tensor in teacher.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    # The student did move (and only it is trained).
    moved = student.state_dict()["encoder.encoder.layer.1.output.dense.weight"]
    assert not torch.equal(moved, before["encoder.encoder.layer.2.output.dense.weight"])
    optimised = {id(p) for group in cli.trainer.optimizers[0].param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in teacher.parameters()}
    logged = (run_dir / "logs" / "csv" / "fit" / "metrics.csv").read_text().splitlines()[0]
    assert "train/soft_loss" in logged and "train/hidden_loss" in logged

    best = run_dir / "checkpoints" / "best.ckpt"
    stored = torch.load(best, weights_only=True)
    assert stored["hyper_parameters"]["_class_path"] == "tasks.classification.SequenceClassifier"
    assert "teacher" not in stored["hyper_parameters"]
    assert not any("teacher" in k for k in stored["state_dict"])
    assert stored["bert_tasks"]["bert_config"]["num_hidden_layers"] == 2
    assert best.stat().st_size < teacher_ckpt.stat().st_size

    teacher_ckpt.unlink()  # the student needs no teacher from here on
    assert (
        run_cli(
            "validate",
            "--config",
            ROOT / "configs" / "sst2.yaml",
            "--ckpt_path",
            best,
            *DATA,
            "--trainer.default_root_dir",
            tmp_path / "v",
            *FAST,
        )
        == 0
    )
    assert evaluation_metrics(tmp_path / "v")["val/accuracy"] >= 0
    out = tmp_path / "p" / "predict" / "test" / "predictions.jsonl"  # the run's predict/<input>/ folder
    code = run_cli(
        "predict",
        "--model",
        "tasks.classification.SequenceClassifier",
        "--data",
        "tasks.classification.ClassificationDataModule",
        "--data.predict_file",
        SAMPLE / "test.tsv",
        "--ckpt_path",
        best,
        "--trainer.default_root_dir",
        tmp_path / "p",
        *FAST,
    )
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records and all(r["label"] in ("negative", "positive") for r in records)
