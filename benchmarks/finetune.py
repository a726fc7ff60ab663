"""Fine-tuning speed end to end: our ``fit`` against the Hugging Face example pipelines, same data,
weights (all-MiniLM-L6-v2), recipe and seed, one invocation, whole processes.

For each task (``benchmarks/harness.py``: MRPC, WNUT-17 NER, XQuAD QA split by article) it runs

* ours: ``python -m tasks fit --config configs/X.yaml`` (one validation, at the end);
* the reference as shipped: run_glue and run_qa pad every feature to max_seq_length, run_ner pads
  each batch to its longest (``benchmarks/reference.py --padding max_length|dynamic``);
* the reference at its best: dynamic padding + ``group_by_length``;

and prints one table: training examples/s and real (non-pad) tokens/s inside the training loop,
evaluation examples/s, the whole process's wall time and peak RSS, the task metric, our speed over
each reference's (real tokens/s), and the share of this machine's fp32 matmul rate the training
reaches on real tokens. That rate is measured in the same run (the best of a square 2048 GEMM and
the encoder's own GEMM shapes); a training step on a sequence of n real tokens counts
``6 x W x n + 12 x layers x H x n^2`` FLOPs (W: the encoder's weight-matrix parameters, the
embeddings excluded because they are looked up, not multiplied; the second term is attention's
scores and weighted sum, forward and backward, over real tokens only). Then our per-phase
breakdown of the training loop (``benchmarks/timing.py``).

    flock /tmp/bert-heavy.lock python benchmarks/finetune.py [--tasks mrpc,ner,qa] [--fresh]
    python benchmarks/finetune.py --compile_only   # the --model.compile rows alone

``--compile`` adds the rows of ``--model.compile true`` against eager (``compile_rows``): the
training step (forward, backward) of the same encoder on the same batches of mixed lengths, the
compile time (what the compiled run spends beyond its steady steps: compiling and recompiling
for new attention groupings) apart from the steady-state step time.

Runs are kept under ``--work`` (results/*.json); a second call prints the table again without
training unless ``--fresh``. The reference needs ``accelerate`` (``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from harness import ROOT, Recipe, load_average, minilm_directory, run_ours, run_reference

# One epoch each at the BERT paper's batch sizes (QA: 16 windows of 384 tokens per step on 2 cores).
RECIPES = {
    "mrpc": Recipe("mrpc", epochs=1, batch_size=32, max_seq_length=128),
    "ner": Recipe("ner", epochs=1, batch_size=32, max_seq_length=128),
    "qa": Recipe("qa", epochs=1, batch_size=16, max_seq_length=384),
}
SHIPPED_PADDING = {"mrpc": "max_length", "ner": "dynamic", "qa": "max_length"}
PHASES = ("data", "forward", "backward", "optimizer")


def matmul_rate() -> float:
    """This machine's fp32 GEMM rate in FLOP/s: the best of a square GEMM and the encoder's shapes."""
    import torch

    best = 0.0
    for m, k, n in ((2048, 2048, 2048), (4096, 384, 1536), (4096, 1536, 384), (4096, 384, 1152)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            a @ b
        repeats = 10
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * m * k * n * repeats / (time.perf_counter() - start))
    return best


def encoder_shape() -> tuple[int, int, int]:
    """(weight-matrix parameters W, layers, H) of all-MiniLM-L6-v2."""
    config = json.loads((minilm_directory() / "config.json").read_text())
    hidden, inner, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    return layers * (4 * hidden * hidden + 2 * hidden * inner), layers, hidden


def training_flops(real_tokens: int, sum_squared_lengths: int) -> float:
    weights, layers, hidden = encoder_shape()
    return 6 * weights * real_tokens + 12 * layers * hidden * sum_squared_lengths


def compile_rows(steps: int = 12, batch_size: int = 32, max_len: int = 128) -> list[str]:
    """``--model.compile true`` against eager: all-MiniLM-L6-v2 in training mode, ``steps`` batches
    of mixed real lengths (uniform in [max_len/4, max_len], the same batches for both), forward +
    backward of a [CLS] loss. Steady step: the median of the last half of the steps; compile time:
    the compiled run's total minus ``steps`` steady steps."""
    import statistics
    import sys

    import torch

    sys.path.insert(0, str(ROOT))  # run as a script: benchmarks/ is on the path, the project is not
    from bert_core import BertModel

    def run(compiled: bool) -> tuple[float, float]:
        torch.manual_seed(0)
        model = BertModel.from_pretrained(minilm_directory()).train()
        if compiled:
            model.compile_layers()
        generator = torch.Generator().manual_seed(0)
        times = []
        for _ in range(steps):
            lengths = torch.randint(max_len // 4, max_len + 1, (batch_size,), generator=generator)
            width = int(-(-int(lengths.max()) // 8) * 8)
            ids = torch.randint(1000, 30000, (batch_size, width), generator=generator)
            mask = (torch.arange(width)[None] < lengths[:, None]).long()
            start = time.perf_counter()
            model(ids * mask, mask, cls_only=True).pooler_output.pow(2).sum().backward()
            model.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
        steady = statistics.median(times[steps // 2 :])
        return steady, sum(times) - steps * steady

    eager, _ = run(False)
    compiled, compile_seconds = run(True)
    torch._dynamo.reset()
    shape = f"{batch_size} x <= {max_len}, {steps} steps"
    return [
        f"| eager | {shape} | {eager * 1000:.0f} | - | 1.00x |",
        f"| compiled (inductor, dynamic) | {shape} | {compiled * 1000:.0f} | {compile_seconds:.0f} "
        f"| {eager / compiled:.2f}x |",
    ]


def print_compile_rows(steps: int) -> None:
    load = load_average()
    rows = compile_rows(steps)
    print(
        f"\n--model.compile, all-MiniLM-L6-v2 training step (load average {load:.2f} -> {load_average():.2f}):\n"
    )
    print("| encoder | batch | steady step ms | compile s | speed-up |")
    print("|---|---|---:|---:|---:|")
    print("\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="mrpc,ner,qa")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "benchmarks" / "finetune")
    parser.add_argument("--fresh", action="store_true", help="train again even where a result is kept")
    parser.add_argument("--compile", action="store_true", help="also the --model.compile rows")
    parser.add_argument("--compile_only", action="store_true", help="only the --model.compile rows")
    parser.add_argument("--compile_steps", type=int, default=12)
    args = parser.parse_args()
    if args.compile_only:
        print_compile_rows(args.compile_steps)
        return
    start_load = load_average()
    # Measured with the runs it is compared to: kept beside them, measured again with --fresh.
    kept = args.work / "matmul_rate.json"
    if kept.is_file() and not args.fresh:
        stored = json.loads(kept.read_text())
        rate, start_load = stored["flops"], stored["load_average"]
    else:
        rate = matmul_rate()
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(json.dumps({"flops": rate, "load_average": start_load}))
    print(
        f"# fine-tuning benchmark: load average {start_load:.2f} at the start; fp32 matmul rate {rate / 1e9:.0f} GFLOP/s\n"
    )
    rows, breakdowns = [], []
    for task in args.tasks.split(","):
        recipe = RECIPES[task]
        ours = run_ours(recipe, args.work, fresh=args.fresh)
        shipped = run_reference(recipe, args.work, SHIPPED_PADDING[task], False, fresh=args.fresh)
        best = run_reference(recipe, args.work, "dynamic", True, fresh=args.fresh)
        # The attention term for every runner from our count: the same tokeniser and truncation.
        squared = ours["train_sum_squared_lengths"] / ours["train_real_tokens"]
        our_speed = ours["train_real_tokens"] / ours["train_seconds"]
        for name, result in (("ours", ours), ("reference, as shipped", shipped), ("reference, best", best)):
            speed = result["train_real_tokens"] / result["train_seconds"]
            flops = training_flops(result["train_real_tokens"], round(squared * result["train_real_tokens"]))
            metric = next(iter(result["metrics"].values()))
            # to percent: our metrics are fractions, reference.py's too but for QA (percent, as HF's)
            scale = 1 if (task == "qa" and name != "ours") else 100
            padding = result["variant"] or "packed"
            rows.append(
                f"| {task} | {name} ({padding}) | {result['train_examples'] / result['train_seconds']:.1f} "
                f"| {speed:.0f} | {result['eval_examples'] / result['eval_seconds']:.1f} "
                f"| {result['wall_seconds']:.0f} | {result['peak_rss_mb']:.0f} | {metric * scale:.1f} "
                f"| {'' if name == 'ours' else f'{our_speed / speed:.2f}x'} "
                f"| {100 * flops / result['train_seconds'] / rate:.0f}% |"
            )
        seconds = {phase: ours[phase] for phase in PHASES}
        other = ours["train_seconds"] - sum(seconds.values())
        breakdowns.append(
            f"| {task} | {ours['train_steps']} | {ours['train_seconds']:.1f} | "
            + " | ".join(f"{1000 * ours[p] / ours['train_steps']:.0f}" for p in PHASES)
            + f" | {1000 * other / ours['train_steps']:.0f} | {ours['validation']:.1f} | {ours['sanity_check']:.1f} "
            f"| {ours['train_real_tokens'] / ours['train_padded_tokens']:.2f} |"
        )
    print(
        "| task | runner (padding) | train examples/s | train real tokens/s | eval examples/s | wall s "
        "| peak RSS MB | metric | ours / runner (real tokens/s) | matmul share |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print("\nOur training loop per step (ms), and the validation inside fit (s):\n")
    print(
        "| task | steps | train s | data | forward | backward | optimizer | other | validation s "
        "| sanity check s | real / padded tokens |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(breakdowns))
    print(
        "\nmetric: MRPC F1 of the paraphrase class, NER entity F1 (seqeval), QA SQuAD F1; "
        f"load average {load_average():.2f} at the end"
    )
    if args.compile:
        print_compile_rows(args.compile_steps)


if __name__ == "__main__":
    main()
