"""How long ``python -m tasks predict`` of 2 lines takes, against ``python -c "import torch"``.

A predict of a few lines is start-up: the interpreter, torch's import (which this project cannot
make faster), reading the checkpoint, building the model and tokenizer, one forward pass, the
files. The two commands run alternately, ``--runs`` times each, so that both see the same machine;
the table gives the medians and what predict adds to torch's import.

    python benchmarks/startup.py --ckpt_path outputs/sst2/checkpoints/best.ckpt [--runs 9]

The checkpoint should be one a current ``fit`` wrote (earlier ones store the vocabulary as a list
of 30,522 strings, about 0.2 s more to unpickle).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINES = ["a gripping , funny and moving film", "the plot is thin and the acting worse"]


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", required=True, help="a task checkpoint written by fit")
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="startup-bench-"))
    lines = work / "two.txt"
    lines.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    commands = {
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "python -m tasks predict (2 lines)": [
            sys.executable, "-m", "tasks", "predict", "--ckpt_path", args.ckpt_path,
            "--data.predict_file", str(lines), "--data.predictions_file", str(work / "predictions.jsonl"),
        ],
    }  # fmt: skip
    print(f"# start-up: load average {os.getloadavg()[0]:.2f}, {args.runs} runs each, alternating")
    times: dict[str, list[float]] = {name: [] for name in commands}
    for command in commands.values():  # one unmeasured run each: the file cache
        seconds(command)
    for _ in range(args.runs):
        for name, command in commands.items():
            times[name].append(seconds(command))
    print("| command | median s | min s | max s |\n|---|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")
    added = statistics.median(times[list(commands)[1]]) - statistics.median(times[list(commands)[0]])
    print(f"\npredict adds {added:.2f} s to torch's import (medians); load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
