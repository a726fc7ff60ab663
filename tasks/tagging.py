"""NER as token classification: the Lightning data module and module.

Data flow: CoNLL sentences (or raw text lines split into words, ``data.words``) -> windows of
sub-tokens in which each word is labelled on its first sub-token by exactly one window
(``features.tagging``) -> encoder + linear head -> per-word label scores of all windows of a
sentence -> constrained Viterbi over the transitions the tag scheme allows (``decoding.tagging``;
``--model.decoding argmax``: each word's best label instead) -> one tag per word -> entity spans,
scored with seqeval or written with character offsets.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from .data.conll import (
    OUTSIDE,
    ConllFile,
    ConllPredictions,
    Sentence,
    convert_tags,
    detect_scheme,
    entity_types,
    is_valid_tag,
    label_names_for,
    looks_like_conll,
    normalize_scheme,
    read_conll,
    split_tag,
)
from .data.text import LineCursor
from .data.words import entity_record, split_words
from .datamodule import Prepared, TaskDataModule
from .decoding.tagging import DECODINGS, WordScores, decode_sentence, transition_constraints
from .evaluation import Evaluation, OutputFile
from .features.tagging import FEATURE_COLUMNS, IGNORE_INDEX, document_features, documents_as_rows
from .io import DataError, UserError, iter_text_lines, read_text_lines
from .metrics.ner import ner_scores
from .module import TaskModule

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "tagging"


@dataclass
class TaggingSplit:
    """One split as read: sentences, gold tags in the training scheme, and what writing needs."""

    path: str
    format: str  # "conll" or "text"
    sentences: list[Sentence]
    gold: list[list[str]] | None  # None when the file has no tags
    conll: ConllFile | None = None  # conll format: the file, to write it back with predictions


class WordCounts:
    """The number of words of each line of a text file, read on demand in order (``split_words``)."""

    def __init__(self, lines: LineCursor):
        self.lines = lines

    def __getitem__(self, index: int) -> int:
        return len(split_words(self.lines.get(index)))


@dataclass
class TaggingContext:
    """What decoding a split needs besides the model's scores."""

    sentence_lengths: Sequence[int]  # words per sentence
    tag_scheme: str  # the scheme of the labels (and of the gold tags)


