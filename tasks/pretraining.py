"""Further pre-training on domain text: masked LM (token, whole-word or span masking) and optional NSP.

Data: ``data.corpus`` reads documents, the tokenizer cuts their sentences into tokens (with the
word each belongs to), ``features.pretraining`` builds sequences (NSP pairs or packed text) once
and masks every batch anew; the validation split's masks are fixed by a seed, so its metrics
compare from epoch to epoch and run to run. The module runs the MLM head on the masked
positions only and writes ``<run dir>/pretrained/`` (HF format, MLM head included) when fit ends.
``--model.objective electra`` trains replaced-token detection instead (``tasks/electra.py``) on the
same batches; ``pretrained/`` then holds the discriminator as an HF ``BertModel``.
"""

from __future__ import annotations

import os
import random
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F

from bert_core.checkpoint import read_state_dict
from bert_core.model import PreTrainingHeads, init_weights
from bert_core.sources import resolve_source

from .checkpoint import read_weights
from .data.corpus import iter_documents
from .datamodule import Prepared, TaskDataModule
from .electra import OBJECTIVES, Electra, electra_losses, training_generator
from .evaluation import Evaluation
from .features import pretraining as features
from .io import DataError, UserError
from .module import TaskModule
from .pretraining_heads import load_heads, write_pretrained
from .pretraining_metrics import RTD_WEIGHT, electra_scores, electra_stats, pretraining_scores, sequence_stats
from .registry import TASKS
from .sampling import environment_seed
from .source import Source, load_encoder

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

    # the settings of ``features.PreTrainingFeatures``, then how the text files are read
    stored_settings = (
        *(f.name for f in fields(features.PreTrainingFeatures)),
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
        self.features = features.PreTrainingFeatures(
            self._max_seq_length, masking, mlm_probability, max_predictions_per_seq, chinese_segmenter,
            short_seq_prob, nsp, validation_seed,
        )  # fmt: skip
        self.document_per_line, self.text_field = document_per_line, text_field
        self.mlm_probability, self.max_predictions_per_seq = mlm_probability, max_predictions_per_seq
        self.masking, self.chinese_segmenter = masking, chinese_segmenter
        self.short_seq_prob, self.nsp, self.validation_seed = short_seq_prob, nsp, validation_seed

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
        if self.nsp and len(documents) < 2:
            raise DataError(path, "next-sentence prediction needs at least two documents")
        rng = random.Random(self.validation_seed if split != "train" else environment_seed())
        tokenizer = self.tokenizer
        ids = tokenizer.cls_token_id, tokenizer.sep_token_id
        sequences = self.features.sequences(documents, self.max_seq_length, rng, *ids)
        if not sequences:
            raise DataError(path, "no sequence could be built from the text")
        evaluation = Evaluation(split=split, source=str(path), windows=[1] * len(sequences))
        return [Prepared(datasets.Dataset.from_dict(self.features.columns(sequences)), evaluation)]

    def _tokenized_documents(self, path: str) -> list[list[features.Sentence]]:
        """Every document as a list of sentences of (token id, word number) pairs."""
        documents = [d.sentences for d in iter_documents(path, self.document_per_line, self.text_field)]
        if not documents:
            raise DataError(path, "no text (an empty file, or only blank lines)")
        return self.features.tokenize(self.tokenizer, documents)

    # -- masks: drawn as batches are made ----------------------------------------------------------

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
        mask_id, vocab_size = self.tokenizer.mask_token_id, len(self.tokenizer)
        masked = [
            self.features.mask(row["input_ids"], row["word_ids"], rng, mask_id, vocab_size)
            for row, rng in zip(rows, rngs)
        ]
        inputs = [{k: v for k, v in row.items() if k != "word_ids"} for row in rows]
        batch = self.collate([{**row, "input_ids": m.input_ids} for row, m in zip(inputs, masked)])
        T = batch["input_ids"].shape[1]
        positions = [b * T + p for b, m in enumerate(masked) for p in m.positions]  # in the flat [B * T]
        batch["mlm_positions"] = torch.tensor(positions, dtype=torch.long)
        batch["mlm_labels"] = torch.tensor([label for m in masked for label in m.labels], dtype=torch.long)
        return batch


class PreTrainingModule(TaskModule):
    """The encoder with BERT's pre-training heads: masked LM (tied to the word embeddings), and
    next-sentence prediction with ``nsp``. A Google pre-training checkpoint keeps its heads; an
    encoder-only source (all-MiniLM-L6-v2, a fine-tuned .ckpt) gets fresh ones.

    Metrics over the whole split: ``val/mlm_loss`` (mean over the masked tokens),
    ``val/mlm_accuracy``, ``val/perplexity`` (exp of mlm_loss), ``val/nsp_accuracy``.

    ``objective``: ``mlm``, or ``electra`` (replaced-token detection, ``tasks/electra.py``): a
    generator of ``generator_layers`` layers (default: a third of the model's) and width
    ``generator_hidden_size`` (default: the model's), or the layers of the BERT ``generator`` names,
    fills the masked positions; metrics ``val/rtd_accuracy``, ``val/rtd_auc``, ``val/rtd_loss``,
    ``val/generator_mlm_accuracy``, ``val/generator_mlm_loss`` and ``val/loss`` (generator loss +
    50 x rtd_loss: what best.ckpt is chosen by).
    """

    example_noun = "sequences"
    main_metric_mode = "min"
    runs_without_fine_tuning = True  # validate on the unchanged encoder gives the baseline
    VALIDATION_SEED = 12345  # ELECTRA's validation samples: the same replacements at every validation

    def __init__(
        self,
        nsp: bool = False,
        objective: str = "mlm",
        generator_layers: int | None = None,
        generator_hidden_size: int | None = None,
        generator: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if objective not in OBJECTIVES:
            raise UserError(f"--model.objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
        self.electra = None
        if objective == "electra":
            if nsp:
                raise UserError(
                    "--model.objective electra detects replaced tokens; it has no NSP: drop --model.nsp"
                )
            source = load_encoder(generator) if generator else None
            vocab = self._tokenizer_payload["vocab"]
            self.electra = Electra(self.encoder, generator_layers, generator_hidden_size, source, vocab)
            self.encoder.pooler.requires_grad_(False)  # unused: DDP would wait for its gradients
            return
        config = self.encoder.config
        self.cls = PreTrainingHeads(config, self.encoder.embeddings.word_embeddings)
        self.cls.apply(lambda module: init_weights(module, config.initializer_range))
        self._load_heads(self.hparams.pretrained)
        if not nsp:  # unused parameters would stall DDP
            self.cls.seq_relationship.requires_grad_(False)
            self.encoder.pooler.requires_grad_(False)

    @property
    def main_metric(self) -> str:
        return "val/loss" if self.electra is not None else TASKS["pretraining"].main_metric

    def _load_heads(self, source: str) -> None:
        model = Source(source)
        if model.kind == Source.CHECKPOINT:
            state = model.state_dict()
        else:
            state = read_state_dict(resolve_source(source))
        new = load_heads(self.cls, state, source)
        if new:
            print(f"note: {source} has no {' or '.join(new)} head; it starts new", file=sys.stderr)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        if self.electra is not None:
            # Evaluation samples each sequence's replacements from a seed of its own: the same at
            # every validation, on any number of processes.
            example = batch.get("example")
            if self.training or example is None:
                device = batch["input_ids"].device  # training: each rank's own, reproducible draws
                return self.electra(
                    self.encode, batch, generator=training_generator(device, self.global_rank)
                )
            return self.electra(self.encode, batch, (self.VALIDATION_SEED + example).tolist())
        out = self.encode(batch)
        hidden = out.last_hidden_state.flatten(0, 1)[batch["mlm_positions"]]  # [M, H]: masked only
        mlm_logits = self.cls.predictions(hidden)  # [M, V]
        nsp_logits = self.cls.seq_relationship(out.pooler_output) if self.hparams.nsp else None  # [B, 2]
        return mlm_logits, nsp_logits

    def training_loss(self, outputs, batch: dict[str, Any]) -> torch.Tensor:
        size = len(batch["input_ids"])
        if self.electra is not None:
            generator_loss, rtd = electra_losses(outputs, batch)
            self.log("train/generator_mlm_loss", generator_loss, batch_size=size)
            self.log("train/rtd_loss", rtd, batch_size=size)
            return generator_loss + RTD_WEIGHT * rtd
        mlm_logits, nsp_logits = outputs
        mlm = F.cross_entropy(mlm_logits, batch["mlm_labels"]) if len(mlm_logits) else mlm_logits.sum()
        self.log("train/mlm_loss", mlm, batch_size=size)
        if nsp_logits is None:
            return mlm
        nsp = F.cross_entropy(nsp_logits, batch["next_sentence_label"])
        self.log("train/nsp_loss", nsp, batch_size=size)
        return mlm + nsp

    def split_outputs(self, outputs, batch: dict[str, Any]) -> list[tuple[int, int, Any]]:
        """Per sequence: (masked-token loss sum, masked tokens, correct ones, NSP loss, NSP correct)."""
        ids = zip(batch["example"].tolist(), batch["feature_index"].tolist(), strict=True)
        stats = (
            electra_stats(*outputs, batch) if self.electra is not None else sequence_stats(*outputs, batch)
        )
        return [(e, f, s) for (e, f), s in zip(ids, stats, strict=True)]

    def decode(self, example: int, outputs: list[Any], evaluation: Evaluation) -> Any:
        return outputs[0]

    def score(self, predictions: dict[int, Any], evaluation: Evaluation) -> dict[str, float]:
        if self.electra is not None:
            return electra_scores(list(predictions.values()))
        return pretraining_scores(list(predictions.values()), self.hparams.nsp)

    # -- the adapted encoder, in HF format -------------------------------------------------------

    def on_fit_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        # The weights of best.ckpt (lowest val/mlm_loss) when the run validated; else the last ones.
        callback = self.trainer.checkpoint_callback
        best = callback.best_model_path if callback is not None else ""
        state = None
        if best:
            checkpoint = read_weights(best)  # mapped: the step costs no tensor read
            # Saved after the last optimizer step, best.ckpt holds the weights in memory: written
            # from them, its tensors are never paged in (91 MB above the fit's peak, MiniLM).
            if checkpoint["global_step"] != self.trainer.global_step:
                state = checkpoint["state_dict"]
        path = self.save_pretrained(self.run_dir / "pretrained", state)
        which = f"the weights of {best}" if best else "the last weights"
        print(f"pre-trained model written to {path} ({which}; use it as --model.pretrained)", flush=True)

    def save_pretrained(self, directory: str | os.PathLike, state_dict: dict | None = None) -> Path:
        """``directory`` in HF format (see ``write_pretrained``) from ``state_dict`` (by default
        this module's)."""
        state = self.state_dict() if state_dict is None else state_dict
        heads = self.electra is None  # ELECTRA's discriminator: the encoder alone, an HF BertModel
        return write_pretrained(directory, self.encoder.config, state, self._tokenizer_payload, heads)
