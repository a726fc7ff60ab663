"""NER from annotation-tool files against CoNLL columns: the same sentences, the same recipe.

``convert`` writes a CoNLL file as doccano JSONL, Label Studio JSON or spans-jsonl (each sentence
a text, its words joined by spaces, its entities as character spans); the shipped samples under
data/ner were made with it:

    python benchmarks/spans.py convert data/ner/train.conll data/ner/train.doccano.jsonl --format doccano

``compare`` (the default) takes the first sentences of CoNLL-2003 (../shared/data/ner/conll2003),
writes them as CoNLL columns and as doccano JSONL, fits ``configs/ner.yaml`` (all-MiniLM-L6-v2)
on each with the same recipe and seeds, and prints validation F1 side by side: seqeval on words
for the columns, the character-level score for doccano (the words are cut again from the text).

    flock /tmp/bert-heavy.lock python benchmarks/spans.py [--train 2000] [--valid 500] [--seeds 42]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.data.conll import read_conll  # noqa: E402
from tasks.data.spans import SpanRecord, conll_as_text, write_span_file  # noqa: E402

CONLL2003 = ROOT.parent / "shared" / "data" / "ner" / "conll2003"


def convert(source: Path, target: Path, data_format: str, limit: int | None = None) -> int:
    """Write the first ``limit`` sentences of a CoNLL file as ``data_format``; returns how many."""
    sentences = read_conll(source).sentences[:limit]
    texts = [conll_as_text(sentence) for sentence in sentences]
    records = [
        SpanRecord(
            text,
            [],
            f"line {i}",
            i,
            {"data": {"text": text}} if data_format == "labelstudio" else {"text": text},
        )
        for i, (text, _) in enumerate(texts, 1)
    ]
    write_span_file(
        target, data_format, records, [spans for _, spans in texts], labelstudio_key="annotations"
    )
    return len(records)


def conll_subset(source: Path, target: Path, limit: int) -> None:
    """The first ``limit`` sentences of a CoNLL file as ``token TAB tag`` lines."""
    sentences = read_conll(source).sentences[:limit]
    blocks = ["\n".join(f"{w}\t{t}" for w, t in zip(s.words, s.tags, strict=True)) for s in sentences]
    target.write_text("\n\n".join(blocks) + "\n")


def fit(
    work: Path, name: str, train: Path, valid: Path, seed: int, args: argparse.Namespace, extra: list[str]
) -> float:
    run_dir = work / "runs" / f"{name}-{seed}"
    command = [sys.executable, "-m", "tasks", "fit", "--config", str(ROOT / "configs" / "ner.yaml")]
    command += ["--data.train_file", str(train), "--data.validation_file", str(valid)]
    command += ["--data.test_file", "null", "--data.predict_file", "null", "--seed_everything", str(seed)]
    command += ["--trainer.max_epochs", str(args.epochs), "--trainer.default_root_dir", str(run_dir)]
    command += ["--trainer.enable_progress_bar", "false", "--data.cache_dir", str(work / "cache"), *extra]
    subprocess.run(command, check=True, cwd=ROOT)
    return json.loads((run_dir / "metrics.json").read_text())["val/f1"]


def compare(args: argparse.Namespace) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, source, limit in (("train", "train.txt", args.train), ("valid", "valid.txt", args.valid)):
        conll_subset(CONLL2003 / source, work / f"{split}.conll", limit)
        convert(CONLL2003 / source, work / f"{split}.doccano.jsonl", "doccano", limit)
        files[split] = (work / f"{split}.conll", work / f"{split}.doccano.jsonl")
    scores: dict[str, list[float]] = {"conll": [], "doccano": []}
    for seed in args.seeds:
        scores["conll"].append(fit(work, "conll", files["train"][0], files["valid"][0], seed, args, []))
        doccano = ["--data.format", "doccano"]
        scores["doccano"].append(
            fit(work, "doccano", files["train"][1], files["valid"][1], seed, args, doccano)
        )
    print(
        f"\nCoNLL-2003 first {args.train} train / {args.valid} valid sentences, {args.epochs} epoch(s), seeds {args.seeds}"
    )
    for name, values in scores.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        shown = ", ".join(f"{100 * v:.2f}" for v in values)
        print(f"{name:8s} val/f1 {100 * statistics.mean(values):.2f} ± {100 * spread:.2f}  ({shown})")
    gaps = [100 * (d - c) for d, c in zip(scores["doccano"], scores["conll"], strict=True)]
    spread = statistics.stdev(gaps) if len(gaps) > 1 else 0.0
    shown = ", ".join(f"{g:+.2f}" for g in gaps)
    print(f"doccano - conll: {statistics.mean(gaps):+.2f} ± {spread:.2f} F1 per seed ({shown})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command")
    conversion = commands.add_parser("convert", help="a CoNLL file as an annotation-tool file")
    conversion.add_argument("source", type=Path)
    conversion.add_argument("target", type=Path)
    conversion.add_argument("--format", default="doccano", choices=("doccano", "labelstudio", "spans-jsonl"))
    conversion.add_argument("--limit", type=int, default=None, help="only the first sentences")
    for target in (parser, commands.add_parser("compare", help="fit on both and compare (default)")):
        target.add_argument("--train", type=int, default=2000, help="train sentences")
        target.add_argument("--valid", type=int, default=500, help="validation sentences")
        target.add_argument("--epochs", type=int, default=1)
        target.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[42])
        target.add_argument("--work", default="/tmp/bert-tasks-spans-bench")
    args = parser.parse_args()
    if args.command == "convert":
        print(f"{convert(args.source, args.target, args.format, args.limit)} records -> {args.target}")
    else:
        compare(args)


if __name__ == "__main__":
    main()
