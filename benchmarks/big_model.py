"""Peak memory and step time of a BERT-large-shaped encoder (random init: 24 layers, H 1024, 16
heads, intermediate 4096) training at 512 tokens: plain, with activation checkpointing
(``--model.gradient_checkpointing true``), and checkpointing under bf16 autocast.

Each variant runs in its own process. A step is forward + backward of a sentence-classification
loss on ``--batch`` rows of ``--tokens`` real tokens, dropout 0.1 (training mode). Memory:

* ``activations MB``: the peak RSS of the steps after the first, above the RSS just before them
  (the weights and their gradient buffers allocated; sampled every 2 ms from /proc, glibc told to
  return freed blocks at once): what the activations and the backward's temporaries take, which
  is what checkpointing changes;
* ``peak RSS MB``: the whole process's peak over those steps (weights, gradients, activations;
  an AdamW state would add twice the weights).

Step time: the mean of the steps after the first (the first one touches the gradient buffers'
pages, warms the kernels and imports what checkpointing uses: ~100 MB of code that stays).

    python benchmarks/big_model.py                 # 24 layers: 2 x 2 steps of 2-7 min on 2 cores
    python benchmarks/big_model.py --layers 4 --tokens 256   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "plain": {"checkpointing": False, "bf16": False},
    "checkpointing": {"checkpointing": True, "bf16": False},
    "checkpointing + bf16": {"checkpointing": True, "bf16": True},
}


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakSampler:
    """The highest RSS seen while the block runs (sampled every 2 ms on a thread)."""

    def __enter__(self) -> PeakSampler:
        self.peak, self._done = rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.002):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def child(args: argparse.Namespace) -> dict:
    """One variant, in this process: the measured numbers."""
    import torch

    from bert_core import BertConfig, BertModel

    variant = VARIANTS[args.variant]
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=1024,
        num_hidden_layers=args.layers,
        num_attention_heads=16,
        intermediate_size=4096,
        max_position_embeddings=512,
    )
    model = BertModel(config).train()
    model.gradient_checkpointing_enable(variant["checkpointing"])
    head = torch.nn.Linear(1024, 2)
    for p in [*model.parameters(), *head.parameters()]:
        p.grad = torch.zeros_like(p)  # the gradient buffers, allocated before the measured step
    ids = torch.randint(1000, 30000, (args.batch, args.tokens))
    labels = torch.randint(0, 2, (args.batch,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant["bf16"]):
            pooled = model(ids, torch.ones_like(ids), cls_only=True).pooler_output
            loss = torch.nn.functional.cross_entropy(head(pooled).float(), labels)
        loss.backward()

    start = time.perf_counter()
    step()  # warm-up: pages of the gradient buffers, kernels, the modules checkpointing imports
    first = time.perf_counter() - start
    before, times = rss_mb(), []
    with PeakSampler() as sampler:
        for _ in range(args.steps - 1):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    return {
        "variant": args.variant,
        "activations_mb": sampler.peak - before,
        "peak_rss_mb": sampler.peak,
        "first_step_s": first,
        "step_s": sum(times) / len(times),
        "steps": args.steps,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2, help="steps per variant, the first one a warm-up")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--force_bf16", action="store_true", help="run the bf16 row on any CPU")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # the child's
    args = parser.parse_args()
    args.steps = max(2, args.steps)  # one warm-up, then the measured ones
    if args.variant:
        print(json.dumps(child(args)))
        return
    load = os.getloadavg()[0]
    rows, skipped = [], []
    for name in args.variants:
        if VARIANTS[name]["bf16"] and not cpu_has_bf16() and not args.force_bf16:
            skipped.append(name)  # hours here: see cpu_has_bf16
            continue
        command = [sys.executable, __file__, "--variant", name, "--layers", str(args.layers)]
        command += ["--batch", str(args.batch), "--tokens", str(args.tokens), "--steps", str(args.steps)]
        # Allocations above 64 KiB mmapped, so that a free returns them to the system at once: RSS
        # then follows the live tensors, not glibc's high-water mark of reused chunks.
        env = dict(os.environ, PYTHONPATH=str(ROOT), MALLOC_MMAP_THRESHOLD_="65536")
        out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"... {name} done", file=sys.stderr, flush=True)
    if not rows:
        return
    plain = rows[0]
    shape = f"{args.layers} layers, H 1024, batch {args.batch} x {args.tokens} tokens"
    print(f"BERT-large shape ({shape}); load average {load:.2f} -> {os.getloadavg()[0]:.2f}")
    print("| variant | activations MB | peak RSS MB | step s | vs plain (activations, step) |")
    print("|---|---:|---:|---:|---|")
    for row in rows:
        ratio = (
            f"x{row['activations_mb'] / plain['activations_mb']:.2f}, x{row['step_s'] / plain['step_s']:.2f}"
        )
        print(
            f"| {row['variant']} | {row['activations_mb']:,.0f} | {row['peak_rss_mb']:,.0f} | "
            f"{row['step_s']:.1f} | {ratio} |"
        )

    for name in skipped:
        print(f"| {name} | not run: this CPU has no bf16 instructions (--force_bf16 runs it) | | | |")


def cpu_has_bf16() -> bool:
    """Whether the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX). Without, torch's bf16
    matmul takes a slow path: a 1024 x 1024 x 4096 product took 56.6 s against 0.43 s in fp32 on
    this project's 2-core AVX2 EPYC, so bf16 autocast is for GPUs (and such CPUs) only."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


if __name__ == "__main__":
    main()
