"""Magnitude pruning: Zhu & Gupta's cubic schedule by hand, exact and monotone masks, and a fit that
reaches its sparsity, keeps the zeros through ``--ckpt_path last`` and exports them; one-shot
``prune --magnitude``; bad sparsities refused in one line."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from tasks.io import UserError
from tasks.source import load_task_module
from tasks.sparsity import SPARSITY_KEY, cubic_sparsity, magnitude_masks, prunable_weights

from .conftest import FAST_TRAINER_ARGS, ROOT, evaluation_metrics, run_cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

SAMPLE = ROOT / "data" / "glue" / "SST-2"
DATA = ["--data.train_file", SAMPLE / "train.tsv", "--data.validation_file", SAMPLE / "dev.tsv"]
# The sample's 64 sentences in batches of 8: 8 optimizer steps an epoch.
SPARSE = ["--model.sparsity_target", "0.5", "--model.sparsity_every", "1", "--model.learning_rate", "1e-3"]


def test_cubic_schedule_by_hand():
    # s_t = S + (0 - S) * (1 - (t - t0) / (t1 - t0)) ** 3
    assert cubic_sparsity(0, 0.5, 0, 10) == 0.0
    assert cubic_sparsity(2, 0.5, 0, 10) == pytest.approx(0.5 * (1 - 0.8**3))  # 0.244
    assert cubic_sparsity(5, 0.5, 0, 10) == pytest.approx(0.4375)  # 0.5 * (1 - 1/8)
    assert cubic_sparsity(10, 0.5, 0, 10) == 0.5 and cubic_sparsity(12, 0.5, 0, 10) == 0.5
    assert cubic_sparsity(3, 0.9, 4, 8) == 0.0 and cubic_sparsity(6, 0.9, 4, 8) == pytest.approx(0.7875)


def test_masks_are_exact_and_only_grow():
    weight = torch.tensor([[0.1, -3.0, 2.0], [0.5, -0.2, 4.0]])
    half = magnitude_masks({"w": weight}, 0.5)["w"]
    assert half.tolist() == [[False, True, True], [False, False, True]]  # 0.1, 0.5, -0.2 go
    # A lower share later (a restarted schedule) prunes nothing back: masks only grow.
    assert magnitude_masks({"w": weight * half}, 1 / 3, {"w": half})["w"].tolist() == half.tolist()
    # Already-pruned weights go first, even if the others are smaller now.
    more = magnitude_masks({"w": torch.tensor([[0.0, 0.01, 9.0], [0.0, 0.0, 9.0]])}, 2 / 3, {"w": half})
    assert more["w"].tolist() == [[False, False, True], [False, False, True]]


def test_global_scope_ranks_all_weights_together():
    weights = {"a": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.tensor([[0.5, 10.0, 20.0, 30.0]])}
    # Half of all 8 weights: the 4 smallest |w| overall (0.5, 1, 2, 3), not 2 of each matrix.
    half = magnitude_masks(weights, 0.5, scope="global")
    assert half["a"].tolist() == [[False, False], [False, True]]
    assert half["b"].tolist() == [[False, True, True, True]]
    assert magnitude_masks(weights, 0.5)["a"].tolist() == [[False, False], [True, True]]  # per layer
    # Ties at the threshold are cut by position so the count is exact; masks only grow.
    ties = magnitude_masks({"a": torch.ones(2, 2), "b": torch.ones(1, 4)}, 0.25, scope="global")
    assert [int((~m).sum()) for m in ties.values()] == [2, 0]
    more = magnitude_masks({k: w * half[k] for k, w in weights.items()}, 0.75, half, scope="global")
    assert more["b"].tolist() == [[False, False, True, True]] and not more["a"].any()
    with pytest.raises(UserError, match="scope"):
        magnitude_masks(weights, 0.5, scope="rows")


def zeros(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The zero pattern of each prunable weight in a task checkpoint's state dict."""
    return {
        k: state[k] == 0 for k in state if k.startswith("encoder.encoder.") and k.endswith("dense.weight")
    }


FIT = ("fit", "--config", ROOT / "configs" / "sst2.yaml", *DATA, *FAST_TRAINER_ARGS)


@pytest.fixture(scope="module")
def sparse_run(mixing_bert_dir, tmp_path_factory):
    """One epoch of SST-2's sample pruned gradually to 50%; its first best.ckpt kept aside."""
    root = tmp_path_factory.mktemp("sparsity")
    args = (*FIT, *SPARSE, "--model.pretrained", mixing_bert_dir, "--trainer.default_root_dir", root / "run")
    assert run_cli(*args, "--trainer.max_epochs", "1") == 0
    shutil.copy(root / "run" / "checkpoints" / "best.ckpt", root / "first_best.ckpt")
    return root, args


