"""The GPU path: our encoder against transformers (SDPA) on a BERT-base-shaped model, bf16.

Random weights (BERT-base shape: 12 layers, H=768, 12 heads, vocab 30,522), batches of mixed
lengths (uniform in [max/4, max], padded to the longest rounded up to 8, as the task data modules
pad) at 128 and 384 tokens, under ``torch.autocast(bfloat16)``:

* inference: sequences/s of a forward pass (eval, no grad): ours runs flash attention's
  variable-length kernel on the packed real tokens;
* training: sequences/s of forward + backward + fused AdamW step (train mode, hidden dropout 0.1,
  attention dropout ``--attention_dropout``): with 0.1 (BERT's) ours runs SDPA with ``dropout_p`` on
  length-grouped grids, with 0 the variable-length kernel (it has no dropout);

with the peak CUDA memory of each, ours and the reference interleaved in the same process.

    python benchmarks/gpu.py                 # on a CUDA machine
    python benchmarks/gpu.py --attention_dropout 0   # training through the varlen kernel too
    python benchmarks/gpu.py --device cpu --quick   # a smoke run of the script itself
    python benchmarks/gpu.py --gradient_checkpointing   # both sides recompute each layer in backward

Sharded training is measured through the app, not here (Lightning refuses FSDP on CPU, so this is
where it runs): ``python -m tasks fit --config configs/sst2.yaml --trainer.strategy fsdp
--trainer.devices N --trainer.precision bf16-mixed --model.gradient_checkpointing true`` against
the same with ``--trainer.strategy ddp``; the peak memory per GPU and the step time are the row
(tests/test_cuda.py checks that fit, resume, validate, predict and export work under FSDP).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bert_core import BertConfig, BertModel  # noqa: E402


def batch(B: int, T: int, vocab: int, device: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(T // 4, T + 1, (B,), generator=generator)
    width = int(-(-int(lengths.max()) // 8) * 8)
    ids = torch.randint(1000, vocab, (B, width), generator=generator)
    mask = (torch.arange(width)[None] < lengths[:, None]).long()
    return ids.to(device), mask.to(device)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(step, device: str, repeats: int) -> tuple[float, float]:
    """(median seconds per call, peak memory in MB) after two warm-up calls."""
    for _ in range(2):
        step()
    sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")
    return statistics.median(times), peak


def make_step(model, optimizer, is_reference: bool, mode: str, ids, mask, device: str):
    """One inference call, or one training step (forward, backward, AdamW), under bf16 autocast."""

    def forward():
        return model(ids, attention_mask=mask) if is_reference else model(ids, mask)

    def step() -> None:
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            if mode == "inference":
                with torch.no_grad():
                    forward()
                return
            out = forward()
            loss = out.last_hidden_state.float().pow(2).mean() + out.pooler_output.float().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: check the script runs")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--attention_dropout", type=float, default=0.1)
    parser.add_argument(
        "--gradient_checkpointing", action="store_true", help="training recomputes each layer"
    )
    args = parser.parse_args()
    from transformers import BertConfig as ReferenceConfig
    from transformers import BertModel as ReferenceBert

    device = args.device
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(
                "no CUDA device: run on a GPU machine (or --device cpu --quick to try the script)"
            )
        torch.set_float32_matmul_precision("high")
    sizes = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    shapes = [(64, 128), (32, 384)]
    if args.quick:
        sizes = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
        shapes, args.repeats = [(4, 32)], 2
    sizes["attention_probs_dropout_prob"] = args.attention_dropout
    config = BertConfig(vocab_size=30522, **sizes)
    torch.manual_seed(0)
    ours = BertModel(config).to(device)
    reference = ReferenceBert(ReferenceConfig(vocab_size=30522, attn_implementation="sdpa", **sizes)).to(
        device
    )
    reference.load_state_dict(ours.state_dict(), strict=False)
    if args.gradient_checkpointing:
        ours.gradient_checkpointing_enable()
        reference.gradient_checkpointing_enable()
    fused = device == "cuda"
    optimizers = {
        name: torch.optim.AdamW(model.parameters(), lr=1e-5, fused=fused or None)
        for name, model in (("ours", ours), ("transformers", reference))
    }
    print(
        f"# {torch.cuda.get_device_name() if device == 'cuda' else device}, torch {torch.__version__}, "
        f"bf16 autocast, attention dropout {args.attention_dropout} in training\n"
    )
    print(
        "| mode | batch x max len | ours seq/s | transformers seq/s | ratio | ours peak MB | transformers peak MB |"
    )
    print("|---|---|---|---|---|---|---|")
    for mode in ("inference", "training"):
        for B, T in shapes:
            ids, mask = batch(B, T, config.vocab_size, device, seed=T)
            row = {}
            for name, model in (("ours", ours), ("transformers", reference)):
                model.train(mode == "training")
                step = make_step(model, optimizers[name], name == "transformers", mode, ids, mask, device)
                row[name] = measure(step, device, args.repeats)
            (ours_s, ours_mb), (ref_s, ref_mb) = row["ours"], row["transformers"]
            print(
                f"| {mode} | {B} x {T} | {B / ours_s:.0f} | {B / ref_s:.0f} | {ref_s / ours_s:.2f}x "
                f"| {ours_mb:.0f} | {ref_mb:.0f} |"
            )


if __name__ == "__main__":
    main()