class TaggingDataModule(TaskDataModule):
    """CoNLL files for NER (and any word tagging in the B-/I-/E-/S- schemes).

    Args:
        tag_scheme: the scheme the model trains on and predicts in: BIO (IOB2), IOB1 or IOBES.
            Files in any scheme are converted to it (CoNLL-2003's original files are IOB1).
        tag_column: the column holding the tag (0 is the token; negative counts from the end).
        label_all_tokens: also train on the later sub-tokens of a word (with its I- tag); by
            default only the first sub-token of a word carries its label.
        document_context: fill each window with the neighbouring sentences of the same document
            (documents are cut by -DOCSTART- lines); only the centre sentence is labelled and scored.
        unseen_tags: what to do with a dev/test tag whose type is not in the train file: ``error``
            (naming file:line) or ``map_to_o`` (with a warning).
        predict_format: ``conll`` (write the file back with a predicted-tag column), ``text``
            (one raw text per line -> JSONL with character offsets), or ``auto``: CoNLL when the
            file's first lines look like CoNLL columns (a ``-DOCSTART-`` line, or columns ending
            in a tag), else text for ``.txt`` files and CoNLL for the others.
        labels: the label set in id order (default: from the train file; filled in from a checkpoint).
    """

    feature_functions = (document_features,)
    stored_settings = (
        "max_seq_length",
        "do_lower_case",
        "tag_scheme",
        "tag_column",
        "label_all_tokens",
        "document_context",
    )

    def __init__(
        self,
        tag_scheme: str = "BIO",
        tag_column: int = -1,
        label_all_tokens: bool = False,
        document_context: bool = False,
        unseen_tags: Literal["error", "map_to_o"] = "error",
        predict_format: Literal["auto", "conll", "text"] = "auto",
        labels: list[str] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        try:
            self.tag_scheme = normalize_scheme(tag_scheme)
        except ValueError as err:
            raise UserError(str(err)) from None
        self.tag_column = tag_column
        self.label_all_tokens = label_all_tokens
        self.document_context = document_context
        self.unseen_tags = unseen_tags
        self.predict_format = predict_format
        self.labels = list(labels) if labels is not None else None
        if self.labels is not None:
            self.tag_scheme = self._scheme_of_labels(self.labels)
        self.splits: dict[str, TaggingSplit] = {}
        # Decided once, here: the CLI links task and labels to the model right after instantiation.
        self.task = "ner"
        self.label_names = self._decide_label_names()

    def _decide_label_names(self) -> list[str] | None:
        """ "O" and each entity type's tags in the training scheme: given, or from the train file."""
        if self.labels is not None:
            return list(self.labels)
        if self.train_file is not None or (self.dataset is not None and self.hub_split("train") is not None):
            train = self.read("train")
            types = {split_tag(tag)[1] for tags in train.gold for tag in tags if tag != OUTSIDE}
            return label_names_for(types, self.tag_scheme)
        return None

    def _scheme_of_labels(self, labels: list[str]) -> str:
        """A given label set decides between IOBES and the others (a checkpoint's labels)."""
        bad = [label for label in labels if not is_valid_tag(label)]
        if bad or OUTSIDE not in labels:
            raise UserError(f"labels must be O and B-/I-/E-/S- tags, got {labels}")
        uses_iobes = any(split_tag(label)[0] in ("E", "S") for label in labels)
        if uses_iobes:
            return "IOBES"
        return "BIO" if self.tag_scheme == "IOBES" else self.tag_scheme

    # -- reading -----------------------------------------------------------------------------------

    def read(self, split: str) -> TaggingSplit:
        if split not in self.splits:
            self.splits[split] = self._read(split)
        return self.splits[split]

    def _read(self, split: str) -> TaggingSplit:
        path = self.split_file(split)
        if path is None:
            rows = self.hub_split(split)
            if rows is None:
                raise UserError(f"no {split} file: set --data.{split}_file")
            return self._read_hub(split, rows)
        conll = read_conll(path, self.tag_column)
        if split == "predict":
            return TaggingSplit(str(path), "conll", conll.sentences, None, conll=conll)
        if not conll.has_tags:
            first = conll.sentences[0].line
            raise DataError(
                path, f"no tag column: a {split} file needs a token and a tag per line", line=first
            )
        gold = self._gold_tags(split, conll.path, conll.sentences)
        return TaggingSplit(str(path), "conll", conll.sentences, gold, conll=conll)

    def _read_hub(self, split: str, rows) -> TaggingSplit:
        """A Hub data set with ``tokens`` and ``ner_tags`` columns (conll2003, wnut_17, ...)."""
        names = rows.features["ner_tags"].feature.names
        sentences = [
            Sentence(
                list(row["tokens"]), [names[t] for t in row["ner_tags"]], 0, [index + 1] * len(row["tokens"])
            )
            for index, row in enumerate(rows)
            if row["tokens"]
        ]
        origin = f"{self.dataset}[{split}]"
        gold = self._gold_tags(split, origin, sentences) if split != "predict" else None
        return TaggingSplit(origin, "conll", sentences, gold)

    def _predict_is_text(self, path: str) -> bool:
        """``--data.predict_format``; ``auto``: CoNLL when the file's first lines look like CoNLL
        columns (whatever the extension: CoNLL-2003 comes as ``test.txt``), else text for
        ``.txt``/``.text`` files and CoNLL for the others."""
        if self.predict_format != "auto":
            return self.predict_format == "text"
        if Path(path).is_file() and looks_like_conll(path):
            return False
        return Path(path).suffix.lower() in (".txt", ".text")

    def _gold_tags(self, split: str, path, sentences: list[Sentence]) -> list[list[str]]:
        """The file's tags converted to the training scheme; an unseen type is an error or O."""
        known = None if split == "train" else set(entity_types(self.label_names or []))
        unseen = 0
        gold = []
        for sentence in sentences:
            tags = list(sentence.tags or [])
            for index, tag in enumerate(tags):
                entity_type = split_tag(tag)[1]
                if known is not None and tag != OUTSIDE and entity_type not in known:
                    if self.unseen_tags == "error":
                        raise DataError(
                            path,
                            f"tag {tag!r}: type {entity_type!r} is not in the train file's label set "
                            f"({', '.join(sorted(known)) or 'none'}); pass --data.unseen_tags map_to_o to read it as O",
                            line=sentence.lines[index],
                        )
                    tags[index] = OUTSIDE
                    unseen += 1
            gold.append(convert_tags(tags, self.tag_scheme))
        if unseen:
            log.warning("%s: %d tag(s) of types unseen in training read as O", path, unseen)
        return gold

    # -- features ----------------------------------------------------------------------------------

    def build(self, split: str) -> tuple[TaggingSplit, Any]:
        """The split as read and its windows (a ``datasets.Dataset`` of ``FEATURE_COLUMNS``)."""
        data = self.read(split)
        label_names = self.label_names
        if label_names is None:
            raise UserError(
                "the label set is unknown: give --data.train_file, --data.labels, or a checkpoint (--ckpt_path)"
            )
        label_ids = {name: index for index, name in enumerate(label_names)}
        featurize, settings = self._featurizer(data.format)
        rows = documents_as_rows(data.sentences, data.gold, label_ids, by_line=data.format == "text")
        return data, self.featurize(f"{split}-{Path(data.path).name}", rows, featurize, settings)

    def _featurizer(self, data_format: str):
        """The batched featurisation function over document rows, and the settings it depends on."""
        label_names = self.label_names
        tokenizer, budget = self.tokenizer, self.max_seq_length - 2
        document_context, label_all_tokens = self.document_context, self.label_all_tokens

        def featurize(batch: dict[str, list]) -> dict[str, list]:
            features: dict[str, list] = {key: [] for key in FEATURE_COLUMNS}
            for sentence_ids, words, labels in zip(
                batch["sentence_ids"], batch["words"], batch["labels"], strict=True
            ):
                for feature in document_features(
                    tokenizer,
                    sentence_ids,
                    words,
                    labels,
                    budget,
                    document_context,
                    label_all_tokens,
                    label_names,
                ):
                    for key, value in feature.items():
                        features[key].append(value)
            return features

        settings = {
            "labels": label_names,
            "scheme": self.tag_scheme,
            "document_context": document_context,
            "label_all_tokens": label_all_tokens,
            "tag_column": self.tag_column,
            "format": data_format,
        }
        return featurize, settings

    def _prepare_text(self, path: str) -> Prepared:
        """Raw text to predict, streamed: read line by line, featurised in chunks into the cache,
        each line read again when its record is written; nothing per line stays in memory but a
        window count."""
        if self.label_names is None:
            raise UserError("the label set is unknown: give --data.labels or a checkpoint (--ckpt_path)")
        featurize, settings = self._featurizer("text")

        def rows():
            for number, line in enumerate(iter_text_lines(path)):
                words = [line[a:b] for a, b in split_words(line)]
                yield {"sentence_ids": [number], "words": [words], "labels": [[]]} if words else None

        features, count = self.featurize_stream(f"predict-{Path(path).name}", path, rows, featurize, settings)
        if not len(features):
            raise DataError(path, "empty file: no text to tag (only blank lines, or none)", line=1)
        windows = np.bincount(np.asarray(features["sentence"], dtype=np.int64), minlength=count)
        lines = LineCursor(lambda: iter_text_lines(path))  # decoding reads lines in order
        record_lines = LineCursor(lambda: iter_text_lines(path))  # and so does the writer

        def record(sentence: int, prediction: TaggedSentence) -> list[str]:
            line = record_lines.get(sentence)
            return [json.dumps(entity_record(line, split_words(line), prediction.tags), ensure_ascii=False)]

        evaluation = Evaluation(
            "predict",
            str(path),
            windows=windows,
            context=TaggingContext(WordCounts(lines), self.tag_scheme),
            outputs=[OutputFile(self.predictions_path(), record)],
        )
        return Prepared(features, evaluation)

    def prepare(self, split: str) -> list[Prepared]:
        path = self.split_file(split)
        if split == "predict" and path is not None and self._predict_is_text(path):
            return [self._prepare_text(path)]
        data, features = self.build(split)
        sentence_of = np.asarray(features["sentence"] if len(features) else [], dtype=np.int64)
        windows = np.bincount(sentence_of, minlength=len(data.sentences))
        evaluation = Evaluation(
            split,
            data.path,
            windows=windows.tolist(),
            gold=data.gold,
            context=TaggingContext([len(s.words) for s in data.sentences], self.tag_scheme),
            outputs=self._outputs(data) if split == "predict" else (),
        )
        return [Prepared(features, evaluation)]

    # -- predictions -------------------------------------------------------------------------------

    def _outputs(self, data: TaggingSplit) -> list[OutputFile]:
        """Raw text: JSONL ``{text, entities}`` per line. CoNLL: the file again with a predicted-tag
        column (conlleval's layout), in the scheme of the file's own gold column if it has one
        (tags already in that scheme are written as decoded: argmax's ``O I-X`` stays as it is)."""
        path = (
            self.predictions_path() if self.predictions_file else self.predictions_path("predictions.conll")
        )
        if data.conll is None:  # a hub data set: no file to write back
            return [
                OutputFile(
                    path, lambda s, p: [json.dumps({"words": data.sentences[s].words, "tags": p.tags})]
                )
            ]
        file_scheme = detect_scheme(s.tags for s in data.sentences) if data.conll.has_tags else None
        if file_scheme == self.tag_scheme:
            file_scheme = None
        writer = ConllPredictions(read_text_lines(data.path), data.conll)

        def lines_of(sentence: int, prediction: TaggedSentence) -> list[str]:
            tags = convert_tags(prediction.tags, file_scheme) if file_scheme else prediction.tags
            return list(writer.sentence(sentence, tags))

        return [OutputFile(path, lines_of, footer=lambda: list(writer.rest()))]


class TaggingModule(TaskModule):
    """Token classification: encoder -> dropout -> linear over the tags, read at each word's first
    sub-token; decoding is a Viterbi search over the transitions the tag scheme allows (or, with
    ``decoding="argmax"``, each word's best label).

    Args:
        classifier_dropout: dropout before the linear head (default: the encoder's hidden dropout).
        strict_metrics: score with seqeval's strict mode for the scheme instead of conlleval's rules
            (equal for Viterbi's predictions, which are always valid; differs on sloppy gold files
            and on argmax's invalid sequences, whose stray ``I-`` strict mode drops).
        decoding: ``viterbi`` (default): the best tag sequence the scheme allows, never ``O I-PER``.
            ``argmax``: each word's highest-scoring label on its own, as Hugging Face's run_ner;
            a sequence may be invalid, and conlleval's reading counts a stray ``I-X`` as the
            start of an entity. Words without a sub-token are filled in the same way in both.
            Stored in the checkpoint (fit's validations, and so best.ckpt, use it) and
            overridable at validate/test/predict time: ``--model.decoding argmax --ckpt_path CKPT``.
    """

    main_metric = "val/f1"
    main_metric_mode = "max"
    uses_pooler = False

    def __init__(
        self,
        classifier_dropout: float | None = None,
        strict_metrics: bool = False,
        decoding: Literal["viterbi", "argmax"] = "viterbi",
        **kwargs: Any,
    ):
        if decoding not in DECODINGS:
            raise UserError(f"--model.decoding must be one of {', '.join(DECODINGS)}, not {decoding!r}")
        super().__init__(**kwargs)
        if not self.label_names:
            raise UserError(
                "a tagging model needs its label names (they come from the train file or the checkpoint)"
            )
        self.dropout = self.head_dropout(classifier_dropout)
        self.classifier = self.linear_head(len(self.label_names))
        self.strict_metrics = strict_metrics
        self.decoding = decoding
        self.tag_scheme: str | None = None  # the data's, once set up; a checkpoint's when restored
        self._constraints: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    # -- the scheme the labels are written in ------------------------------------------------------

    @property
    def scheme(self) -> str:
        """The tag scheme of the labels: the data's (or the checkpoint's); without either, IOBES
        when the labels hold E-/S- tags, else BIO."""
        if self.tag_scheme is not None:
            return self.tag_scheme
        return "IOBES" if any(label[:2] in ("E-", "S-") for label in self.label_names) else "BIO"

    def setup(self, stage: str) -> None:
        super().setup(stage)
        schemes = {e.context.tag_scheme for evaluations in self.evaluations.values() for e in evaluations}
        if schemes:
            (self.tag_scheme,) = schemes

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[CHECKPOINT_KEY] = {"tag_scheme": self.scheme}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint.get(CHECKPOINT_KEY, {}).get("tag_scheme")
        if stored and self.tag_scheme and stored != self.tag_scheme:
            raise UserError(
                f"the checkpoint was trained with --data.tag_scheme {stored}, not {self.tag_scheme}: "
                "pass the same scheme"
            )
        self.tag_scheme = stored or self.tag_scheme

    # -- steps -------------------------------------------------------------------------------------

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.token_states(batch)  # [B, T, H], or the head_layers combined
        return self.classifier(self.dropout(hidden))  # [B, T, labels]

    def training_loss(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return F.cross_entropy(outputs.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE_INDEX)

    def split_outputs(
        self, outputs: torch.Tensor, batch: dict[str, Any]
    ) -> list[tuple[int, int, WindowOutput]]:
        """Each window's labelled words, their label log-probabilities, and its loss (summed over
        its labelled tokens, so that the split's loss is the mean over all of them)."""
        log_probs = outputs.detach().float().log_softmax(-1)
        labels = batch["labels"]
        losses = F.nll_loss(log_probs.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
        loss_sums, counts = losses.sum(-1).tolist(), (labels != IGNORE_INDEX).sum(-1).tolist()
        log_probs = log_probs.cpu().numpy()
        positions = batch["word_positions"].cpu().numpy()
        indices = batch["word_indices"].cpu().numpy()
        items = []
        rows = zip(
            batch["sentence"].tolist(), batch["feature_index"].tolist(), loss_sums, counts, strict=True
        )
        for row, (sentence, feature, loss_sum, count) in enumerate(rows):
            keep = positions[row] != IGNORE_INDEX  # the collate pads these lists with -100
            scores = WordScores(indices[row][keep], log_probs[row, positions[row][keep]])
            items.append((sentence, feature, WindowOutput(scores, loss_sum, count)))
        return items

    def decode(self, example: int, outputs: list[WindowOutput], evaluation: Evaluation) -> TaggedSentence:
        constraints = None
        if self.decoding == "viterbi":
            scheme = self.scheme
            if scheme not in self._constraints:
                self._constraints[scheme] = transition_constraints(self.label_names, scheme)
            constraints = self._constraints[scheme]
        length = evaluation.context.sentence_lengths[example]
        tags = decode_sentence(
            length, [o.scores for o in outputs], self.label_names, constraints, self.decoding
        )
        return TaggedSentence(tags, sum(o.loss_sum for o in outputs), sum(o.labelled for o in outputs))

    def score(self, predictions: dict[int, TaggedSentence], evaluation: Evaluation) -> dict[str, float]:
        if evaluation.gold is None:
            return {}
        gold = [evaluation.gold[i] for i in predictions]
        tags = [p.tags for p in predictions.values()]
        scores = ner_scores(gold, tags, self.scheme, self.strict_metrics)
        labelled = sum(p.labelled for p in predictions.values())
        scores["loss"] = sum(p.loss_sum for p in predictions.values()) / max(labelled, 1)
        return scores


@dataclass
class WindowOutput:
    scores: WordScores  # the words this window labels
    loss_sum: float  # cross-entropy summed over its labelled tokens
    labelled: int  # how many


@dataclass
class TaggedSentence:
    tags: list[str]
    loss_sum: float
    labelled: int