def test_gradual_pruning_reaches_its_target_keeps_zeros_through_resume_and_export(sparse_run, tmp_path):
    root, args = sparse_run
    run_dir = root / "run"
    first = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    module, _ = load_task_module(run_dir / "checkpoints" / "last.ckpt")
    weights = prunable_weights(module.encoder)
    assert len(weights) == 2 * 4  # qkv, attention output, intermediate, output in each of 2 layers
    # every matrix exactly half zero, from the schedule's end (step 5 of 8)
    for name, weight in weights.items():
        assert int((weight == 0).sum()) == weight.numel() // 2, name
    assert first[SPARSITY_KEY]["sparsity"] == 0.5
    assert first["callbacks"]["MagnitudePruning"]["sparsity"] == 0.5

    # Resumed for a second epoch: the restored masks keep every zero (AdamW's moments would move them).
    assert run_cli(*args, "--trainer.max_epochs", "2", "--ckpt_path", "last") == 0
    second = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert second["global_step"] == 16
    before, after = zeros(first["state_dict"]), zeros(second["state_dict"])
    assert before and all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(first["state_dict"][next(iter(before))], second["state_dict"][next(iter(before))])

    # The HF export is dense, with the zeros.
    out = tmp_path / "hf"
    export = ("export", "--ckpt_path", run_dir / "checkpoints" / "last.ckpt", "--format", "hf")
    assert run_cli(*export, "--output", out) == 0
    exported = load_file(out / "model.safetensors")
    linear = [
        v for k, v in exported.items() if ".layer." in k and k.endswith("weight") and "LayerNorm" not in k
    ]
    assert len(linear) == 2 * 6  # query, key, value, attention output, intermediate, output
    assert sum(int((v == 0).sum()) for v in linear) == sum(v.numel() for v in linear) // 2


def test_prune_magnitude_one_shot_and_bad_sparsities(sparse_run, tmp_path, capsys):
    root, args = sparse_run
    ckpt, out = root / "first_best.ckpt", tmp_path / "sparse.ckpt"
    assert run_cli("prune", "--ckpt_path", ckpt, "--magnitude", "0.7", "--output", out) == 0
    assert "encoder weights at zero: 70.0%" in capsys.readouterr().out
    stored = torch.load(out, weights_only=True)
    assert stored[SPARSITY_KEY]["sparsity"] == pytest.approx(0.7, abs=1e-4)
    dense = torch.load(ckpt, weights_only=True)["state_dict"]
    for name, pruned in zeros(stored["state_dict"]).items():  # the smallest |w| of each matrix went
        kept = dense[name][~pruned].abs().min()
        assert dense[name][pruned].abs().max() <= kept, name
    # validate takes a sparse checkpoint
    validate = ("validate", "--config", ROOT / "configs" / "sst2.yaml", *DATA, *FAST_TRAINER_ARGS)
    assert run_cli(*validate, "--ckpt_path", out, "--trainer.default_root_dir", tmp_path / "v") == 0
    assert "val/accuracy" in evaluation_metrics(tmp_path / "v")
    capsys.readouterr()

    # --magnitude_scope global: 70% of all those weights, the smallest |w| of any matrix first
    out = tmp_path / "global.ckpt"
    assert (
        run_cli(
            "prune", "--ckpt_path", ckpt, "--magnitude", "0.7", "--magnitude_scope", "global", "--output", out
        )
        == 0
    )
    stored = torch.load(out, weights_only=True)
    assert stored[SPARSITY_KEY]["sparsity"] == pytest.approx(0.7, abs=1e-4)
    assert stored[SPARSITY_KEY]["scope"] == "global"
    pruned = zeros(stored["state_dict"])
    cut = max(dense[name][mask].abs().max() for name, mask in pruned.items())
    assert all(dense[name][~mask].abs().min() >= cut for name, mask in pruned.items())
    shares = [float(mask.float().mean()) for mask in pruned.values()]
    assert max(shares) - min(shares) > 0.01  # matrices differ, unlike per layer
    capsys.readouterr()

    assert run_cli("prune", "--ckpt_path", ckpt, "--magnitude", "1.0", "--output", tmp_path / "x.ckpt") == 2
    err = capsys.readouterr().err.strip()
    assert "--magnitude must be in [0, 1), not 1.0" in err and len(err.splitlines()) == 1
    assert run_cli(*args[:-1], tmp_path / "bad", "--model.sparsity_target", "-0.1") == 2
    err = capsys.readouterr().err.strip()
    assert "--model.sparsity_target must be in [0, 1), not -0.1" in err and len(err.splitlines()) == 1
    cubic = ("--magnitude", "0.5", "--schedule", "cubic", "--output", tmp_path / "y.ckpt")
    assert run_cli("prune", "--ckpt_path", ckpt, *cubic) == 2
    assert "fit --model.sparsity_target 0.5" in capsys.readouterr().err
