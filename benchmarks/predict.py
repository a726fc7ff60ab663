"""``predict`` end to end against ``transformers.pipeline``, same weights, whole processes.

For SST-2 sentences (classification), MRPC train pairs (sentence pairs, GLUE's test layout), WNUT-17 test sentences as raw text (NER) and XQuAD
questions (QA) from ../shared/data: a checkpoint of the shipped config is made with a short fit
(speed does not depend on how well it is trained), exported with ``python -m tasks export --format
hf``, and then, interleaved, timed as a user runs them:

* ours: ``python -m tasks predict --config configs/X.yaml --ckpt_path best.ckpt --data.predict_file F``
  (through Lightning: a config is given), and ``python -m tasks predict --ckpt_path best.ckpt
  --data.predict_file F`` (the plain predictor, ``tasks.plain_predict``; ratios are against the
  first of ours that runs)
* reference: a script calling ``transformers.pipeline(task, model=export_dir)`` over the same
  inputs, at the pipeline's default batch size and at batch 64.

Each row is the median wall time of ``--repeats`` whole processes (start-up and model loading
included), the inputs per second, and peak RSS (the child's own, from ``wait4``).

    python benchmarks/predict.py [--repeats 3] [--tasks sst2,mrpc,ner] [--limit 5000] [--floor]

(``--tasks squad`` needs transformers 4.x: version 5 removed the question-answering pipeline.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import QUIET

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

PIPELINE_SCRIPT = r"""
import json, sys
from transformers import pipeline
task, model, inputs, batch = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
kwargs = {} if batch == "default" else {"batch_size": int(batch)}
pipe = pipeline(task.replace("text-pair-", "text-"), model=model, device=-1, **kwargs)
if task == "text-pair-classification":
    rows = [line.rstrip("\n").split("\t") for line in open(inputs, encoding="utf-8")][1:]
    out = pipe([{"text": row[3], "text_pair": row[4]} for row in rows])
elif task == "question-answering":
    items = [json.loads(line) for line in open(inputs, encoding="utf-8")]
    out = pipe(question=[i["question"] for i in items], context=[i["context"] for i in items])
else:
    texts = [line.rstrip("\n") for line in open(inputs, encoding="utf-8")]
    extra = {"aggregation_strategy": "first"} if task == "token-classification" else {}
    out = pipe(texts, **extra)
print(len(out), file=sys.stderr)
"""

# The lower bound of a ``predict`` that does not go through Lightning (``--floor``): the same
# checkpoint, tokenizer, token-budget batches and [CLS]-only encoder, with nothing else loaded (no
# LightningCLI, Trainer, datasets or torchmetrics). Classification only; a measurement, not a product path.
FLOOR_TASKS = ("sst2", "mrpc")
FLOOR_TOKEN_BUDGET = 4096  # the shipped --data.eval_tokens_per_batch
FLOOR_SCRIPT = r"""
import json, os, sys
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")  # as tasks.cli sets it for predict
import torch
from bert_core.config import BertConfig
from bert_core.model import BertModel
from bert_core.tokenizer import build_tokenizer
from tasks.checkpoint import PAYLOAD_KEY, check_payload, load_mapped
from tasks.sampling import TokenBudgetBatchSampler
checkpoint_path, inputs, output, budget = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
checkpoint = load_mapped(checkpoint_path)
payload, state = check_payload(checkpoint_path, checkpoint[PAYLOAD_KEY]), checkpoint["state_dict"]
labels = checkpoint["hyper_parameters"]["label_names"]
encoder = BertModel.uninitialised(BertConfig.from_dict(payload["bert_config"])).eval()
encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")})
weight, bias = state["classifier.weight"].clone(), state["classifier.bias"].clone()
del checkpoint, state
tokenizer = build_tokenizer(payload["vocab"], payload["do_lower_case"], model_max_length=512)
lines = open(inputs, encoding="utf-8").read().splitlines()
if inputs.endswith(".tsv"):  # GLUE's test layout: the two sentences in columns 4 and 5
    rows = [line.split("\t") for line in lines[1:]]
    encoded = tokenizer([r[3] for r in rows], [r[4] for r in rows], truncation=True, max_length=128)
else:
    encoded = tokenizer(lines, truncation=True, max_length=128, return_token_type_ids=True)
