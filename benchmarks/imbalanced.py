"""Imbalanced binary classification: minority-class F1 with and without class weights and a tuned threshold.

The data set is SST-2 (../shared: train.5k, GLUE's training phrases, and dev, whole sentences)
with positive sentences subsampled so that they are 10 % of every split (`--positive_share`), a real imbalanced set with
a rare class of interest:

* train: rows 1-2,500 of train.5k (all negatives, positives drawn to 10 %),
* tune:  rows 2,501-3,750 of train.5k and dev's odd rows, the same way (the validation file: the
  threshold is chosen there),
* test:  rows 3,751-5,000 of train.5k and dev's even rows, the same way (scored; never seen by a fit).

Tune and test are drawn alike (phrases and whole sentences in the same mix, about 85 positives
each), so that a threshold chosen on one is a fair guess for the other: a tune split of phrases
only, scored on dev's sentences, moves the best threshold between the two.

Per seed, ``python -m tasks fit --config configs/sst2.yaml`` as a generic binary task (metrics:
accuracy and label 1's F1) with one recipe (all-MiniLM-L6-v2, learning rate 5e-5, batch 32, the
same epochs), in three variants:

* plain: cross-entropy, label 1 when its probability reaches 0.5;
* weighted: ``--model.class_weights balanced``;
* threshold: ``--model.tune_threshold true --model.threshold_metric f1``;
* weighted + threshold: also ``--model.tune_threshold true --model.threshold_metric f1``.

Each fit's last checkpoint predicts the test file; the table shows label 1's (the minority's)
precision, recall and F1 and the accuracy, mean ± sd over the seeds.

    nice python benchmarks/imbalanced.py --seeds 1 2 3 [--epochs 3] [--work DIR]

Given an earlier ``--work`` directory, finished runs are scored again rather than refitted.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "glue" / "SST-2"
POSITIVE_SHARE = 0.10
VARIANTS = {
    "plain": [],
    "weighted": ["--model.class_weights", "balanced"],
    "threshold": ["--model.tune_threshold", "true", "--model.threshold_metric", "f1"],
    "weighted + threshold": [
        "--model.class_weights",
        "balanced",
        "--model.tune_threshold",
        "true",
        "--model.threshold_metric",
        "f1",
    ],
}


def read_rows(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [tuple(line.rsplit("\t", 1)) for line in lines if line.strip()]  # type: ignore[misc]


def subsample(rows: list[tuple[str, str]], seed: int, share: float) -> list[tuple[str, str]]:
    """All negatives and as many positives (drawn with ``seed``) as make them ``share`` of the rows."""
    negatives = [r for r in rows if r[1] == "0"]
    positives = [r for r in rows if r[1] == "1"]
    wanted = round(len(negatives) * share / (1 - share))
    kept = set(random.Random(seed).sample(range(len(positives)), wanted))
    chosen = {id(r) for i, r in enumerate(positives) if i in kept}
    return [r for r in rows if r[1] == "0" or id(r) in chosen]  # the file's order


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> None:
    path.write_text("sentence\tlabel\n" + "".join(f"{s}\t{label}\n" for s, label in rows), encoding="utf-8")


def build_splits(work: Path, share: float) -> dict[str, list[tuple[str, str]]]:
    train, dev = read_rows(SST2 / "train.5k.tsv"), read_rows(SST2 / "dev.tsv")
    splits = {
        "train": subsample(train[:2500], 0, share),
        "tune": subsample(train[2500:3750] + dev[0::2], 1, share),
        "test": subsample(train[3750:] + dev[1::2], 2, share),
    }
    for name, rows in splits.items():
        write_tsv(work / f"{name}.tsv", rows)
    return splits


def minority_scores(predicted: list[str], gold: list[str]) -> dict[str, float]:
    tp = sum(p == g == "1" for p, g in zip(predicted, gold, strict=True))
    fp = sum(p == "1" != g for p, g in zip(predicted, gold, strict=True))
    fn = sum(g == "1" != p for p, g in zip(predicted, gold, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": accuracy}


def fit_and_score(work: Path, variant: str, seed: int, epochs: int, gold: list[str]) -> dict[str, float]:
    run = work / f"{variant.replace(' + ', '+')}-{seed}"
    out = run / "test-predictions.jsonl"
    if out.is_file():  # a finished run of an earlier, interrupted benchmark: scored again, not refitted
        return minority_scores([json.loads(line)["label"] for line in out.read_text().splitlines()], gold)
    shutil.rmtree(run, ignore_errors=True)  # an unfinished one starts again
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    data = ["--data.task", "classification", "--data.text_column", "sentence", "--data.label_column", "label"]
    fit = [sys.executable, "-m", "tasks", "fit", "--config", "configs/sst2.yaml", *data]
    fit += ["--data.train_file", work / "train.tsv", "--data.validation_file", work / "tune.tsv"]
    fit += ["--data.test_file", "null", "--data.predict_file", "null", "--seed_everything", str(seed)]
    fit += ["--data.batch_size", "32", "--model.learning_rate", "5e-5", "--trainer.max_epochs", str(epochs)]
    fit += ["--trainer.default_root_dir", run, *VARIANTS[variant], *quiet]
    subprocess.run([str(a) for a in fit], cwd=ROOT, check=True)
    predict = [sys.executable, "-m", "tasks", "predict", "--ckpt_path", run / "checkpoints" / "last.ckpt"]
    predict += ["--data.predict_file", work / "test.tsv", "--data.predictions_file", out]
    predict += ["--trainer.default_root_dir", run, *quiet]
    subprocess.run([str(a) for a in predict], cwd=ROOT, check=True)
    predicted = [json.loads(line)["label"] for line in out.read_text().splitlines()]
    return minority_scores(predicted, gold)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--positive_share", type=float, default=POSITIVE_SHARE, help="the rare class's share")
    parser.add_argument("--work", help="work directory (default: a new temporary one)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="imbalanced-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    splits = build_splits(work, args.positive_share)
    gold = [label for _, label in splits["test"]]
    results: dict[str, list[dict[str, float]]] = {v: [] for v in args.variants}
    for seed in args.seeds:
        for variant in args.variants:
            results[variant].append(fit_and_score(work, variant, seed, args.epochs, gold))
            print(json.dumps({"seed": seed, "variant": variant, **results[variant][-1]}), flush=True)
    sizes = {k: f"{len(v)} ({sum(label == '1' for _, label in v)} positive)" for k, v in splits.items()}
    print(
        f"\nSST-2, positives subsampled to {args.positive_share:.0%}, MiniLM, {args.epochs} epochs, {sizes}, seeds {args.seeds}"
    )
    print("| variant | minority F1 | precision | recall | accuracy |\n|---|---|---|---|---|")
    for variant, rows in results.items():
        cells = []
        for key in ("f1", "precision", "recall", "accuracy"):
            values = [row[key] for row in rows]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{100 * statistics.mean(values):.1f} ± {100 * sd:.1f}")
        print(f"| {variant} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
