"""Further pre-training and the feature-based approach, measured with the commands users run.

Three experiments on the data under ../shared/data, with the embedded all-MiniLM-L6-v2:

* english: tweets (WNUT-17 train text) as the domain corpus, held-out perplexity before and
  after ``fit --config configs/pretrain.yaml``, and after the same steps with the encoder frozen
  (all-MiniLM-L6-v2 ships no MLM head: the baseline's head is new, so this control tells what
  training the head alone gives and what adapting the encoder adds); then WNUT-17 NER fine-tuned from the original
  encoder and from ``<run dir>/pretrained/`` (entity F1 on dev and test).
* chinese: the Weibo messages (characters joined back into messages) with whole-word masking over
  jieba words; held-out perplexity before/after; Weibo NER from both encoders (dev F1).
* frozen: WNUT-17 NER fine-tuned vs frozen encoder with the last four layers concatenated vs
  frozen last layer (the BERT paper's Table 7 on a small model), entity F1 and wall time.
* electra: the tweets adapted with MLM (``--steps`` steps) and with ELECTRA
  (``configs/pretrain_electra.yaml``) for the same training time (the training loop's seconds,
  validation excluded, from ``benchmarks.timing.StepTimer``): ELECTRA's steps are those seconds
  over its step time, measured on a 10-step run first, so that its warm-up and decay span the run
  as MLM's do (``--trainer.max_time`` would leave the schedule set for ``max_epochs``). Then
  WNUT-17 NER from the base, the MLM-adapted and the ELECTRA-adapted encoder.

    python benchmarks/adaptation.py [--only english,chinese,frozen,control,electra] [--steps 200] [--seeds 42]
        [--epochs 3] [--ner_steps N]  (smoke: --only electra --steps 5 --epochs 1 --ner_steps 5)

Every run is a ``python -m tasks`` subprocess; run directories go under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from harness import QUIET

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "ner"
EPOCHS = [3]  # NER fine-tuning epochs (--epochs)
TIMED = ["--trainer.callbacks+=benchmarks.timing.StepTimer"]  # writes <run dir>/step_times.json
NER_STEPS = [-1]  # at most this many NER optimizer steps (--ner_steps; -1: the epochs decide)


def run(*args, out: Path) -> tuple[dict, float]:
    """``python -m tasks ARGS`` in ROOT; returns (metrics.json of the run, seconds)."""
    command = [sys.executable, "-m", "tasks", *map(str, args), *QUIET, "--trainer.default_root_dir", str(out)]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")
    record = out / "metrics.json"
    if args[0] in ("validate", "test"):  # evaluations write <run>/eval/<name>/, not over the fit's record
        record = max(out.glob("eval/*/metrics.json"), key=lambda path: path.stat().st_mtime)
    return json.loads(record.read_text()), seconds


def step_times(run_dir: Path) -> dict:
    """What ``benchmarks.timing.StepTimer`` measured in a fit: ``train_seconds``, ``train_steps``..."""
    return json.loads((run_dir / "step_times.json").read_text())


def conll_texts(path: Path, join: str, strip_digit: bool = False) -> list[str]:
    """The sentences of a CoNLL file as text: tokens joined by ``join`` (WNUT's separator lines
    that hold a single TAB count as blank; Weibo's characters carry a word-position digit)."""
    texts, words = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        token = line.split("\t")[0].strip()
        if not token:
            if words:
                texts.append(join.join(words))
            words = []
            continue
        words.append(token[:-1] if strip_digit and token[-1].isdigit() and len(token) > 1 else token)
    if words:
        texts.append(join.join(words))
    return texts


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def adaptation(
    name: str, corpus: Path, heldout: Path, out: Path, steps: int, extra: list[str]
) -> tuple[dict, dict, float, Path]:
    common = [
        "--config",
        "configs/pretrain.yaml",
        "--data.train_file",
        corpus,
        "--data.validation_file",
        heldout,
    ]
    common += ["--data.document_per_line", "true", "--data.batch_size", "16", *extra]
    before, _ = run("validate", *common, out=out / f"{name}-baseline")
    fit = [
        "fit",
        *common,
        "--trainer.max_steps",
        steps,
        "--trainer.max_epochs",
        "1000",
        "--model.learning_rate",
        "1e-4",
    ]
    fit += ["--overwrite", "true"]
    after, seconds = run(*fit, out=out / f"{name}-pretrain")
    return before, after, seconds, out / f"{name}-pretrain" / "pretrained"


def ner(
    train: Path, dev: Path, test: Path | None, pretrained: str, out: Path, seed: int, *extra
) -> tuple[dict, float]:
    args = [
        "fit",
        "--config",
        "configs/ner.yaml",
        "--model.pretrained",
        pretrained,
        "--seed_everything",
        seed,
    ]
    args += ["--data.train_file", train, "--data.validation_file", dev, "--data.batch_size", "32"]
    args += ["--trainer.max_epochs", EPOCHS[0], "--trainer.max_steps", NER_STEPS[0]]
    args += ["--overwrite", "true", *extra]
    metrics, seconds = run(*args, out=out)
    if test is not None:
        best = out / "checkpoints" / "best.ckpt"
        tested, _ = run(
            "test", "--config", "configs/ner.yaml", "--ckpt_path", best, "--data.test_file", test, out=out
        )
        metrics = {**metrics, **{k: v for k, v in tested.items() if k.startswith("test/")}}
    return metrics, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="english,chinese,frozen,control", help="also: electra")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--epochs", type=int, default=3, help="NER fine-tuning epochs")
    parser.add_argument("--ner_steps", type=int, default=-1, help="NER: stop after N steps (smoke runs)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks" / "adaptation")
    args = parser.parse_args()
    only, seeds = args.only.split(","), [int(s) for s in args.seeds.split(",")]
    EPOCHS[0], NER_STEPS[0] = args.epochs, args.ner_steps
    out = args.out
    load = os.getloadavg()[0]
    print(
        f"# adaptation benchmark: steps={args.steps} NER epochs={args.epochs} seeds={seeds} load average {load:.2f}\n"
    )
    wnut = SHARED / "wnut17"
    rows = []

    if "english" in only or "frozen" in only or "electra" in only:
        corpus = write_lines(out / "text" / "tweets.train.txt", conll_texts(wnut / "train.conll", " "))
        heldout = write_lines(out / "text" / "tweets.dev.txt", conll_texts(wnut / "dev.conll", " "))
    if "english" in only:
        before, after, seconds, pretrained = adaptation("tweets", corpus, heldout, out, args.steps, [])
        print(
            "| corpus | masking | held-out perplexity before | after | MLM accuracy before | after | pre-training time |"
        )
        print("|---|---|---|---|---|---|---|")
        print(
            f"| WNUT-17 tweets ({args.steps} steps) | token | {before['val/perplexity']:.1f} | {after['val/perplexity']:.1f} "
            f"| {before['val/mlm_accuracy']:.3f} | {after['val/mlm_accuracy']:.3f} | {seconds:.0f} s |\n"
        )
        for seed in seeds:
            for label, source in (("all-MiniLM-L6-v2", "all-MiniLM-L6-v2"), ("adapted", pretrained)):
                metrics, seconds = ner(
                    wnut / "train.conll",
                    wnut / "dev.conll",
                    wnut / "test.conll",
                    str(source),
                    out / f"wnut-{label}-{seed}",
                    seed,
                )
                rows.append(("WNUT-17", label, seed, metrics["val/f1"], metrics.get("test/f1"), seconds))

    if "electra" in only:  # MLM against ELECTRA for the same training time, each then fine-tuned on WNUT-17
        _, mlm, _, mlm_dir = adaptation("tweets", corpus, heldout, out, args.steps, TIMED)
        mlm_time = step_times(out / "tweets-pretrain")
        electra_fit = ["fit", "--config", "configs/pretrain_electra.yaml", "--data.train_file", corpus]
        electra_fit += [
            "--data.document_per_line", "true", "--data.batch_size", "16", "--trainer.max_epochs", "1000",
            "--overwrite", "true", *TIMED,
        ]  # fmt: skip
        # its step time, on a short run validated on the config's small held-out sample only
        run(*electra_fit, "--trainer.max_steps", min(10, args.steps), out=out / "tweets-electra-steptime")
        probe = step_times(out / "tweets-electra-steptime")
        steps = max(1, round(mlm_time["train_seconds"] * probe["train_steps"] / probe["train_seconds"]))
        validation = ["--data.validation_file", heldout]
        electra, _ = run(*electra_fit, *validation, "--trainer.max_steps", steps, out=out / "tweets-electra")
        electra_time = step_times(out / "tweets-electra")
        print("| objective | steps | training s | held-out |")
        print("|---|---|---|---|")
        print(
            f"| MLM | {mlm_time['train_steps']} | {mlm_time['train_seconds']:.0f} | MLM accuracy {mlm['val/mlm_accuracy']:.3f} |"
        )
        print(
            f"| ELECTRA | {electra_time['train_steps']} | {electra_time['train_seconds']:.0f} | RTD accuracy "
            f"{electra['val/rtd_accuracy']:.3f}, AUC {electra['val/rtd_auc']:.3f}, generator MLM accuracy "
            f"{electra['val/generator_mlm_accuracy']:.3f} |\n"
        )
        sources = (("all-MiniLM-L6-v2", "all-MiniLM-L6-v2"), ("MLM-adapted", mlm_dir))
        for seed in seeds:
            for label, source in (*sources, ("ELECTRA-adapted", out / "tweets-electra" / "pretrained")):
                metrics, seconds = ner(
                    wnut / "train.conll", wnut / "dev.conll", wnut / "test.conll", str(source),
                    out / f"wnut-{label}-{seed}", seed,
                )  # fmt: skip
                rows.append(("WNUT-17", label, seed, metrics["val/f1"], metrics.get("test/f1"), seconds))

    if "chinese" in only:
        weibo = SHARED / "weibo"
        corpus_zh = write_lines(
            out / "text" / "weibo.train.txt", conll_texts(weibo / "train.conll", "", strip_digit=True)
        )
        heldout_zh = write_lines(
            out / "text" / "weibo.dev.txt", conll_texts(weibo / "dev.conll", "", strip_digit=True)
        )
        extra = ["--data.masking", "whole_word", "--data.chinese_segmenter", "jieba"]
        before, after, seconds, pretrained_zh = adaptation(
            "weibo", corpus_zh, heldout_zh, out, args.steps, extra
        )
        print(
            "| corpus | masking | held-out perplexity before | after | MLM accuracy before | after | pre-training time |"
        )
        print("|---|---|---|---|---|---|---|")
        print(
            f"| Weibo messages ({args.steps} steps) | whole_word (jieba) | {before['val/perplexity']:.1f} "
            f"| {after['val/perplexity']:.1f} | {before['val/mlm_accuracy']:.3f} | {after['val/mlm_accuracy']:.3f} | {seconds:.0f} s |\n"
        )
        for seed in seeds:
            for label, source in (("all-MiniLM-L6-v2", "all-MiniLM-L6-v2"), ("adapted (wwm)", pretrained_zh)):
                metrics, seconds = ner(
                    weibo / "train.conll",
                    weibo / "dev.conll",
                    None,
                    str(source),
                    out / f"weibo-{label[:7]}-{seed}",
                    seed,
                )
                rows.append(("Weibo", label, seed, metrics["val/f1"], None, seconds))

    if "control" in only:  # head-only pre-training: the same steps with the encoder frozen
        print("| corpus | pre-training | held-out perplexity | MLM accuracy | time |")
        print("|---|---|---|---|---|")
        corpora = {
            "tweets": (conll_texts(wnut / "train.conll", " "), conll_texts(wnut / "dev.conll", " "), []),
            "weibo": (
                conll_texts(SHARED / "weibo" / "train.conll", "", strip_digit=True),
                conll_texts(SHARED / "weibo" / "dev.conll", "", strip_digit=True),
                ["--data.masking", "whole_word", "--data.chinese_segmenter", "jieba"],
            ),
        }
        for name, (train_text, dev_text, extra) in corpora.items():
            train = write_lines(out / "text" / f"{name}.train.txt", train_text)
            dev = write_lines(out / "text" / f"{name}.dev.txt", dev_text)
            common = [
                "--config",
                "configs/pretrain.yaml",
                "--data.train_file",
                train,
                "--data.validation_file",
                dev,
            ]
            common += ["--data.document_per_line", "true", "--data.batch_size", "16", *extra]
            fit = ["fit", *common, "--trainer.max_steps", args.steps, "--trainer.max_epochs", "1000"]
            fit += ["--model.learning_rate", "1e-4", "--overwrite", "true", "--model.freeze_encoder", "true"]
            metrics, seconds = run(*fit, out=out / f"{name}-head-only")
            print(
                f"| {name} | head only, encoder frozen ({args.steps} steps) | {metrics['val/perplexity']:.1f} "
                f"| {metrics['val/mlm_accuracy']:.3f} | {seconds:.0f} s |"
            )
        print()

    if "frozen" in only:
        for seed in seeds:
            if "english" not in only:
                metrics, seconds = ner(
                    wnut / "train.conll", wnut / "dev.conll", wnut / "test.conll", "all-MiniLM-L6-v2",
                    out / f"wnut-all-MiniLM-L6-v2-{seed}", seed,
                )  # fmt: skip
                rows.append(
                    ("WNUT-17", "all-MiniLM-L6-v2", seed, metrics["val/f1"], metrics.get("test/f1"), seconds)
                )
            for label, extra in (
                (
                    "frozen, last 4 concat",
                    ["--model.freeze_encoder", "true", "--model.head_layers", "[-1,-2,-3,-4]"],
                ),
                ("frozen, last layer", ["--model.freeze_encoder", "true", "--model.head_layers", "[-1]"]),
            ):
                metrics, seconds = ner(
                    wnut / "train.conll", wnut / "dev.conll", wnut / "test.conll", "all-MiniLM-L6-v2",
                    out / f"wnut-{label.split(',')[1].strip().replace(' ', '')}-{seed}", seed,
                    *extra, "--model.learning_rate", "1e-3",
                )  # fmt: skip
                rows.append(
                    (
                        "WNUT-17",
                        label + " (lr 1e-3)",
                        seed,
                        metrics["val/f1"],
                        metrics.get("test/f1"),
                        seconds,
                    )
                )

    print(f"| NER data ({args.epochs} epochs) | encoder | seed | dev F1 | test F1 | fit + validate time |")
    print("|---|---|---|---|---|---|")
    for data, label, seed, dev, test, seconds in rows:
        test_text = f"{test:.4f}" if test is not None else "-"
        print(f"| {data} | {label} | {seed} | {dev:.4f} | {test_text} | {seconds:.0f} s |")


if __name__ == "__main__":
    main()
