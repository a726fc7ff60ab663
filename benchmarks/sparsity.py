"""Gradual magnitude pruning: SST-2 dev accuracy at a sparsity target against the dense fit.

Per seed, ``python -m tasks fit --config configs/sst2.yaml`` on ../shared's SST-2 (train: the
5,000-row sample, validation: GLUE's dev set) with the BERT paper's recipe (batch 32, learning
rate 5e-5, 3 epochs) and all-MiniLM-L6-v2, twice:

* dense: as is;
* sparse: ``--model.sparsity_target S`` (Zhu & Gupta's cubic schedule from 10 % to 70 % of the
  steps, masks every 10 steps: the defaults), so the last third of training recovers at S;
* or, with ``--from_dense``, the dense fit pruned: ``fit --config configs/distill_sst2.yaml
  --model.teacher <dense run>/checkpoints/last.ckpt --model.student_layers 6`` (the student a copy
  of the whole fine-tuned model, head included) with ``--model.sparsity_target S``, for
  ``--recovery_epochs`` more epochs at the same batch size and learning rate, learning from the
  dense model's probabilities and the labels (alpha 0.5, temperature 2: the config's). What a user
  who has a fine-tuned model and wants it sparse runs; it costs those epochs on top of the fit.

The table shows the last checkpoint's dev accuracy (mean ± sd over the seeds, and the per-seed
gap), and the sparsity counted in the sparse checkpoints' weights (zeros of the encoder layers'
Linear weights), so a run that silently did not prune cannot pass for one that did.

    python benchmarks/sparsity.py --seeds 1 2 3 [--target 0.5] [--epochs 3] [--work DIR]
        [--sparse_options=--model.sparsity_scope=global] [--from_dense [--recovery_epochs 2]]

Given an earlier ``--work`` directory, finished runs are read again rather than refitted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "glue" / "SST-2"


def layer_sparsity(checkpoint: Path) -> float:
    """The share of zeros over the encoder layers' Linear weights of a Lightning checkpoint."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    weights = [
        t
        for name, t in state.items()
        if ".encoder.layer" in name and name.endswith(".weight") and t.dim() == 2
    ]
    zeros = sum(int((t == 0).sum()) for t in weights)
    return zeros / sum(t.numel() for t in weights)


def fit(
    work: Path, variant: str, seed: int, target: float, epochs: int, extra: list[str]
) -> dict[str, float]:
    run = work / f"{variant.replace(' ', '_')}-{seed}"
    done = run / "result.json"
    if done.is_file():  # an earlier, interrupted benchmark's finished run
        return json.loads(done.read_text())
    last = run / "checkpoints" / "last.ckpt"
    if not ((run / "metrics.json").is_file() and last.is_file()):  # the fit did not finish: again
        shutil.rmtree(run, ignore_errors=True)
        config = "configs/distill_sst2.yaml" if variant == "from dense" else "configs/sst2.yaml"
        command = [sys.executable, "-m", "tasks", "fit", "--config", config]
        command += ["--data.train_file", SST2 / "train.5k.tsv", "--data.validation_file", SST2 / "dev.tsv"]
        command += ["--data.test_file", "null", "--data.predict_file", "null", "--seed_everything", seed]
        command += ["--data.batch_size", 32, "--model.learning_rate", "5e-5", "--trainer.max_epochs", epochs]
        command += ["--trainer.default_root_dir", run, "--trainer.enable_progress_bar", "false"]
        if variant == "sparse":
            command += ["--model.sparsity_target", target, *extra]
        elif variant == "from dense":
            teacher = work / f"dense-{seed}" / "checkpoints" / "last.ckpt"
            command += ["--model.teacher", teacher, "--model.student_layers", 6]
            command += ["--model.sparsity_target", target, *extra]
        subprocess.run([str(a) for a in command], cwd=ROOT, check=True)
    # the fit's wall time: from its config (written at the start) to its record (at the end)
    seconds = (run / "metrics.json").stat().st_mtime - (run / "config.yaml").stat().st_mtime
    validate = [sys.executable, "-m", "tasks", "validate", "--ckpt_path", last]
    validate += ["--data.validation_file", SST2 / "dev.tsv"]
    validate += ["--trainer.default_root_dir", run, "--trainer.enable_progress_bar", "false"]
    subprocess.run([str(a) for a in validate], cwd=ROOT, check=True)
    metrics = json.loads(next((run / "eval").rglob("metrics.json")).read_text())
    result = {"accuracy": metrics["val/accuracy"], "sparsity": layer_sparsity(last), "fit_s": seconds}
    done.write_text(json.dumps(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--sparse_options",
        nargs="*",
        default=[],
        help="more options for the sparse fits, e.g. --model.sparsity_end=0.5",
    )
    parser.add_argument(
        "--from_dense",
        action="store_true",
        help="prune each dense fit, distilled from it, instead of pruning while fine-tuning",
    )
    parser.add_argument("--recovery_epochs", type=int, default=2, help="with --from_dense")
    parser.add_argument("--work", help="work directory (default: a new temporary one)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="sparsity-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    pruned = "from dense" if args.from_dense else "sparse"
    results: dict[str, list[dict[str, float]]] = {"dense": [], pruned: []}
    for seed in args.seeds:
        for variant in results:
            epochs = args.recovery_epochs if variant == "from dense" else args.epochs
            results[variant].append(fit(work, variant, seed, args.target, epochs, args.sparse_options))
            print(json.dumps({"seed": seed, "variant": variant, **results[variant][-1]}), flush=True)

    def cell(values: list[float], scale: float = 100.0) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{scale * statistics.mean(values):.2f} ± {scale * sd:.2f}"

    print(f"\nSST-2 train.5k -> dev, MiniLM, batch 32, lr 5e-5, {args.epochs} epochs, seeds {args.seeds}")
    print("| variant | dev accuracy | layer sparsity | fit s |\n|---|---|---|---|")
    for variant, rows in results.items():
        name = {
            "dense": "dense",
            "sparse": f"gradual {args.target:.0%}",
            "from dense": f"dense + {args.recovery_epochs} epochs pruning to {args.target:.0%}, distilled",
        }[variant]
        accuracy, sparsity = cell([r["accuracy"] for r in rows]), cell([r["sparsity"] for r in rows])
        print(f"| {name} | {accuracy} | {sparsity} | {cell([r['fit_s'] for r in rows], 1.0)} |")
    gaps = [
        100 * (s["accuracy"] - d["accuracy"]) for d, s in zip(results["dense"], results[pruned], strict=True)
    ]
    print(f"per-seed gap (sparse - dense, points): {', '.join(f'{g:+.2f}' for g in gaps)}")


if __name__ == "__main__":
    main()