ids, types = encoded["input_ids"], encoded["token_type_ids"]
probabilities = [None] * len(ids)
with torch.inference_mode():  # the batches of our predict: TokenBudgetBatchSampler, padded to 8 as collate does
    for chosen in TokenBudgetBatchSampler([len(i) for i in ids], budget):
        width = 8 * -(-len(ids[chosen[0]]) // 8)  # the sampler puts the longest first
        batch = torch.zeros(len(chosen), width, dtype=torch.long)
        segments, mask = torch.zeros_like(batch), torch.zeros_like(batch)
        for row, i in enumerate(chosen):
            batch[row, : len(ids[i])] = torch.tensor(ids[i])
            segments[row, : len(ids[i])] = torch.tensor(types[i])
            mask[row, : len(ids[i])] = 1
        pooled = encoder(batch, mask, segments, skip_padding=True, cls_only=True).pooler_output
        for i, p in zip(chosen, torch.nn.functional.linear(pooled, weight, bias).softmax(-1)):
            probabilities[i] = p
with open(output, "w", encoding="utf-8") as f:
    for p in probabilities:
        record = {"label": labels[int(p.argmax())], "probabilities": dict(zip(labels, p.tolist()))}
        f.write(json.dumps(record) + "\n")
"""


def timed(command: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one whole process."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    stderr = process.stderr.read()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{stderr[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


def tasks_command(*args) -> list[str]:
    quiet = QUIET if str(args[0]) in ("fit", "validate", "test", "predict") else []
    return [sys.executable, "-m", "tasks", *map(str, args), *quiet]


def prepare(task: str, work: Path, limit: int) -> tuple[str, Path, Path, Path, int, str]:
    """(config, checkpoint, HF export, predict input file, number of inputs, pipeline task)."""
    work.mkdir(parents=True, exist_ok=True)
    if task == "sst2":
        config, pipeline_task = "configs/sst2.yaml", "text-classification"
        rows = (SHARED / "glue" / "SST-2" / "train.5k.tsv").read_text(encoding="utf-8").splitlines()[1:]
        sentences = [row.split("\t")[0] for row in rows]
        lines = (sentences * -(-limit // len(sentences)))[:limit]  # --limit 20000: the 5,000 four times
        source = work / "sentences.txt"
        source.write_text("\n".join(lines) + "\n", encoding="utf-8")
        fit = [
            "--data.train_file",
            SHARED / "glue" / "SST-2" / "dev.tsv",
            "--data.validation_file",
            SHARED / "glue" / "SST-2" / "dev.tsv",
        ]
    elif task == "mrpc":
        config, pipeline_task = "configs/mrpc.yaml", "text-pair-classification"
        rows = (SHARED / "glue" / "MRPC" / "train.tsv").read_text(encoding="utf-8-sig").splitlines()[1:]
        lines = rows[:limit]
        source = work / "pairs.tsv"  # GLUE's test layout: index, the two ids, the two sentences
        body = "".join(f"{i}\t" + "\t".join(row.split("\t")[1:]) + "\n" for i, row in enumerate(lines))
        source.write_text("index\t#1 ID\t#2 ID\t#1 String\t#2 String\n" + body, encoding="utf-8")
        fit = [
            "--data.train_file",
            SHARED / "glue" / "MRPC" / "dev.tsv",
            "--data.validation_file",
            SHARED / "glue" / "MRPC" / "dev.tsv",
        ]
    elif task == "ner":
        config, pipeline_task = "configs/ner.yaml", "token-classification"
        sentences, words = [], []
        for line in (SHARED / "ner" / "wnut17" / "test.conll").read_text(encoding="utf-8").splitlines():
            token = line.split("\t")[0].strip()
            if token:
                words.append(token)
            elif words:
                sentences.append(" ".join(words))
                words = []
        lines = sentences[:limit]
        source = work / "sentences.txt"
        source.write_text("\n".join(lines) + "\n", encoding="utf-8")
        fit = [
            "--data.train_file",
            SHARED / "ner" / "wnut17" / "dev.conll",
            "--data.validation_file",
            SHARED / "ner" / "wnut17" / "dev.conll",
        ]
    else:
        config, pipeline_task = "configs/squad.yaml", "question-answering"
        data = json.loads((SHARED / "qa" / "xquad.en.json").read_text(encoding="utf-8"))
        items = [
            {"id": qa["id"], "question": qa["question"], "context": paragraph["context"]}
            for article in data["data"]
            for paragraph in article["paragraphs"]
            for qa in paragraph["qas"]
        ][:limit]
        lines = items
        source = work / "questions.jsonl"
        source.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
        fit = [
            "--data.train_file",
            SHARED / "qa" / "xquad.en.json",
            "--data.validation_file",
            SHARED / "qa" / "xquad.en.json",
        ]
    run_dir = work / "fit"
    checkpoint = run_dir / "checkpoints" / "best.ckpt"
    if not checkpoint.is_file():
        timed(tasks_command("fit", "--config", config, *fit, "--trainer.max_steps", 2, "--trainer.limit_val_batches", 1,
                            "--trainer.default_root_dir", run_dir, "--overwrite", "true"))  # fmt: skip
    export = work / "hf"
    if not (export / "config.json").is_file():
        timed(
            tasks_command(
                "export", "--ckpt_path", checkpoint, "--format", "hf", "--output", export, "--overwrite"
            )
        )
    return config, checkpoint, export, source, len(lines), pipeline_task


def floor_agreement(out_dir: Path) -> str:
    """How closely the floor's probabilities match ours, record by record (it must compute the same)."""

    def probabilities(path: Path) -> list[list[float]]:
        lines = path.read_text(encoding="utf-8").splitlines()
        return [list(json.loads(line)["probabilities"].values()) for line in lines]

    ours, floor = probabilities(out_dir / "predictions.jsonl"), probabilities(out_dir / "floor.jsonl")
    if len(ours) != len(floor):
        return f"{len(floor)} records against our {len(ours)}"
    worst = max(abs(a - b) for x, y in zip(ours, floor) for a, b in zip(x, y))
    return f"{len(ours)} records, largest probability difference {worst:.1e}"


def _chosen(name: str, runners: str) -> bool:
    keys = {"ours": "ours (shipped", "plain": "ours, plain", "default": "default batch", "64": "batch 64"}
    return any(keys[key] in name for key in runners.split(",") if key in keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # squad: transformers 5 removed the question-answering pipeline; the row runs where it exists (4.x)
    parser.add_argument("--tasks", default="sst2,mrpc,ner")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=5000, help="inputs per task")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also time a predict without Lightning (classification tasks): what a split of the task classes would reach",
    )
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "benchmarks" / "predict")
    parser.add_argument(
        "--runners",
        default="ours,plain,default,64",
        help="which runners: ours (shipped config, Lightning), plain (--ckpt_path only, no Lightning), "
        "default / 64 (the pipeline at its default batch / at 64)",
    )
    args = parser.parse_args()
    print(
        f"# predict benchmark: load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, repeats {args.repeats}\n"
    )
    print("| task | inputs | runner | wall s (median) | inputs/s | ours / runner (speed) | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for task in args.tasks.split(","):
        config, checkpoint, export, source, count, pipeline_task = prepare(task, args.work / task, args.limit)
        out_dir = args.work / task / "predict"
        runners = {
            "ours (shipped config)": tasks_command(
                "predict",
                "--config",
                config,
                "--ckpt_path",
                checkpoint,
                "--data.predict_file",
                source,
                "--trainer.default_root_dir",
                out_dir,
                "--data.predictions_file",
                out_dir / "predictions.jsonl",
            ),  # fmt: skip
            "pipeline, default batch": [
                sys.executable,
                "-c",
                PIPELINE_SCRIPT,
                pipeline_task,
                str(export),
                str(source),
                "default",
            ],
            "pipeline, batch 64": [
                sys.executable,
                "-c",
                PIPELINE_SCRIPT,
                pipeline_task,
                str(export),
                str(source),
                "64",
            ],
        }
        if task != "squad":  # the command as users type it, which runs without Lightning
            runners["ours, plain (--ckpt_path only)"] = tasks_command(
                "predict", "--ckpt_path", checkpoint, "--data.predict_file", source,
                "--trainer.default_root_dir", out_dir, "--data.predictions_file", out_dir / "plain.jsonl",
            )  # fmt: skip
        runners = {name: command for name, command in runners.items() if _chosen(name, args.runners)}
        if args.floor and task in FLOOR_TASKS:
            runners["without Lightning (floor, not a product path)"] = [
                sys.executable,
                "-c",
                FLOOR_SCRIPT,
                str(checkpoint),
                str(source),
                str(out_dir / "floor.jsonl"),
                str(FLOOR_TOKEN_BUDGET),
            ]
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
        for _ in range(args.repeats):  # interleaved, so that load drifts hit every runner alike
            for name, command in runners.items():
                results[name].append(timed(command))
        reference = next(name for name in results if name.startswith("ours"))  # the first of ours
        ours = statistics.median(s for s, _ in results[reference])
        for name, runs in results.items():
            seconds = statistics.median(s for s, _ in runs)
            rss = max(r for _, r in runs)
            ratio = "1.00" if name == reference else f"{seconds / ours:.2f}x"
            print(
                f"| {task} | {count} | {name} | {seconds:.1f} | {count / seconds:.0f} | {ratio} | {rss:.0f} |"
            )
        if args.floor and task in FLOOR_TASKS:
            print(f"|  |  | (floor against ours: {floor_agreement(out_dir)}) |  |  |  |  |")
    print(f"\n(load average at the end {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
