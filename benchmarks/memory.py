"""Peak memory (RSS) of a short ``fit`` of each shipped config against the Hugging Face reference.

Each row is two whole processes, one after the other, each the child of this script, whose peak
RSS ``os.wait4`` reports when it exits (``harness.timed``):

* ours: ``python -m tasks fit --config configs/X.yaml --trainer.max_steps N`` on the config's own
  data (the samples under data/), one validation of the whole dev file at the end, features
  tokenised afresh (a new cache directory);
* the reference: ``benchmarks/reference.py`` (transformers' ``Trainer`` + ``BertFor*``, what the
  Hugging Face example scripts run) on the same files with the same encoder (all-MiniLM-L6-v2),
  batch size, max_seq_length and number of steps, then one evaluation of the same dev file;
  padded as its example script ships (run_glue and run_qa: to max_seq_length; run_ner: each batch
  to its longest; run_mlm: full blocks).

``squad-xquad`` is the shipped SQuAD config on real paragraphs (XQuAD English from ../shared, split
by article as in benchmarks/finetune.py: 36 articles to train on, 12 to validate): the shipped
sample's paragraphs are short, real ones fill 384-token windows, which is what sets the peak.
The reference's ``--doc_stride`` is the overlap of windows (Hugging Face's reading), ours the
step between their starts (Google's): the same as in benchmarks/finetune.py.

    python benchmarks/memory.py                              # every row: about 15 minutes on 2 cores
    python benchmarks/memory.py --rows squad squad-xquad --steps 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from harness import QUIET, ROOT, _environment, minilm_directory, task_files, timed


@dataclass(frozen=True)
class Row:
    config: str
    reference_task: str  # benchmarks/reference.py --task
    padding: str  # the reference's, as its example script ships
    xquad: bool = False  # real paragraphs instead of the config's sample


ROWS = {
    "sst2": Row("configs/sst2.yaml", "sst2", "max_length"),
    "ner": Row("configs/ner.yaml", "ner", "dynamic"),
    "squad": Row("configs/squad.yaml", "qa", "max_length"),
    "squad-xquad": Row("configs/squad.yaml", "qa", "max_length", xquad=True),
    "pretrain": Row("configs/pretrain.yaml", "mlm", "max_length"),
}


def data_settings(config: str) -> dict:
    with open(ROOT / config, encoding="utf-8") as handle:
        return yaml.safe_load(handle)["data"]["init_args"]


def measure(name: str, row: Row, steps: int, work: Path) -> tuple[float, float, float, float]:
    """(our peak RSS MB, our seconds, the reference's peak RSS MB, its seconds) of one row."""
    data = data_settings(row.config)
    if row.xquad:
        train, evaluation = (str(path) for path in task_files("qa", work / "xquad"))
    else:
        train, evaluation = (str(ROOT / data[key]) for key in ("train_file", "validation_file"))
    batch, length = str(data["batch_size"]), str(data["max_seq_length"])
    env = _environment()
    ours = [
        sys.executable, "-m", "tasks", "fit", "--config", row.config,
        "--data.train_file", train, "--data.validation_file", evaluation,
        "--data.test_file", "null", "--data.predict_file", "null", "--data.cache_dir", work / name / "cache",
        "--trainer.max_steps", steps, "--trainer.default_root_dir", work / name / "ours", *QUIET,
    ]  # fmt: skip
    our_seconds, our_peak = timed([str(c) for c in ours], work / name / "ours.log", env)
    reference = [
        sys.executable, ROOT / "benchmarks" / "reference.py", "--task", row.reference_task,
        "--model", minilm_directory(), "--train_file", train, "--eval_file", evaluation,
        "--output", work / name / "reference.json", "--work", work / name / "reference",
        "--batch_size", batch, "--max_seq_length", length, "--max_steps", steps, "--padding", row.padding,
    ]  # fmt: skip
    if "max_query_length" in data:
        reference += ["--max_query_length", str(data["max_query_length"])]
    ref_seconds, ref_peak = timed([str(c) for c in reference], work / name / "reference.log", env)
    return our_peak, our_seconds, ref_peak, ref_seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=list(ROWS))
    parser.add_argument("--steps", type=int, default=3, help="training steps of each fit")
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}, {args.steps} training steps")
    print(
        "| config | batch x max_seq_length | ours: peak RSS (MB) | reference: peak RSS (MB) | ours / reference | wall s (ours / reference) |"
    )
    print("|---|---|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory(prefix="memory_") as tmp:
        for name in args.rows:
            row = ROWS[name]
            data = data_settings(row.config)
            ours, our_seconds, reference, ref_seconds = measure(name, row, args.steps, Path(tmp))
            print(
                f"| {name} | {data['batch_size']} x {data['max_seq_length']} | {ours:,.0f} | {reference:,.0f} "
                f"| {ours / reference:.2f} | {our_seconds:.0f} / {ref_seconds:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
