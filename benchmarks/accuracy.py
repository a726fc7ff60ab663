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

``--tasks conll2003``: NER on CoNLL-2003 English (``../shared/data/ner/conll2003``, or
``--conll2003 DIR`` holding ``train.txt`` and ``valid.txt``: four columns, ``-DOCSTART-`` between
documents), scored on ``valid`` by conlleval's rules (seqeval's default mode), at the example
script's recipe (run_ner.py: 3 epochs, learning rate 5e-5; batch 32, max_seq_length 128, our
windows for longer sentences); ours with ``--data.document_context true`` is always a row of its own.

    flock /tmp/bert-heavy.lock python benchmarks/accuracy.py [--tasks ner,mrpc,qa,conll2003]
        [--seeds 42,43,44] [--runs short,full] [--document_context] [--epsilon] [--conll2003 DIR]

Results are kept under ``--work`` and reused (``--fresh`` trains again).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import harness
from harness import (
    QUIET,
    ROOT,
    SHARED,
    Recipe,
    _environment,
    load_average,
    mean_and_spread,
    run_ours,
    run_reference,
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
# CoNLL-2003 (14,041 training sentences): the NER recipe of run_ner.py, our NER config on both sides.
RECIPES["short"]["conll2003"] = Recipe("ner", epochs=1, batch_size=32)  # 439 steps
RECIPES["full"]["conll2003"] = Recipe("ner", epochs=3, batch_size=32)  # 1,317 steps
CONLL2003 = SHARED / "ner" / "conll2003"
# to percent: our metrics are fractions; reference.py's too, but for QA (percent, as HF's)
REFERENCE_SCALE = {"mrpc": 100, "ner": 100, "qa": 1, "conll2003": 100}


@contextlib.contextmanager
def ner_files(task: str, directory: Path) -> Iterator[None]:
    """For ``conll2003``, the harness's NER files are CoNLL-2003's ``train.txt`` -> ``valid.txt``
    (both sides read them through ``harness.task_files``) while the block runs."""
    wnut_files = harness.task_files
    if task == "conll2003":
        for name in ("train.txt", "valid.txt"):
            if not (directory / name).is_file():
                raise SystemExit(
                    f"{directory / name}: not found (--conll2003 DIR holds train.txt and valid.txt)"
                )
        harness.task_files = lambda t, work: (
            (directory / "train.txt", directory / "valid.txt") if t == "ner" else wnut_files(t, work)
        )
    try:
        yield
    finally:
        harness.task_files = wnut_files


def argmax_score(result: dict, work: Path) -> float:
    """Our NER checkpoint of ``result`` validated again with per-word argmax tags (entity F1)."""
    run_dir = Path(result["run_dir"])
    kept = run_dir / "argmax.json"
    if kept.is_file():
        return json.loads(kept.read_text())["val/f1"]
    _, held_out = harness.task_files("ner", work)
    out_dir = run_dir / "argmax"
    command = [
        sys.executable, "-m", "tasks", "validate", "--config", "configs/ner.yaml",
        "--ckpt_path", run_dir / "checkpoints" / "best.ckpt", "--data.validation_file", held_out,
        "--model.decoding", "argmax", "--trainer.default_root_dir", out_dir, *QUIET,
    ]  # fmt: skip
    subprocess.run([str(c) for c in command], cwd=ROOT, env=_environment(), check=True, capture_output=True)
    # validate writes into the run's eval/<name>/ (the run: --trainer.default_root_dir)
    written = max(out_dir.glob("eval/*/metrics.json"), key=lambda p: p.stat().st_mtime)
    score = json.loads(written.read_text())["val/f1"]
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
    parser.add_argument(
        "--conll2003", type=Path, default=CONLL2003, help="CoNLL-2003's train.txt and valid.txt"
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
            # CoNLL-2003 runs are NER runs on other files: kept apart from WNUT-17's under --work.
            work = args.work / task if task == "conll2003" else args.work
            steps = None
            reference, ours, argmax, context, epsilon = [], [], [], [], []
            for seed in seeds:
                seeded = replace(recipe, seed=seed)
                with ner_files(task, args.conll2003):
                    theirs = run_reference(seeded, work, "dynamic", False, fresh=args.fresh)
                    mine = run_ours(seeded, work, fresh=args.fresh)
                    steps = mine["train_steps"]
                    reference.append(next(iter(theirs["metrics"].values())) * REFERENCE_SCALE[task])
                    ours.append(next(iter(mine["metrics"].values())) * 100)
                    if recipe.task == "ner":
                        argmax.append(argmax_score(mine, work) * 100)
                        if args.document_context or task == "conll2003":
                            extra = ["--data.document_context", "true"]
                            with_context = run_ours(seeded, work, extra, "context", fresh=args.fresh)
                            context.append(with_context["metrics"]["f1"] * 100)
                    if args.epsilon:
                        extra = ["--model.adam_epsilon", "1e-8"]
                        with_epsilon = run_ours(seeded, work, extra, "eps1e-8", fresh=args.fresh)
                        epsilon.append(next(iter(with_epsilon["metrics"].values())) * 100)
            label = f"{run} ({recipe.epochs} epochs, batch {recipe.batch_size}, {steps} steps)"
            lines.append(
                row(
                    task,
                    label,
                    "reference (HF Trainer" + (", argmax)" if recipe.task == "ner" else ")"),
                    reference,
                    None,
                )
            )
            lines.append(
                row(task, label, "ours" + (" (Viterbi)" if recipe.task == "ner" else ""), ours, reference)
            )
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
        "\nmetric: NER entity F1 (seqeval, conlleval's reading) on WNUT-17 test (conll2003: on CoNLL-2003 "
        "valid); MRPC F1 of the "
        f"paraphrase class on dev; QA SQuAD F1 on the 12 held-out XQuAD articles. load average {load_average():.2f}"
    )


if __name__ == "__main__":
    main()
