"""Deployment: what distillation, int8 and head pruning cost in accuracy and buy in speed and size.

SST-2 (``../shared/data/glue/SST-2``: train.5k + dev) and WNUT-17 NER (``../shared/data/ner/wnut17``):

1. a teacher: ``fit`` of the shipped config (all-MiniLM-L6-v2, 6 layers) on the train file;
2. a 3-layer student: ``fit --config configs/distill_*.yaml --model.teacher <teacher best.ckpt>``;
3. int8: the teacher and the student validated with ``--model.quantize int8`` (dynamic int8 Linear
   layers, at load time; ``--int8_backend``, default ``torch.ao``: fbgemm's kernels, the fast ones on CPU);
4. SST-2 only: ``prune --heads 0.25`` of the teacher (head importance from the dev set, which is also
   the set scored here: an optimistic set-up, as in Michel et al.'s own experiments), not fine-tuned after.

Every model runs through the app's own commands in this process (``fit``/``prune`` as subprocesses,
``validate`` in-process): the dev metric is what ``validate`` reports. Speed: the models' forward
passes over the dev set's batches as ``predict`` makes them (features precomputed, batch
``--batch_size``), measured interleaved in ``--rounds`` rounds (best round per model), in sentences
per second; the ratio is to the fp32 teacher of the same run. File size: the checkpoint on disk
(int8: ``torch.save`` of the quantized module's state dict).

    flock /tmp/bert-heavy.lock python benchmarks/deploy.py            # ~15 minutes on 2 cores
    python benchmarks/deploy.py --skip_training                        # measure existing runs again

Compression (``--only sparsity``, SST-2): magnitude pruning. Each ``--sparsities`` value S is a
``fit`` of the SST-2 config with ``--model.sparsity_target S`` (Zhu & Gupta's gradual schedule while
fine-tuning; S = 0 is the dense fit), once per ``--seeds`` seed: dev accuracy (mean over the seeds,
each seed's in the note), the file size of the model's weights as safetensors, raw and gzipped
(level 6: the zeros compress, the other float32 weights hardly), and speed. Unstructured sparsity
gives NO speed-up here: the zeros are still multiplied by the same dense kernels (MKL/oneDNN GEMM
on this CPU); only a sparse kernel (or structured pruning: heads, layers) would turn zeros into time.

    nice python benchmarks/deploy.py --only sparsity --sparsities 0 0.5 0.7 0.9 --seeds 1
    nice python benchmarks/deploy.py --only sparsity --sparsities 0 0.5 --seeds 1 2 3   # the 1-point check

``--sparsity_schedule oneshot`` (a bounded run: one fit per seed) prunes the dense fit's best.ckpt
with ``prune --magnitude S`` instead, without training after: the lower bound of what pruning keeps.
A dense run already in --work (its best.ckpt) is reused, not fit again.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import platform
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from harness import FAST

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


@dataclass
class Row:
    name: str
    ckpt: Path
    int8: bool = False
    metric: float | None = None
    params: int | None = None
    size: int | None = None
    seconds: float | None = None
    sentences: int = 0
    note: str = ""
    model: object = None
    batches: list | None = None


def run(*args: str | Path) -> None:
    """A command of the app, as a user runs it."""
    command = [sys.executable, "-m", "tasks", *[str(a) for a in args]]
    print("$", " ".join(command[2:]), file=sys.stderr, flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    print(f"  ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)


def validate(row: Row, config: Path, data: list[str], metric: str, work: Path, int8_backend: str) -> None:
    """``validate`` in this process; keeps the loaded (maybe quantized) model and the dev batches."""
    from tasks.app import BertTasksCLI
    from tasks.cli import quiet_lightning

    quiet_lightning()
    args = ["validate", "--config", str(config), "--ckpt_path", str(row.ckpt), *data, *FAST]
    args += ["--trainer.default_root_dir", str(work / f"validate-{row.name.replace(' ', '_')}")]
    if row.int8:
        args += ["--model.quantize", "int8", "--model.quantize_backend", int8_backend]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cli = BertTasksCLI(args=args)
    except BaseException as err:  # e.g. no --model.quantize in this checkout
        row.note = (
            f"not available ({type(err).__name__}: {str(err).splitlines()[0][:80] if str(err) else ''})"
        )
        return
    row.metric = float(cli.trainer.callback_metrics[metric])
    row.model = cli.model.eval()
    row.batches = list(cli.datamodule.val_dataloader()[0])
    row.sentences = len(cli.datamodule.evaluations()["validation"][0].windows)  # examples (sentences)
    stored = torch.load(row.ckpt, map_location="cpu", weights_only=True)
    row.params = sum(t.numel() for t in stored["state_dict"].values())
    if row.int8:
        buffer = io.BytesIO()
        try:
            torch.save(row.model.state_dict(), buffer)
            row.size = buffer.tell()
        except Exception as err:  # a tensor subclass torch.save cannot write
            row.note = f"size n/a ({type(err).__name__})"
        backend = getattr(row.model, "int8_backend", None)
        row.note = row.note or (f"int8 via {backend}" if backend else "")
    else:
        row.size = row.ckpt.stat().st_size


def time_rows(rows: list[Row], rounds: int) -> None:
    """Forward passes over each model's dev batches, interleaved; the best round counts."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        for row in rows:
            if row.model is None:
                continue
            with torch.inference_mode():
                started = time.perf_counter()
                for batch in row.batches:
                    row.model(batch)
                elapsed = time.perf_counter() - started
            best[row.name] = min(best.get(row.name, float("inf")), elapsed)
    for row in rows:
        row.seconds = best.get(row.name)


