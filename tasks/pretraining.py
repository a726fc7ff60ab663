"""Further pre-training on domain text: masked LM (token, whole-word or span masking) and optional NSP.

Data: ``data.corpus`` reads documents, the tokenizer cuts their sentences into tokens (with the
word each belongs to), ``features.pretraining`` builds sequences (NSP pairs or packed text) once
and masks every batch anew; the validation split's masks are fixed by a seed, so its metrics
compare from epoch to epoch and run to run. The module runs the MLM head on the masked
positions only and writes ``<run dir>/pretrained/`` (HF format, MLM head included) when fit ends.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import sys
import warnings
from bisect import bisect_right
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F

from bert_core import BertForPreTraining
from bert_core.checkpoint import read_state_dict
from bert_core.model import PreTrainingHeads, init_weights
from bert_core.sources import resolve_source
from bert_core.vocab import write_vocab_files

from .checkpoint import is_task_checkpoint, read_weights
from .data.corpus import iter_documents
from .datamodule import Prepared, TaskDataModule, check_at_least
from .evaluation import Evaluation
from .features import pretraining as features
from .io import DataError, UserError, fsync_directory, fsync_tree
from .module import TaskModule
from .sampling import environment_seed

TASK = "pretraining"


class PreTrainingDataModule(TaskDataModule):
    """Domain text for masked LM (and NSP).

    Args:
        document_per_line: each line of a text file is a document (default: Google's format, one
            sentence per line and a blank line between documents). ``.jsonl`` files hold one
            document per record, in ``text_field``.
        mlm_probability: share of the real tokens chosen for prediction.
        max_predictions_per_seq: at most this many chosen tokens per sequence.
        masking: token, whole_word (every sub-token of a chosen word) or span (SpanBERT's
            contiguous word spans, geometric lengths p=0.2 clipped at 10 words).
        chinese_segmenter: ``jieba`` groups Chinese characters into words for whole-word and span
            masking (Chinese-BERT-wwm); the model still sees characters. Default: the tokenizer's
            words (each CJK character is one).
        short_seq_prob: NSP only: share of documents whose pairs target a random shorter length.
        nsp: build sentence pairs with next-sentence labels; set from ``--model.nsp`` by the CLI.
        validation_seed: fixes the validation masks and pairs.
    """

    stored_settings = (
        "max_seq_length",
        "masking",
        "mlm_probability",
        "max_predictions_per_seq",
        "chinese_segmenter",
        "short_seq_prob",
        "nsp",
        "validation_seed",
        "document_per_line",
        "text_field",
    )
    feature_functions = (features.mask_sequence,)
    task = TASK
    label_names = None

    def __init__(
        self,
        document_per_line: bool = False,
        text_field: str = "text",
        mlm_probability: float = 0.15,
        max_predictions_per_seq: int = 20,
        masking: str = "token",
        chinese_segmenter: str | None = None,
        short_seq_prob: float = 0.1,
        nsp: bool = False,
        validation_seed: int = 12345,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if not 0.0 < mlm_probability < 1.0:
            raise UserError(f"--data.mlm_probability must be in (0, 1), not {mlm_probability}")
        check_at_least("max_predictions_per_seq", max_predictions_per_seq, 1)
        if masking not in features.MASKING:
            raise UserError(f"--data.masking must be one of {', '.join(features.MASKING)}, not {masking!r}")
        if chinese_segmenter not in (None, "jieba"):
            raise UserError(f"--data.chinese_segmenter must be jieba (or unset), not {chinese_segmenter!r}")
        if not 0.0 <= short_seq_prob <= 1.0:
            raise UserError(f"--data.short_seq_prob must be in [0, 1], not {short_seq_prob}")
        if nsp:
            check_at_least(
                "max_seq_length", self._max_seq_length, 5, "[CLS], two [SEP] and a token of each side"
            )
        if max_predictions_per_seq < round(self._max_seq_length * mlm_probability):
            warnings.warn(
                f"--data.max_predictions_per_seq {max_predictions_per_seq} caps the masks below "
                f"{mlm_probability:.0%} of {self._max_seq_length}-token sequences (Google used 20 for 128, "
                "76-80 for 512)",
                stacklevel=2,
            )
        self.document_per_line, self.text_field = document_per_line, text_field
        self.mlm_probability, self.max_predictions_per_seq = mlm_probability, max_predictions_per_seq
        self.masking, self.chinese_segmenter = masking, chinese_segmenter
        self.short_seq_prob, self.nsp, self.validation_seed = short_seq_prob, nsp, validation_seed
        self._segment = _segmenter(chinese_segmenter)

    # -- sequences -------------------------------------------------------------------------------

    def prepare(self, split: str) -> list[Prepared]:
        if split == "predict":
            raise UserError(
                "pre-training has no predict: fine-tune <run dir>/pretrained/ with a task config, or "
                "extract vectors with configs/features.yaml"
            )
        path = self.split_file(split)
        if path is None:
            raise UserError(f"no {split} text: set --data.{split}_file")
        documents = self._tokenized_documents(path)
        tokenizer = self.tokenizer
        cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        if self.nsp:
            if len(documents) < 2:
                raise DataError(path, "next-sentence prediction needs at least two documents")
            seed = self.validation_seed if split != "train" else environment_seed()
            rng = random.Random(seed)
            sequences = features.nsp_sequences(
                documents, self.max_seq_length, self.short_seq_prob, rng, cls_id, sep_id
            )
        else:
            sequences = features.packed_sequences(documents, self.max_seq_length, cls_id, sep_id)
        if not sequences:
            raise DataError(path, "no sequence could be built from the text")
        columns: dict[str, list] = {
            "input_ids": [s.input_ids for s in sequences],
            "token_type_ids": [s.token_type_ids for s in sequences],
            "attention_mask": [[1] * len(s.input_ids) for s in sequences],
            "word_ids": [s.word_ids for s in sequences],
            "example": list(range(len(sequences))),
            "feature_index": list(range(len(sequences))),
        }
        if self.nsp:
            columns["next_sentence_label"] = [s.next_sentence_label for s in sequences]
        evaluation = Evaluation(split=split, source=str(path), windows=[1] * len(sequences))
        return [Prepared(datasets.Dataset.from_dict(columns), evaluation)]

    def _tokenized_documents(self, path: str) -> list[list[features.Sentence]]:
        """Every document as a list of sentences of (token id, word number) pairs."""
        documents = list(iter_documents(path, self.document_per_line, self.text_field))
        if not documents:
            raise DataError(path, "no text (an empty file, or only blank lines)")
        flat = [sentence for document in documents for sentence in document.sentences]
        tokenized: list[features.Sentence] = []
        next_word = 0
        for start in range(0, len(flat), 2000):
            texts = flat[start : start + 2000]
            # split_special_tokens: a literal "[MASK]" or "[SEP]" in the text is text (Google's
            # tokenizer splits it too), never a special token that could be chosen or separate.
            encoding = self.tokenizer(
                texts,
                add_special_tokens=False,
                return_offsets_mapping=self._segment is not None,
                split_special_tokens=True,
            )
            for i, text in enumerate(texts):
                ids = encoding["input_ids"][i]
                if self._segment is not None:
                    words = _segment_words(self._segment(text), encoding["offset_mapping"][i])
                else:
                    words = [w if w is not None else 0 for w in encoding.word_ids(i)]
                tokenized.append([(t, next_word + w) for t, w in zip(ids, words)])
                next_word += (max(words) + 1) if words else 0
        result, k = [], 0
        for document in documents:
            sentences = [s for s in tokenized[k : k + len(document.sentences)] if s]
            k += len(document.sentences)
            if sentences:
                result.append(sentences)
        return result

    # -- masks -----------------------------------------------------------------------------------

    def make_loader(self, dataset, shuffle: bool, batch_size: int | None = None, collate_fn=None):
        collate_fn = collate_fn or (self.collate_training if shuffle else self.collate_fixed)
        return super().make_loader(dataset, shuffle, batch_size, collate_fn=collate_fn)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        # Every rank starts from the same seeded random state: its rank tells its masks apart.
        self._rank = self.trainer.global_rank if self.trainer is not None else 0

    def collate_training(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Masks drawn anew for every batch: from the seeded global random state (restored when a
        run resumes; a DataLoader worker's own), and the process's rank."""
        draw = int(torch.randint(0, 2**62, ()).item())
        rng = np.random.default_rng([draw, getattr(self, "_rank", 0)])
        return self._masked_batch(rows, [rng] * len(rows))

    def collate_fixed(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """The same masks for a sequence however it is batched: seeded by the sequence's number."""
        rngs = [np.random.default_rng([self.validation_seed, row["example"]]) for row in rows]
        return self._masked_batch(rows, rngs)

    def _masked_batch(self, rows: list[dict[str, Any]], rngs: list[np.random.Generator]) -> dict[str, Any]:
        tokenizer = self.tokenizer
        masked = [
            features.mask_sequence(
                row["input_ids"],
                row["word_ids"],
                rng,
                mask_id=tokenizer.mask_token_id,
                vocab_size=len(tokenizer),
                probability=self.mlm_probability,
                max_predictions=self.max_predictions_per_seq,
                masking=self.masking,
            )
            for row, rng in zip(rows, rngs)
        ]
        batch = self.collate(
            [
                {**{k: v for k, v in row.items() if k != "word_ids"}, "input_ids": m.input_ids}
                for row, m in zip(rows, masked)
            ]
        )
        T = batch["input_ids"].shape[1]
        batch["mlm_positions"] = torch.tensor(
            [b * T + p for b, m in enumerate(masked) for p in m.positions], dtype=torch.long
        )
        batch["mlm_labels"] = torch.tensor([label for m in masked for label in m.labels], dtype=torch.long)
        return batch


def _under(state: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def _segmenter(name: str | None):
    if name is None:
        return None
    try:
        import jieba
    except ImportError:
        raise UserError(
            "--data.chinese_segmenter jieba needs the jieba package: pip install 'bert-tasks[chinese]'"
        ) from None
    jieba.setLogLevel(60)  # no "Building prefix dict" chatter on stderr
    return jieba.lcut


def _segment_words(words: list[str], offsets: list[tuple[int, int]]) -> list[int]:
    """Each token's word number: the segmenter's word its first character falls in."""
    ends, position = [], 0
    for word in words:
        position += len(word)
        ends.append(position)
    return [bisect_right(ends, start) for start, _ in offsets]


class PreTrainingModule(TaskModule):
    """The encoder with BERT's pre-training heads: masked LM (tied to the word embeddings), and
    next-sentence prediction with ``nsp``. A Google pre-training checkpoint keeps its heads; an
    encoder-only source (all-MiniLM-L6-v2, a fine-tuned .ckpt) gets fresh ones.

    Metrics over the whole split: ``val/mlm_loss`` (mean over the masked tokens),
    ``val/mlm_accuracy``, ``val/perplexity`` (exp of mlm_loss), ``val/nsp_accuracy``.
    """

    main_metric = "val/mlm_loss"
    main_metric_mode = "min"
    runs_without_fine_tuning = True  # validate on the unchanged encoder gives the baseline

    def __init__(self, nsp: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        config = self.encoder.config
        self.cls = PreTrainingHeads(config, self.encoder.embeddings.word_embeddings)
        self.cls.apply(lambda module: init_weights(module, config.initializer_range))
        self._load_heads(self.hparams.pretrained)
        if not nsp:  # unused parameters would stall DDP
            self.cls.seq_relationship.requires_grad_(False)
            self.encoder.pooler.requires_grad_(False)

    def _load_heads(self, source: str) -> None:
        if is_task_checkpoint(source):
            state = read_weights(source)["state_dict"]
        else:
            state = read_state_dict(resolve_source(source))
        heads = {k.removeprefix("cls."): v for k, v in state.items() if k.startswith("cls.")}
        heads = {k: v for k, v in heads.items() if not k.startswith("predictions.decoder.")}
        expected = self.cls.state_dict()
        new = []
        for group, name in (("predictions.", "MLM"), ("seq_relationship.", "NSP")):
            wanted = {k for k in expected if k.startswith(group)}
            found = {k: v for k, v in heads.items() if k.startswith(group)}
            if not found:
                new.append(name)
                continue
            if set(found) != wanted or any(found[k].shape != expected[k].shape for k in found):
                raise UserError(
                    f"{source}: its {name} head does not match the encoder (tensors {sorted(found)})"
                )
            self.cls.load_state_dict(found, strict=False)
        if new:
            print(f"note: {source} has no {' or '.join(new)} head; it starts new", file=sys.stderr)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.encode(batch)
        hidden = out.last_hidden_state.flatten(0, 1)[batch["mlm_positions"]]  # [M, H]: masked only
        mlm_logits = self.cls.predictions(hidden)  # [M, V]
        nsp_logits = self.cls.seq_relationship(out.pooler_output) if self.hparams.nsp else None  # [B, 2]
        return mlm_logits, nsp_logits

    def training_loss(self, outputs, batch: dict[str, Any]) -> torch.Tensor:
        mlm_logits, nsp_logits = outputs
        size = len(batch["input_ids"])
        mlm = F.cross_entropy(mlm_logits, batch["mlm_labels"]) if len(mlm_logits) else mlm_logits.sum()
        self.log("train/mlm_loss", mlm, batch_size=size)
        if nsp_logits is None:
            return mlm
        nsp = F.cross_entropy(nsp_logits, batch["next_sentence_label"])
        self.log("train/nsp_loss", nsp, batch_size=size)
        return mlm + nsp

    def split_outputs(self, outputs, batch: dict[str, Any]) -> list[tuple[int, int, Any]]:
        """Per sequence: (masked-token loss sum, masked tokens, correct ones, NSP loss, NSP correct)."""
        mlm_logits, nsp_logits = outputs
        B, T = batch["input_ids"].shape
        labels = batch["mlm_labels"]
        losses = F.cross_entropy(mlm_logits.float(), labels, reduction="none").double().cpu()
        correct = (mlm_logits.argmax(-1) == labels).double().cpu()
        rows = (batch["mlm_positions"] // T).cpu()
        loss_sums = torch.zeros(B, dtype=torch.float64).index_add_(0, rows, losses)
        counts = torch.zeros(B, dtype=torch.float64).index_add_(0, rows, torch.ones_like(losses))
        corrects = torch.zeros(B, dtype=torch.float64).index_add_(0, rows, correct)
        if nsp_logits is not None:
            nsp_labels = batch["next_sentence_label"]
            nsp_loss = F.cross_entropy(nsp_logits.float(), nsp_labels, reduction="none").tolist()
            nsp_correct = (nsp_logits.argmax(-1) == nsp_labels).tolist()
        else:
            nsp_loss = nsp_correct = [None] * B
        return [
            (
                example,
                feature,
                (loss_sums[b].item(), counts[b].item(), corrects[b].item(), nsp_loss[b], nsp_correct[b]),
            )
            for b, (example, feature) in enumerate(
                zip(batch["example"].tolist(), batch["feature_index"].tolist(), strict=True)
            )
        ]

    def decode(self, example: int, outputs: list[Any], evaluation: Evaluation) -> Any:
        return outputs[0]

    def score(self, predictions: dict[int, Any], evaluation: Evaluation) -> dict[str, float]:
        values = list(predictions.values())
        count = sum(v[1] for v in values)
        mlm_loss = sum(v[0] for v in values) / max(count, 1.0)
        scores = {
            "mlm_loss": mlm_loss,
            "mlm_accuracy": sum(v[2] for v in values) / max(count, 1.0),
            "perplexity": math.exp(min(mlm_loss, 700.0)),
            "loss": mlm_loss,
        }
        if self.hparams.nsp:
            scores["nsp_loss"] = sum(v[3] for v in values) / len(values)
            scores["nsp_accuracy"] = sum(bool(v[4]) for v in values) / len(values)
            scores["loss"] += scores["nsp_loss"]
        return scores

    # -- the adapted encoder, in HF format -------------------------------------------------------

    def on_fit_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        # The weights of best.ckpt (lowest val/mlm_loss) when the run validated; else the last ones.
        callback = self.trainer.checkpoint_callback
        best = callback.best_model_path if callback is not None else ""
        state = read_weights(best)["state_dict"] if best else None
        path = self.save_pretrained(self.run_dir / "pretrained", state)
        which = f"the weights of {best}" if best else "the last weights"
        print(f"pre-trained model written to {path} ({which}; use it as --model.pretrained)", flush=True)

    def save_pretrained(self, directory: str | os.PathLike, state_dict: dict | None = None) -> Path:
        """``directory`` in HF format: BertForPreTraining weights (encoder, MLM and NSP heads),
        config.json, vocab.txt and the casing, from ``state_dict`` (by default this module's).
        Written beside, then renamed into place."""
        directory = Path(directory)
        tmp = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        state = self.state_dict() if state_dict is None else state_dict
        model = BertForPreTraining(self.encoder.config)
        model.bert.load_state_dict(_under(state, "encoder."))
        model.cls.load_state_dict(_under(state, "cls."))
        model.save_pretrained(tmp)
        write_vocab_files(
            self._tokenizer_payload["vocab"],
            self._tokenizer_payload["do_lower_case"],
            tmp,
            model_max_length=self.encoder.config.max_position_embeddings,
        )
        fsync_tree(tmp)  # on the disk before the rename publishes it
        previous = directory.with_name(f".{directory.name}.previous")
        shutil.rmtree(previous, ignore_errors=True)
        if directory.exists():
            directory.rename(previous)  # kept until the new directory is in place
        os.replace(tmp, directory)
        fsync_directory(directory.parent)
        shutil.rmtree(previous, ignore_errors=True)
        return directory
