"""``--trainer.accumulate_grad_batches k`` with ``--data.batch_size b`` equals ``--data.batch_size k*b``.

What "equal" means here: with dropout off, after N optimizer steps every weight of the two runs
agrees to float32 rounding (atol 1e-5 at a learning rate of 1e-3: the micro-batches pad and
multiply in other shapes, so the sums are not bit for bit the same, and AdamW divides by the root
of tiny squared gradients). It holds because (1) the training order is a function of the seed and
the epoch only, not of the batch size, so a window of k micro-batches holds exactly the rows of
one big batch (with ``--data.group_by_length`` the length groups depend on the batch size: the
same examples per epoch, other windows); (2) the window's loss is the mean over its real labels
(tasks/accumulation.py), as the big batch's is; (3) the schedule, its warm-up, clipping and
--checkpoint_every_n_steps count optimizer steps. The test is on token labels (NER), where the
micro-batches of a window hold different numbers of labels: the mean of their means, Lightning's
own normalisation, is measurably another result (checked below, so the test can fail).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tasks.accumulation import Window, labels_in

from .conftest import FAST_TRAINER_ARGS as FAST
from .conftest import ROOT, run_cli

STEPS = 4  # optimizer steps; 24 sentences in 3 big batches of 8: the fourth step starts epoch 1


def small_conll(directory: Path, sentences: int) -> Path:
    """The first ``sentences`` sentences of the NER sample (lengths 2 to 30 tokens)."""
    blocks = (ROOT / "data" / "ner" / "train.conll").read_text(encoding="utf-8").split("\n\n")
    blocks = [b for b in blocks if b.strip() and not b.startswith("-DOCSTART-")][:sentences]
    path = directory / f"ner{sentences}.conll"
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


def options(data: Path, pretrained: Path, run_dir: Path, batch: int, accumulate: int) -> list[str]:
    return [
        "--config", "configs/ner.yaml", "--model.pretrained", str(pretrained),
        "--data.train_file", str(data / "ner24.conll"), "--data.validation_file", str(data / "ner8.conll"),
        "--data.test_file", "null", "--data.predict_file", "null", "--data.cache_dir", str(data / "cache"),
        "--model.hidden_dropout_prob", "0", "--model.attention_probs_dropout_prob", "0",
        "--model.classifier_dropout", "0", "--model.learning_rate", "1e-3", "--model.warmup_ratio", "0.5",
        "--data.batch_size", str(batch), "--trainer.accumulate_grad_batches", str(accumulate),
        "--trainer.max_steps", str(STEPS), "--checkpoint_every_n_steps", "2",
        "--trainer.default_root_dir", str(run_dir), *FAST,
    ]  # fmt: skip


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def runs(mixing_bert_dir: Path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("accumulation")
    for sentences in (24, 8):
        small_conll(root, sentences)
    made = {}
    for name, batch, accumulate in (("big", 8, 1), ("accumulated", 4, 2)):
        made[name] = root / name
        assert run_cli("fit", *options(root, mixing_bert_dir, made[name], batch, accumulate)) == 0
    made["data"] = root
    return made


def test_batch_b_times_accumulate_k_equals_batch_kb(runs):
    big, accumulated = weights(runs["big"]), weights(runs["accumulated"])
    assert big["global_step"] == accumulated["global_step"] == STEPS  # optimizer steps, not micro-batches
    # the warm-up and decay counted optimizer steps: the scheduler stepped once per window
    assert [s["last_epoch"] for s in accumulated["lr_schedulers"]] == [STEPS]
    for name, expected in big["state_dict"].items():
        # 1e-5 with a learning rate of 1e-3: AdamW turns the rounding of gradients that are ~0
        # (the key bias's, which softmax ignores) into whole updates; Lightning's mean of the
        # micro-batches' means is 2.6e-3 away on this data
        torch.testing.assert_close(accumulated["state_dict"][name], expected, rtol=0, atol=1e-5, msg=name)


def test_the_per_micro_batch_mean_would_be_another_result():
    """The window of two NER micro-batches, by hand: per-label normalisation gives the big batch's
    gradient; Lightning's mean of means does not (the batches hold 3 and 9 labels)."""
    torch.manual_seed(0)
    weight = torch.randn(5, 4, requires_grad=True)
    x, y = torch.randn(12, 4), torch.randint(0, 5, (12,))
    parts = [(slice(0, 3), 3), (slice(3, 12), 9)]

    def grad(loss: torch.Tensor) -> torch.Tensor:
        weight.grad = None
        loss.backward()
        return weight.grad.clone()

    big = grad(torch.nn.functional.cross_entropy(x @ weight.T, y))
    window, weight.grad = Window(), None
    for rows, n in parts:  # what Lightning does: each returned loss divided by k
        (window.loss(torch.nn.functional.cross_entropy(x[rows] @ weight.T, y[rows]), n, 2) / 2).backward()
    window.finish([weight], accumulate=2, world_size=1)
    torch.testing.assert_close(weight.grad, big, rtol=0, atol=1e-6)
    means = sum(grad(torch.nn.functional.cross_entropy(x[r] @ weight.T, y[r]) / 2) for r, _ in parts)
    assert (means - big).abs().max() > 1e-2


def test_labels_of_a_batch():
    tokens = torch.tensor([[-100, 3, 4, -100], [-100, 1, -100, -100]])
    assert labels_in({"input_ids": torch.zeros(2, 4), "labels": tokens}) == 3  # labelled tokens
    assert labels_in({"input_ids": torch.zeros(2, 4), "labels": torch.tensor([0, 1])}) == 2  # rows
    assert labels_in({"input_ids": torch.zeros(2, 4), "mlm_labels": torch.tensor([5, 6, 7])}) == 3


@pytest.mark.multiprocess
def test_killed_inside_a_window_resumes_to_the_uninterrupted_result(runs, mixing_bert_dir, tmp_path):
    run_dir = tmp_path / "killed"
    fit = ["fit", *options(runs["data"], mixing_bert_dir, run_dir, 4, 2)]
    killer = ["--trainer.callbacks+=tests.killer.KillInsideWindow", "--trainer.callbacks.step=2"]
    killed = subprocess.run(
        [sys.executable, "-m", "tasks", *fit, *killer], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert weights(run_dir)["global_step"] == 2  # every 2 optimizer steps: the window after it was lost
    assert run_cli(*fit, "--ckpt_path", "last") == 0
    expected, got = weights(runs["accumulated"])["state_dict"], weights(run_dir)["state_dict"]
    assert all(torch.equal(expected[name], got[name]) for name in expected)
