"""Multi-label classification: ours against the Hugging Face reference at equal recipe.

The data set is made from NER data: each sentence's labels are the entity types it mentions (0 to 4
of PER/ORG/LOC/MISC for CoNLL-2003), a real multi-label set with label co-occurrence and many
examples with no label at all.

    python benchmarks/multilabel.py sample        # (re)writes the shipped data/multilabel sample
    python benchmarks/multilabel.py run --seeds 1 2 3 --train 2000 --dev 1000 --epochs 2

``run`` takes the first ``--train`` sentences of CoNLL-2003 train and ``--dev`` of its valid set
(from ../shared), splits the dev sentences into a *tune* half (the validation file: thresholds are
chosen there) and a *test* half (scored), alternate sentences by default (``--split halves``: the
first and the second half, which come from different documents with a different label mix, so
thresholds tuned on one fit the other less well), and per seed fine-tunes all-MiniLM-L6-v2

* ours: ``python -m tasks fit --config configs/multilabel.yaml`` (the last checkpoint, whose
  thresholds the app chose on the tune half), then ``predict`` of the test half;
* reference: transformers' ``BertForSequenceClassification`` (``problem_type`` multi-label: BCE on
  a sigmoid per label) with ``Trainer``, thresholds chosen on the tune half by the same function;

with one recipe: learning rate 5e-5, batch 32, the same epochs, warm-up 10 % then linear decay,
weight decay 0.01 (not on biases/LayerNorm), AdamW eps 1e-8, gradient clipping 1.0, dropout 0.1,
max_seq_length 128. Both are scored on the test half by ``tasks.metrics.multilabel`` at 0.5 and
at the tuned thresholds; the table shows mean and sd over the seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from tasks.data.conll import read_conll, split_tag  # noqa: E402
from tasks.metrics.multilabel import best_thresholds, multilabel_metrics  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ner" / "conll2003"
LR, BATCH, WARMUP, DECAY, EPS, MAX_LEN = 5e-5, 32, 0.1, 0.01, 1e-8, 128


def multilabel_records(conll_path: Path, limit: int | None = None) -> list[dict]:
    """``{text, label}`` per sentence: the words joined by spaces, the sorted entity types tagged."""
    records = []
    for sentence in read_conll(conll_path).sentences[:limit]:
        types = sorted({split_tag(tag)[1] for tag in sentence.tags if tag != "O"})
        records.append({"text": " ".join(sentence.words), "label": types})
    return records


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def build_sample() -> None:
    """data/multilabel/{train,dev}.jsonl from the shipped NER sample, predict.txt from its raw texts."""
    out = ROOT / "data" / "multilabel"
    write_jsonl(out / "train.jsonl", multilabel_records(ROOT / "data" / "ner" / "train.conll"))
    write_jsonl(out / "dev.jsonl", multilabel_records(ROOT / "data" / "ner" / "dev.conll"))
    print(f"wrote {out}/train.jsonl, dev.jsonl")


def scores(probabilities: torch.Tensor, gold: torch.Tensor, thresholds: torch.Tensor, names) -> float:
    return multilabel_metrics(probabilities, gold, thresholds, names)["f1_micro"]


def gold_matrix(records: list[dict], names: list[str]) -> torch.Tensor:
    return torch.tensor([[float(n in r["label"]) for n in names] for r in records])


def ours(work: Path, seed: int, epochs: int, names: list[str], test: list[dict]) -> dict[str, float]:
    run = work / f"ours-{seed}"
    common = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    fit = [sys.executable, "-m", "tasks", "fit", "--config", "configs/multilabel.yaml"]
    fit += ["--data.train_file", work / "train.jsonl", "--data.validation_file", work / "tune.jsonl"]
    fit += ["--data.test_file", "null", "--data.predict_file", "null", "--seed_everything", str(seed)]
    fit += [
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.default_root_dir",
        run,
        "--data.labels",
        json.dumps(names),
    ]
    fit += [
        "--data.batch_size",
        str(BATCH),
        "--data.max_seq_length",
        str(MAX_LEN),
        "--model.learning_rate",
        str(LR),
    ]
    fit += [
        "--model.warmup_ratio",
        str(WARMUP),
        "--model.weight_decay",
        str(DECAY),
        "--model.adam_epsilon",
        str(EPS),
    ]
    fit += ["--trainer.gradient_clip_val", "1.0", *common]
    subprocess.run([str(a) for a in fit], cwd=ROOT, check=True)
    ckpt = run / "checkpoints" / "last.ckpt"
    out = run / "test-predictions.jsonl"
    predict = [
        sys.executable,
        "-m",
        "tasks",
        "predict",
        "--ckpt_path",
        ckpt,
        "--data.predict_file",
        work / "test.jsonl",
    ]
    predict += ["--data.predictions_file", out, "--trainer.default_root_dir", run, *common]
    subprocess.run([str(a) for a in predict], cwd=ROOT, check=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    probabilities = torch.tensor([[r["probabilities"][n] for n in names] for r in rows])
    thresholds = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]["thresholds"]
    gold = gold_matrix(test, names)
    return {"f1_micro@0.5": scores(probabilities, gold, torch.full_like(thresholds, 0.5), names),
            "f1_micro@tuned": scores(probabilities, gold, thresholds, names)}  # fmt: skip


def reference(work: Path, seed: int, epochs: int, names: list[str], splits: dict) -> dict[str, float]:
    import datasets
    import transformers
    from transformers import AutoTokenizer, BertForSequenceClassification, DataCollatorWithPadding, Trainer

    from bert_core import resolve_source

    model_dir = str(resolve_source("all-MiniLM-L6-v2").directory)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def encode(records: list[dict]) -> datasets.Dataset:
        encoded = tokenizer([r["text"] for r in records], truncation=True, max_length=MAX_LEN)
        return datasets.Dataset.from_dict({**encoded, "labels": gold_matrix(records, names).tolist()})

    transformers.set_seed(seed)
    model = BertForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(names), problem_type="multi_label_classification"
    )
    args = transformers.TrainingArguments(
        output_dir=str(work / f"hf-{seed}"), seed=seed, learning_rate=LR, per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=64, num_train_epochs=epochs, weight_decay=DECAY, adam_epsilon=EPS,
        warmup_steps=WARMUP, lr_scheduler_type="linear", eval_strategy="no", save_strategy="no",
        report_to=[], use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, logging_steps=10_000,
    )  # fmt: skip
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=encode(splits["train"]),
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    trainer.train()

    def probabilities(records: list[dict]) -> torch.Tensor:
        return torch.from_numpy(trainer.predict(encode(records)).predictions).float().sigmoid()

    thresholds = best_thresholds(probabilities(splits["tune"]), gold_matrix(splits["tune"], names))
    test, gold = probabilities(splits["test"]), gold_matrix(splits["test"], names)
    return {"f1_micro@0.5": scores(test, gold, torch.full_like(thresholds, 0.5), names),
            "f1_micro@tuned": scores(test, gold, thresholds, names)}  # fmt: skip


def run(args: argparse.Namespace) -> None:
    train = multilabel_records(SHARED / "train.txt", args.train)
    dev = multilabel_records(SHARED / "valid.txt", args.dev)
    if args.split == "halves":  # whole documents apart: tune and test differ in their label mix
        splits = {"train": train, "tune": dev[: len(dev) // 2], "test": dev[len(dev) // 2 :]}
    else:  # alternate sentences: tune and test drawn from the same documents
        splits = {"train": train, "tune": dev[0::2], "test": dev[1::2]}
    names = sorted({n for r in train for n in r["label"]})
    work = Path(args.work or tempfile.mkdtemp(prefix="multilabel-bench-"))
    for name, records in splits.items():
        write_jsonl(work / f"{name}.jsonl", records)
    results: dict[str, list[dict[str, float]]] = {"ours": [], "reference": []}
    for seed in args.seeds:
        results["ours"].append(ours(work, seed, args.epochs, names, splits["test"]))
        results["reference"].append(reference(work, seed, args.epochs, names, splits))
        print(json.dumps({"seed": seed, **{k: v[-1] for k, v in results.items()}}), flush=True)
    sizes = {k: len(v) for k, v in splits.items()}
    print(
        f"\nCoNLL-2003 entity types per sentence, MiniLM, {args.epochs} epochs, splits {sizes}, seeds {args.seeds}"
    )
    print("| system | micro-F1 @0.5 | micro-F1 @tuned thresholds |\n|---|---|---|")
    for system, rows in results.items():
        cells = []
        for key in ("f1_micro@0.5", "f1_micro@tuned"):
            values = [row[key] for row in rows]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{100 * statistics.mean(values):.2f} ± {100 * sd:.2f}")
        print(f"| {system} | {' | '.join(cells)} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("sample", help="rewrite data/multilabel from data/ner")
    bench = commands.add_parser("run", help="ours vs the HF reference over seeds")
    bench.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    bench.add_argument("--train", type=int, default=2000, help="first N train sentences")
    bench.add_argument("--dev", type=int, default=1000, help="first N valid sentences (half tune, half test)")
    bench.add_argument("--epochs", type=int, default=2)
    bench.add_argument(
        "--split",
        choices=("interleaved", "halves"),
        default="interleaved",
        help="the dev sentences into tune/test: alternate ones, or the first and second half",
    )
    bench.add_argument("--work", help="work directory (default: a new temporary one)")
    args = parser.parse_args()
    build_sample() if args.command == "sample" else run(args)


if __name__ == "__main__":
    main()
