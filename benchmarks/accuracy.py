"""Accuracy at equal recipe: our ``fit`` against the Hugging Face example pipelines over seeds.

Same tasks, data and weights as benchmarks/finetune.py (``benchmarks/harness.py``: MRPC train -> dev,
WNUT-17 train -> test, XQuAD split by article), the same recipe on both sides (learning rate, batch,
epochs, max_seq_length, weight decay 0.01 on all but biases and LayerNorms, 10% linear warm-up then
linear decay, gradient clipping at 1.0, seed), each side's own defaults otherwise (ours: AdamW
epsilon 1e-6 as Google's BERT, constrained Viterbi decoding for NER; the reference: Trainer's fused
AdamW with epsilon 1e-8, argmax tags). Both score the final weights on the held-out file (ours
validates once, at the end of the fit). The reference pads each batch to its longest, which
computes what run_glue's max-length padding computes.

For NER the same checkpoint is also scored with ``--model.decoding argmax`` (what the reference
does), and ``--data.document_context true`` adds a row where asked (``--document_context``).

    flock /tmp/bert-heavy.lock python benchmarks/accuracy.py [--tasks ner,mrpc,qa] [--seeds 42,43,44]
        [--runs short,full] [--document_context] [--epsilon]

Results are kept under ``--work`` and reused (``--fresh`` trains again).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from harness import (
    QUIET,
    ROOT,
    Recipe,
    _environment,
    load_average,
    mean_and_spread,
    run_ours,
    run_reference,
    task_files,
)

# short: a few hundred steps; full: the example scripts' epochs (run_glue and run_ner: 3, run_qa's
# README and the BERT paper's SQuAD 2.0 recipe: 2). Batch 16 for all: more steps per epoch of the
# small train sets (WNUT-17 3,394 tweets, MRPC 3,668 pairs, 36 XQuAD articles).
RECIPES = {
    "short": {
        "ner": Recipe("ner", epochs=2, batch_size=16),  # 426 steps
        "mrpc": Recipe("mrpc", epochs=1, batch_size=16),  # 230 steps
        "qa": Recipe("qa", epochs=1, batch_size=16, max_seq_length=384),  # about 60 steps
    },
    "full": {
        "ner": Recipe("ner", epochs=3, batch_size=16),  # 639 steps
        "mrpc": Recipe("mrpc", epochs=3, batch_size=16),  # 690 steps
        "qa": Recipe("qa", epochs=2, batch_size=16, max_seq_length=384),  # 114 steps
    },
}
# to percent: our metrics are fractions; reference.py's too, but for QA (percent, as HF's)
REFERENCE_SCALE = {"mrpc": 100, "ner": 100, "qa": 1}


def argmax_score(result: dict, work: Path) -> float:
    """Our NER checkpoint of ``result`` validated again with per-word argmax tags (entity F1)."""
    run_dir = Path(result["run_dir"])
    kept = run_dir / "argmax.json"
    if kept.is_file():
        return json.loads(kept.read_text())["val/f1"]
    _, held_out = task_files("ner", work)
    out_dir = run_dir / "argmax"
    command = [
        sys.executable, "-m", "tasks", "validate", "--config", "configs/ner.yaml",
        "--ckpt_path", run_dir / "checkpoints" / "best.ckpt", "--data.validation_file", held_out,
        "--model.decoding", "argmax", "--trainer.default_root_dir", out_dir, *QUIET,
    ]  # fmt: skip
    subprocess.run([str(c) for c in command], cwd=ROOT, env=_environment(), check=True, capture_output=True)
    score = json.loads((out_dir / "metrics.json").read_text())["val/f1"]
    kept.write_text(json.dumps({"val/f1": score}))
    return score


def row(task: str, run: str, name: str, values: list[float], reference: list[float] | None) -> str:
    mean, spread = mean_and_spread(values)
    cells = f"| {task} | {run} | {name} | {mean:.1f} ± {spread:.1f} | " + ", ".join(
        f"{v:.1f}" for v in values
    )
    if reference is None:
        return cells + " | |"
    return cells + f" | {mean - mean_and_spread(reference)[0]:+.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="ner,mrpc,qa")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--runs", default="short")
    parser.add_argument("--document_context", action="store_true", help="NER: also a document-context row")
    parser.add_argument(
        "--epsilon", action="store_true", help="also a row of ours with the reference's AdamW epsilon (1e-8)"
    )
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "benchmarks" / "finetune")
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"# accuracy at equal recipe: load average {load_average():.2f}, seeds {seeds}\n")
    lines = []
    for run in args.runs.split(","):
        for task in args.tasks.split(","):
            recipe = RECIPES[run][task]
            steps = None
            reference, ours, argmax, context, epsilon = [], [], [], [], []
            for seed in seeds:
                seeded = replace(recipe, seed=seed)
                theirs = run_reference(seeded, args.work, "dynamic", False, fresh=args.fresh)
                mine = run_ours(seeded, args.work, fresh=args.fresh)
                steps = mine["train_steps"]
                reference.append(next(iter(theirs["metrics"].values())) * REFERENCE_SCALE[task])
                ours.append(next(iter(mine["metrics"].values())) * 100)
                if task == "ner":
                    argmax.append(argmax_score(mine, args.work) * 100)
                    if args.document_context:
                        extra = ["--data.document_context", "true"]
                        with_context = run_ours(seeded, args.work, extra, "context", fresh=args.fresh)
                        context.append(with_context["metrics"]["f1"] * 100)
                if args.epsilon:
                    extra = ["--model.adam_epsilon", "1e-8"]
                    with_epsilon = run_ours(seeded, args.work, extra, "eps1e-8", fresh=args.fresh)
                    epsilon.append(next(iter(with_epsilon["metrics"].values())) * 100)
            label = f"{run} ({recipe.epochs} epochs, batch {recipe.batch_size}, {steps} steps)"
            lines.append(
                row(
                    task,
                    label,
                    "reference (HF Trainer" + (", argmax)" if task == "ner" else ")"),
                    reference,
                    None,
                )
            )
            lines.append(row(task, label, "ours" + (" (Viterbi)" if task == "ner" else ""), ours, reference))
            if argmax:
                lines.append(row(task, label, "ours, --model.decoding argmax", argmax, reference))
            if context:
                lines.append(row(task, label, "ours, --data.document_context true", context, reference))
            if epsilon:
                lines.append(row(task, label, "ours, --model.adam_epsilon 1e-8", epsilon, reference))
    print("| task | run | runner | mean ± sd | per seed | ours - reference |")
    print("|---|---|---|---:|---|---:|")
    print("\n".join(lines))
    print(
        "\nmetric: NER entity F1 (seqeval, conlleval's reading) on WNUT-17 test; MRPC F1 of the "
        f"paraphrase class on dev; QA SQuAD F1 on the 12 held-out XQuAD articles. load average {load_average():.2f}"
    )


if __name__ == "__main__":
    main()
