"""Peak memory and wall time of ``python -m tasks predict`` against the size of the input.

Each row is one ``predict`` of ``configs/sst2.yaml``'s model on a text file of N generated
sentences (one per line), run as a child of a fresh wrapper process, so that the wrapper's
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` is that run's peak RSS alone. Features are tokenised
afresh in each row (a new cache directory per run), so the time includes featurisation.

    python benchmarks/predict_memory.py                               # 10k and 1M lines, a tiny model
    python benchmarks/predict_memory.py --lines 10000 100000          # other sizes
    python benchmarks/predict_memory.py --ckpt_path outputs/sst2/checkpoints/best.ckpt

Without ``--ckpt_path`` a tiny random BERT (2 layers, H=32, the real 30,522-token vocabulary) is
fine-tuned for one step with ``configs/sst2.yaml`` first: the model's compute is then small and
the table shows what the pipeline (reading, featurising, collecting, writing) holds. With the
shipped encoder (all-MiniLM-L6-v2) 1M lines take hours on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import FAST

ROOT = Path(__file__).resolve().parents[1]
WORDS = (
    "a warm funny moving dull lifeless mess film story great terrible plot acting the of and "
    "surprisingly tender bold clumsy score cast ending slow bright"
).split()
PEAK_RSS = """
import resource, subprocess, sys
code = subprocess.run([sys.executable, "-m", "tasks", *sys.argv[1:]], stdout=subprocess.DEVNULL,
                      stderr=subprocess.PIPE, text=True)
sys.stderr.write(code.stderr[-2000:] if code.returncode else "")
print(code.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def write_sentences(path: Path, count: int) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(count):
            length = 4 + (i * 7) % 17
            handle.write(" ".join(WORDS[(i * 13 + j * 5 + j * j) % len(WORDS)] for j in range(length)))
            handle.write("\n")


def tiny_checkpoint(work: Path) -> Path:
    """A tiny random BERT with the real vocabulary, fine-tuned one step on the SST-2 sample."""
    import torch

    from bert_core import BertConfig, BertModel, resolve_source

    encoder = work / "tiny_bert"
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        initializer_range=0.5,
    )
    BertModel(config).save_pretrained(encoder)
    shutil.copy(resolve_source("all-MiniLM-L6-v2").directory / "vocab.txt", encoder / "vocab.txt")
    (encoder / "tokenizer_config.json").write_text('{"do_lower_case": true}\n')
    run_dir = work / "fit"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tasks",
            "fit",
            "--config",
            str(ROOT / "configs" / "sst2.yaml"),
            "--model.pretrained",
            str(encoder),
            "--trainer.default_root_dir",
            str(run_dir),
            "--trainer.max_steps",
            "1",
            *FAST,
        ],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return run_dir / "checkpoints" / "best.ckpt"


def measure(ckpt: Path, lines: int, work: Path, batch_size: int) -> tuple[int, float, int]:
    """(peak RSS in kB, wall seconds, output lines) of one predict run on ``lines`` sentences."""
    texts = work / f"texts{lines}.txt"
    write_sentences(texts, lines)
    run_dir = work / f"predict{lines}"
    args = [
        "predict",
        "--config",
        str(ROOT / "configs" / "sst2.yaml"),
        "--ckpt_path",
        str(ckpt),
        "--data.predict_file",
        str(texts),
        "--data.eval_batch_size",
        str(batch_size),
        "--data.cache_dir",
        str(work / f"cache{lines}"),
        "--trainer.default_root_dir",
        str(run_dir),
        "--return_predictions",
        "false",
        *FAST,
    ]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *args], capture_output=True, text=True, cwd=ROOT, check=False
    )
    wall = time.perf_counter() - start
    code, peak = done.stdout.split()[-2:]
    if code != "0":
        raise SystemExit(f"predict on {lines} lines failed ({code}):\n{done.stderr}")
    with open(run_dir / "predictions.jsonl", "rb") as handle:
        written = sum(1 for _ in handle)
    texts.unlink()
    shutil.rmtree(work / f"cache{lines}", ignore_errors=True)
    return int(peak), wall, written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt_path", type=Path, help="an SST-2 checkpoint (default: fit a tiny one)")
    parser.add_argument("--lines", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--batch_size", type=int, default=256, help="--data.eval_batch_size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="predict_memory_") as tmp:
        work = Path(tmp)
        ckpt = args.ckpt_path.resolve() if args.ckpt_path else tiny_checkpoint(work)
        print(f"model: {ckpt if args.ckpt_path else 'tiny random BERT (2 layers, H=32), 1 step on SST-2'}")
        print(f"cpus: {os.cpu_count()}, eval batch size {args.batch_size}")
        print(f"{'lines':>10} | {'peak RSS (MB)':>13} | {'wall (s)':>8} | {'lines/s':>8} | output lines")
        print(f"{'-' * 10}-+-{'-' * 13}-+-{'-' * 8}-+-{'-' * 8}-+-------------")
        for lines in args.lines:
            peak, wall, written = measure(ckpt, lines, work, args.batch_size)
            print(
                f"{lines:>10,} | {peak / 1024:>13.0f} | {wall:>8.1f} | {lines / wall:>8.0f} | {written:,}",
                flush=True,
            )


if __name__ == "__main__":
    main()
