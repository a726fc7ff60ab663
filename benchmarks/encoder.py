"""Encoder speed: our BertModel against transformers' BertModel (SDPA) on the real MiniLM-L6 weights.

Both models load the same files and run in this process, measured interleaved (ours, reference,
reference, ours, ...) so that machine noise hits both alike; each cell is the median of several
repeats. Two measurements per batch shape:

* forward: inference, eval mode, ``torch.no_grad()``;
* train step: train mode (dropout on, p=0.1 as in the config), forward + backward of a simple loss
  over the real tokens (gradients reset outside the timed region).

Rows are fixed shapes (batch x length, no padding) and mixed-length batches (lengths uniform in
[lo, hi], padded to the longest rounded up to a multiple of 8, as the task data modules collate).
The ratio is reference time / our time: above 1 means we are faster.

    python benchmarks/encoder.py            # full grid, a few minutes on 2 cores
    python benchmarks/encoder.py --quick    # smaller grid, about a minute

On a machine shared with other jobs, wall-clock times of multi-threaded runs swing widely (a
thread waiting for a core stalls every parallel op); ``--threads 1 --clock cpu`` (process CPU time
of a single-threaded run) is much steadier there. The header prints the load average.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import transformers

from bert_core import BertModel, resolve_source

SOURCE = "all-MiniLM-L6-v2"


@dataclass
class Case:
    label: str
    batch_size: int
    min_length: int
    max_length: int  # equal to min_length for a fixed shape

    def make_batch(self, vocab_size: int, seed: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        lengths = torch.randint(self.min_length, self.max_length + 1, (self.batch_size,), generator=generator)
        T = -(-int(lengths.max()) // 8) * 8 if self.min_length != self.max_length else self.max_length
        real = torch.arange(T)[None, :] < lengths[:, None]  # [B, T]
        # Ordinary word pieces (ids above the special tokens), [CLS]-like first token, pad id 0.
        input_ids = torch.randint(1000, vocab_size, (self.batch_size, T), generator=generator) * real
        token_type_ids = (
            (torch.arange(T)[None, :] >= lengths[:, None] // 2) & real
        ).long()  # a sentence pair
        return {"input_ids": input_ids, "attention_mask": real.long(), "token_type_ids": token_type_ids}


FULL_GRID = [
    Case("8 x 32", 8, 32, 32),
    Case("32 x 32", 32, 32, 32),
    Case("8 x 128", 8, 128, 128),
    Case("32 x 128", 32, 128, 128),
    Case("8 x 256", 8, 256, 256),
    Case("4 x 512", 4, 512, 512),
    Case("32 x U[16,128]", 32, 16, 128),
    Case("16 x U[32,256]", 16, 32, 256),
    Case("64 x U[8,64]", 64, 8, 64),
]
QUICK_GRID = [
    Case("8 x 32", 8, 32, 32),
    Case("16 x 128", 16, 128, 128),
    Case("16 x U[16,128]", 16, 16, 128),
]


def forward_step(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Callable[[], None]:
    def step() -> None:
        with torch.no_grad():
            model(**batch)

    return step


def train_step(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Callable[[], None]:
    real = batch["attention_mask"].bool()

    def step() -> None:
        out = model(**batch)
        # A loss over real tokens and the pooled output, like a tagging + classification head.
        loss = out.last_hidden_state[real].square().mean() + out.pooler_output.sum(-1).mean()
        loss.backward()

    return step


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def timed(step: Callable[[], None], model: torch.nn.Module, clock: Callable[[], float]) -> float:
    model.zero_grad(set_to_none=True)
    start = clock()
    step()
    return clock() - start


def measure(
    ours: torch.nn.Module, ref: torch.nn.Module, make_step, batch, repeats: int, clock: Callable[[], float]
) -> tuple[float, float]:
    """Median seconds of one step for ours and for the reference, interleaved, after a warm-up.

    Cheap cells get more repeats (up to 4x), so that small shapes are not decided by one hiccup.
    """
    steps = {"ours": make_step(ours, batch), "ref": make_step(ref, batch)}
    models = {"ours": ours, "ref": ref}
    warmup = max(timed(steps[name], models[name], clock) for name in steps)
    repeats *= min(4, max(1, int(0.5 / max(warmup, 1e-3))))
    times: dict[str, list[float]] = {"ours": [], "ref": []}
    for repeat in range(repeats):
        order = ("ours", "ref") if repeat % 2 == 0 else ("ref", "ours")  # cancel drift between the two
        for name in order:
            times[name].append(timed(steps[name], models[name], clock))
    return statistics.median(times["ours"]), statistics.median(times["ref"])


def check_parity(ours: torch.nn.Module, ref: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """Max abs difference of the last hidden state on real tokens (eval): a benchmark of a wrong model is moot."""
    ours.eval()
    ref.eval()
    with torch.no_grad():
        mine = ours(**batch).last_hidden_state
        theirs = ref(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    return (mine[real] - theirs[real]).abs().max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller grid with fewer repeats")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed repeats per cell (default 5, quick 3)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time (default); cpu: process CPU time, steadier on a busy machine",
    )
    args = parser.parse_args()
    clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 5)
    grid = QUICK_GRID if args.quick else FULL_GRID

    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    directory = resolve_source(SOURCE).directory
    ours = BertModel.from_pretrained(SOURCE)
    ref = transformers.BertModel.from_pretrained(str(directory), attn_implementation="sdpa")
    vocab_size = ours.config.vocab_size

    print(
        f"# {SOURCE} ({ours.config.num_hidden_layers} layers, H={ours.config.hidden_size}, "
        f"{ours.config.num_attention_heads} heads) | torch {torch.__version__}, transformers "
        f"{transformers.__version__} | {torch.get_num_threads()} threads | {platform.processor() or platform.machine()}"
    )
    print(
        f"# {args.clock} clock, median of >= {repeats} interleaved repeats; ratio = reference / ours "
        f"(> 1: ours faster) | load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"# parity on a mixed batch (max abs, real tokens): "
        f"{check_parity(ours, ref, Case('', 8, 8, 64).make_batch(vocab_size, seed=0)):.1e}"
    )
    header = (
        f"| {'batch':16s} | {'real/padded tokens':>18s} | {'fwd ours ms':>11s} | {'fwd ref ms':>10s} | "
        f"{'fwd ratio':>9s} | {'train ours ms':>13s} | {'train ref ms':>12s} | {'train ratio':>11s} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for index, case in enumerate(grid):
        batch = case.make_batch(vocab_size, seed=index)
        tokens = f"{int(batch['attention_mask'].sum())}/{batch['input_ids'].numel()}"
        ours.eval()
        ref.eval()
        fwd_ours, fwd_ref = measure(ours, ref, forward_step, batch, repeats, clock)
        ours.train()
        ref.train()
        train_ours, train_ref = measure(ours, ref, train_step, batch, repeats, clock)
        print(
            f"| {case.label:16s} | {tokens:>18s} | {fwd_ours * 1e3:11.1f} | {fwd_ref * 1e3:10.1f} | "
            f"{fwd_ref / fwd_ours:9.2f} | {train_ours * 1e3:13.1f} | {train_ref * 1e3:12.1f} | "
            f"{train_ref / train_ours:11.2f} |",
            flush=True,
        )
    print(f"# load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