def table(title: str, rows: list[Row], metric: str) -> str:
    reference = rows[0]
    lines = [
        f"\n{title}",
        f"| model | parameters | file size | predict sentences/s | speed vs teacher | dev {metric} | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        if row.model is None:
            lines.append(f"| {row.name} | | | | | | {row.note} |")
            continue
        speed = row.sentences / row.seconds
        ratio = reference.seconds / row.seconds
        lines.append(
            f"| {row.name} | {row.params / 1e6:.1f} M | {row.size / 2**20:.1f} MiB | {speed:.0f} | "
            f"{ratio:.2f}x | {100 * row.metric:.2f} | {row.note} |"
        )
    return "\n".join(lines)


def sst2_data(args: argparse.Namespace) -> list[str]:
    """The SST-2 files (train.5k, dev as validation and test) and batch size of every SST-2 run."""
    data_dir = Path(args.sst2)
    return [
        "--data.train_file",
        str(data_dir / "train.5k.tsv"),
        "--data.validation_file",
        str(data_dir / "dev.tsv"),
        "--data.test_file",
        str(data_dir / "dev.tsv"),
        "--data.batch_size",
        str(args.batch_size),
    ]


def sst2(args: argparse.Namespace, work: Path) -> str:
    data = sst2_data(args)
    teacher, student = work / "sst2_teacher", work / "sst2_student"
    pruned = work / "sst2_pruned.ckpt"
    if not args.skip_training:
        epochs = ["--trainer.max_epochs", str(args.epochs), "--overwrite", "true"]
        run(
            "fit",
            "--config",
            "configs/sst2.yaml",
            *data,
            *epochs,
            *args.encoder,
            *FAST,
            "--trainer.default_root_dir",
            teacher,
        )
        run(
            "fit", "--config", "configs/distill_sst2.yaml", "--model.teacher", teacher / "checkpoints" / "best.ckpt",
            "--model.student_layers", "3", *data, "--trainer.max_epochs", str(args.student_epochs),
            "--overwrite", "true", *FAST, "--trainer.default_root_dir", student,
        )  # fmt: skip
        run(
            "prune", "--ckpt_path", teacher / "checkpoints" / "best.ckpt", "--heads", "0.25",
            "--config", "configs/sst2.yaml", *data, "--output", pruned,
        )  # fmt: skip
    rows = [
        Row("teacher (6 layers, fp32)", teacher / "checkpoints" / "best.ckpt"),
        Row("student (3 layers, distilled)", student / "checkpoints" / "best.ckpt"),
        Row("teacher int8", teacher / "checkpoints" / "best.ckpt", int8=True),
        Row("student int8", student / "checkpoints" / "best.ckpt", int8=True),
        Row("teacher, 25% heads pruned", pruned),
    ]
    for row in rows:
        validate(row, ROOT / "configs" / "sst2.yaml", data, "val/accuracy", work, args.int8_backend)
    time_rows(rows, args.rounds)
    return table(f"SST-2 (dev, {rows[0].sentences} sentences)", rows, "accuracy")


def wnut(args: argparse.Namespace, work: Path) -> str:
    data_dir = Path(args.wnut)
    data = [
        "--data.train_file",
        str(data_dir / "train.conll"),
        "--data.validation_file",
        str(data_dir / "dev.conll"),
        "--data.test_file",
        str(data_dir / "test.conll"),
        "--data.batch_size",
        str(args.batch_size),
    ]
    teacher, student = work / "wnut_teacher", work / "wnut_student"
    if not args.skip_training:
        epochs = ["--trainer.max_epochs", str(args.ner_epochs), "--overwrite", "true"]
        run(
            "fit",
            "--config",
            "configs/ner.yaml",
            *data,
            *epochs,
            *args.encoder,
            *FAST,
            "--trainer.default_root_dir",
            teacher,
        )
        run(
            "fit", "--config", "configs/distill_ner.yaml", "--model.teacher", teacher / "checkpoints" / "best.ckpt",
            "--model.student_layers", "3", *data, "--trainer.max_epochs", str(args.ner_student_epochs),
            "--overwrite", "true", *FAST, "--trainer.default_root_dir", student,
        )  # fmt: skip
    rows = [
        Row("teacher (6 layers, fp32)", teacher / "checkpoints" / "best.ckpt"),
        Row("student (3 layers, distilled)", student / "checkpoints" / "best.ckpt"),
        Row("teacher int8", teacher / "checkpoints" / "best.ckpt", int8=True),
        Row("student int8", student / "checkpoints" / "best.ckpt", int8=True),
    ]
    for row in rows:
        validate(row, ROOT / "configs" / "ner.yaml", data, "val/f1", work, args.int8_backend)
    time_rows(rows, args.rounds)
    return table(f"WNUT-17 NER (dev, {rows[0].sentences} sentences; entity F1)", rows, "F1")


def compressed_sizes(ckpt: Path) -> tuple[int, int]:
    """The checkpoint's weights as one safetensors file: (raw bytes, gzip level 6 bytes)."""
    from safetensors.torch import save as save_safetensors

    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    raw = save_safetensors({k: v.contiguous() for k, v in state.items()})
    return len(raw), len(gzip.compress(raw, compresslevel=6))


def sparsity(args: argparse.Namespace, work: Path) -> str:
    """Gradual magnitude pruning to each of ``--sparsities`` on SST-2, over ``--seeds``."""
    data = sst2_data(args)
    rows, seeds = [], {}
    oneshot = args.sparsity_schedule == "oneshot"
    for target in args.sparsities:
        for seed in args.seeds:
            run_dir = work / f"sst2_sparsity{round(100 * target)}_seed{seed}"
            ckpt = run_dir / "checkpoints" / "best.ckpt"
            dense = work / f"sst2_sparsity0_seed{seed}" / "checkpoints" / "best.ckpt"
            if oneshot and target > 0:
                ckpt = work / f"sst2_oneshot{round(100 * target)}_seed{seed}.ckpt"
                if not args.skip_training:
                    run("prune", "--ckpt_path", dense, "--magnitude", str(target), "--output", ckpt)
            elif not args.skip_training and not (oneshot and ckpt.is_file()):
                run(
                    "fit", "--config", "configs/sst2.yaml", *data, "--trainer.max_epochs", str(args.epochs),
                    "--seed_everything", str(seed), "--model.sparsity_target", str(target), *args.encoder,
                    "--overwrite", "true", *FAST, "--trainer.default_root_dir", run_dir,
                )  # fmt: skip
            row = Row(f"{round(100 * target)}% sparse (seed {seed})", ckpt)
            validate(row, ROOT / "configs" / "sst2.yaml", data, "val/accuracy", work, args.int8_backend)
            seeds.setdefault(target, []).append(row)
        rows.append(seeds[target][0])
    time_rows(rows, args.rounds)
    lines = [
        f"\nSST-2 magnitude pruning (dev, {rows[0].sentences} sentences; "
        f"{'one-shot prune of the dense fit, no training after' if oneshot else 'gradual cubic schedule'}, "
        f"{args.epochs} epoch(s), seeds {' '.join(map(str, args.seeds))})",
        "| sparsity | encoder weights at zero | dev accuracy (mean) | per seed | safetensors | gzipped | "
        "predict sentences/s | speed vs dense |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for target, row in zip(args.sparsities, rows, strict=True):
        runs = [r for r in seeds[target] if r.metric is not None]
        mean = 100 * sum(r.metric for r in runs) / max(1, len(runs))
        raw, packed = compressed_sizes(row.ckpt)
        stored = torch.load(row.ckpt, map_location="cpu", weights_only=True).get("bert_tasks_sparsity")
        zeros = f"{100 * stored['sparsity']:.1f}%" if stored else "0%"
        lines.append(
            f"| {100 * target:.0f}% | {zeros} | {mean:.2f} | {' '.join(f'{100 * r.metric:.2f}' for r in runs)} | "
            f"{raw / 2**20:.1f} MiB | {packed / 2**20:.1f} MiB | {row.sentences / row.seconds:.0f} | "
            f"{rows[0].seconds / row.seconds:.2f}x |"
        )
    lines.append("(no dense-kernel speed-up from unstructured zeros on this CPU: the same GEMMs run)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(ROOT / "outputs" / "deploy_benchmark"), help="run directories")
    parser.add_argument("--sst2", default=str(SHARED / "glue" / "SST-2"))
    parser.add_argument("--wnut", default=str(SHARED / "ner" / "wnut17"))
    parser.add_argument("--epochs", type=int, default=1, help="SST-2 teacher epochs")
    parser.add_argument("--student_epochs", type=int, default=2, help="SST-2 student epochs")
    parser.add_argument("--ner_epochs", type=int, default=2, help="WNUT-17 teacher epochs")
    parser.add_argument("--ner_student_epochs", type=int, default=2, help="WNUT-17 student epochs")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--skip_training", action="store_true", help="measure the runs already in --work")
    parser.add_argument("--only", choices=("sst2", "wnut", "sparsity"), default=None)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.0, 0.5, 0.7, 0.9])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="seeds of the sparsity fits")
    parser.add_argument("--sparsity_schedule", choices=("gradual", "oneshot"), default="gradual")
    parser.add_argument(
        "--int8_backend",
        default="torch.ao",
        help="--model.quantize_backend of the int8 rows (torch.ao: fbgemm's kernels, the fast ones on CPU)",
    )
    parser.add_argument("--pretrained", default=None, help="the teachers' encoder (default: the configs')")
    args = parser.parse_args()
    args.encoder = ["--model.pretrained", args.pretrained] if args.pretrained else []
    if args.threads:
        torch.set_num_threads(args.threads)
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tables = []
    if args.only in (None, "sst2"):
        tables.append(sst2(args, work))
    if args.only in (None, "wnut"):
        tables.append(wnut(args, work))
    if args.only in (None, "sparsity"):
        tables.append(sparsity(args, work))
    print(
        f"# deploy benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.1f}, "
        f"total {time.perf_counter() - started:.0f} s"
    )
    print("\n".join(tables))


if __name__ == "__main__":
    main()
