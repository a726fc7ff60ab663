"""NER as token classification: the Lightning data module and module (wiring only).

Data flow: CoNLL sentences or raw text lines (``data.conll``, ``data.words``) -> windows of
sub-tokens, each word labelled on its first sub-token by exactly one window (``features.tagging``)
-> encoder + linear head -> per-word label scores of all windows of a sentence -> constrained
Viterbi over the transitions the tag scheme allows, or argmax (``decoding.tagging``) -> one tag
per word -> entity spans, scored with seqeval or written beside the input (``data``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from .class_weights import fill_balanced, weights_buffer
from .data import conll, spans
from .data.tagged import TaggedFiles
from .data.words import LineWordCounts, entity_lines, line_words, reads_as_text, split_words
from .datamodule import Prepared, TaskDataModule
from .decoding.tagging import DECODINGS, TaggedSentence, TaggingContext, WindowOutput, window_outputs
from .evaluation import Evaluation, OutputFile
from .features.tagging import IGNORE_INDEX, TaggingFeaturizer, lines_as_rows, windows_per_sentence
from .io import DataError, UserError
from .metrics.ner import char_span_scores, ner_scores, token_accuracy
from .module import TaskModule
from .registry import TASKS


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
        format: ``conll`` (columns), or raw text with character-offset spans from an annotation
            tool: ``doccano`` (JSONL), ``labelstudio`` (JSON export) or ``spans-jsonl`` (ours:
            ``{"text", "spans": [{"start", "end", "label"}]}``), for every split (``data.spans``).
            Scored at the character level; predictions are written back in the same format. A
            predict file is read in it too, unless ``predict_format`` is ``conll`` or ``text`` or
            the file is ``.txt``/``.text`` (raw text, one per line).
        misaligned_spans: a span that does not start and end on word boundaries: ``error``,
            ``warn`` (widened to whole words, reported once per file: the count and the first
            few) or ``expand`` (widened without the report).
    """

    feature_functions = (TaggingFeaturizer.batch_function, split_words)  # their source keys the cache
    long_inputs = "were split into windows"  # sentences: each word predicted once
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
        format: Literal["conll", "doccano", "labelstudio", "spans-jsonl"] = "conll",
        misaligned_spans: Literal["error", "warn", "expand"] = "warn",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        try:
            tag_scheme = conll.scheme_for_labels(labels, tag_scheme)
        except ValueError as err:
            raise UserError(str(err)) from None
        self.files = TaggedFiles(
            format, tag_column, tag_scheme, unseen_tags, misaligned_spans, predict_format
        )
        self.tag_scheme, self.tag_column = tag_scheme, tag_column  # stored in checkpoints (stored_settings)
        self.label_all_tokens, self.document_context = label_all_tokens, document_context
        self.splits: dict[str, conll.TaggedSplit] = {}
        self.span_data: dict[str, spans.SpanData] = {}  # the splits read from annotation files
        # Decided once, here: the CLI links task and labels to the model right after instantiation.
        self.task = "ner"
        self.label_names = list(labels) if labels is not None else self._train_label_names()

    def _train_label_names(self) -> list[str] | None:
        """ "O" and each entity type's tags in the training scheme, from the train split."""
        if not self.has_split("train"):
            return None
        types = conll.entity_types(tag for tags in self.read("train").gold for tag in tags)
        return conll.label_names_for(types, self.tag_scheme)

    def train_label_counts(self) -> tuple[list[int], int]:
        """How many training words carry each tag (in label id order), and how many labelled words
        there are: what ``--model.class_weights balanced`` is computed from."""
        index = {name: i for i, name in enumerate(self.label_names or [])}
        counts = [0] * len(index)
        for tags in self.read("train").gold or []:
            for tag in tags:
                counts[index[tag]] += 1
        return counts, sum(counts)

    def read(self, split: str) -> conll.TaggedSplit:
        """The split (a file, or the Hub data set's) in the training scheme, read once."""
        if split not in self.splits:
            path = self.split_file(split)
            hub = None
            if path is None:
                if (rows := self.hub_split(split)) is None:
                    raise UserError(f"no {split} file: set --data.{split}_file")
                hub = (rows, f"{self.dataset}[{split}]")
            self.splits[split], span_data = self.files.read(split, path, self.label_names, hub)
            if span_data is not None:
                self.span_data[split] = span_data
        return self.splits[split]

    def featurizer(self, data_format: Literal["conll", "text"] = "conll") -> TaggingFeaturizer:
        """How this data module's sentences become windows (its fields: the feature cache key)."""
        if self.label_names is None:
            raise UserError(
                "the label set is unknown: give --data.train_file, --data.labels, or a checkpoint (--ckpt_path)"
            )
        settings = (self.document_context, self.label_all_tokens, self.tag_column, data_format)
        return TaggingFeaturizer(tuple(self.label_names), self.tag_scheme, *settings)

    def build(self, split: str) -> tuple[conll.TaggedSplit, Any]:
        """The split as read and its windows (a ``datasets.Dataset`` of ``FEATURE_COLUMNS``)."""
        data, featurizer = self.read(split), self.featurizer()
        function = featurizer.batch_function(self.tokenizer, self.max_seq_length)
        rows = featurizer.rows(data.sentences, data.gold)
        return data, self.feature_cache.examples(
            f"{split}-{Path(data.path).name}", rows, function, featurizer.cache_key(), data.path
        )

    def prepare(self, split: str) -> list[Prepared]:
        path = self.split_file(split)
        text = split == "predict" and path is not None and not self.files.reads_spans(split, path)
        if text and reads_as_text(path, self.files.predict_format):
            return [self._prepare_text(path)]
        data, features = self.build(split)
        windows = windows_per_sentence(features, len(data.sentences)).tolist()
        context = TaggingContext([len(s.words) for s in data.sentences], self.tag_scheme)
        outputs = []
        if (span_data := self.span_data.get(split)) is not None:
            context.word_offsets, context.gold_spans = span_data.offsets, span_data.gold_spans
            if split == "predict":
                outputs = [self._span_predictions(span_data)]
        elif split == "predict":  # the file again, with a predicted-tag column (a Hub data set: JSONL)
            render, footer = data.prediction_lines(self.tag_scheme)
            written = self.predictions_path("predictions.conll")
            outputs = [OutputFile(written, lambda s, p: render(s, p.tags), footer=footer)]
        evaluation = Evaluation(split, data.path, windows, data.gold, context, outputs=outputs)
        return [Prepared(features, evaluation)]

    def _span_predictions(self, data: spans.SpanData) -> OutputFile:
        """The annotation file again, in its own format, with the predicted entities."""
        writer = spans.SpanWriter(data.records, data.format)
        offsets = data.offsets

        def render(index: int, prediction: TaggedSentence) -> list[str]:
            return writer.render(index, spans.tags_to_char_spans(prediction.tags, offsets[index]))

        path = self.predictions_path(writer.file_name)
        return OutputFile(path, render, header=writer.header, footer=lambda: writer.footer)

    def _prepare_text(self, path: str) -> Prepared:
        """Raw text, streamed into the feature cache; decoding and the writer read each line again."""
        featurizer = self.featurizer("text")
        function = featurizer.batch_function(self.tokenizer, self.max_seq_length)
        name, rows = f"predict-{Path(path).name}", lambda: lines_as_rows(line_words(path))
        features, count = self.feature_cache.stream(name, path, rows, function, featurizer.cache_key())
        if not len(features):
            raise DataError(path, "empty file: no text to tag (only blank lines, or none)", line=1)
        render = entity_lines(path)
        outputs = [OutputFile(self.predictions_path(), lambda s, p: render(s, p.tags))]
        context = TaggingContext(LineWordCounts(path), self.tag_scheme)
        windows = windows_per_sentence(features, count)
        return Prepared(features, Evaluation("predict", str(path), windows, context=context, outputs=outputs))


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
        class_weights: ``balanced`` (from the train file's tag counts: ``O`` down-weighted, rare tags
            up) or one weight per label in ``label_names`` order, for the training loss; see
            ``tasks.class_weights``. The reported ``val/loss`` stays the unweighted mean per word.
    """

    main_metric = TASKS["tagging"].main_metric
    example_noun = "sentences"
    main_metric_mode = "max"
    uses_pooler = False
    checkpoint_key = "tagging"  # where a checkpoint keeps the tag scheme

    def __init__(
        self,
        classifier_dropout: float | None = None,
        strict_metrics: bool = False,
        decoding: Literal["viterbi", "argmax"] = "viterbi",
        class_weights: str | list[float] | None = None,
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
        self.strict_metrics, self.decoding = strict_metrics, decoding
        self.tag_scheme: str | None = None  # the data's, once set up; a checkpoint's when restored
        self.register_buffer("class_weights", weights_buffer(class_weights, len(self.label_names)))

    @property
    def scheme(self) -> str:
        """The tag scheme of the labels: the data's (or the checkpoint's); without either, IOBES
        when the labels hold E-/S- tags, else BIO."""
        return self.tag_scheme or conll.scheme_for_labels(self.label_names, "BIO")

    def setup(self, stage: str) -> None:
        super().setup(stage)
        fill_balanced(self, stage)
        schemes = {e.context.tag_scheme for evaluations in self.evaluations.values() for e in evaluations}
        if schemes:
            (self.tag_scheme,) = schemes

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[self.checkpoint_key] = {"tag_scheme": self.scheme}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint.get(self.checkpoint_key, {}).get("tag_scheme")
        if stored and self.tag_scheme and stored != self.tag_scheme:
            raise UserError(
                f"the checkpoint was trained with --data.tag_scheme {stored}, not {self.tag_scheme}: "
                "pass the same scheme"
            )
        self.tag_scheme = stored or self.tag_scheme

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.token_states(batch)  # [B, T, H], or the head_layers combined
        return self.classifier(self.dropout(hidden))  # [B, T, labels]

    def training_loss(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return F.cross_entropy(
            outputs.flatten(0, 1),
            batch["labels"].flatten(),
            weight=self.class_weights,
            ignore_index=IGNORE_INDEX,
        )

    def split_outputs(
        self, outputs: torch.Tensor, batch: dict[str, Any]
    ) -> list[tuple[int, int, WindowOutput]]:
        """Each window's labelled words, their label log-probabilities, and its loss (summed over
        its labelled tokens, so that the split's loss is the mean over all of them)."""
        return window_outputs(outputs, batch)

    def decode(self, example: int, outputs: list[WindowOutput], evaluation: Evaluation) -> TaggedSentence:
        length = evaluation.context.sentence_lengths[example]
        return TaggedSentence.from_windows(length, outputs, self.label_names, self.scheme, self.decoding)

    def score(self, predictions: dict[int, TaggedSentence], evaluation: Evaluation) -> dict[str, float]:
        if evaluation.gold is None:
            return {}
        gold, done = [evaluation.gold[i] for i in predictions], predictions.values()
        context = evaluation.context
        if context.gold_spans is not None:  # text with character offsets: scored in characters
            predicted = [
                spans.tags_to_char_spans(p.tags, context.word_offsets[i]) for i, p in predictions.items()
            ]
            scores = char_span_scores([context.gold_spans[i] for i in predictions], predicted)
            scores["token_accuracy"] = token_accuracy(gold, [p.tags for p in done])
        else:
            scores = ner_scores(gold, [p.tags for p in done], self.scheme, self.strict_metrics)
        scores["loss"] = sum(p.loss_sum for p in done) / max(sum(p.labelled for p in done), 1)
        return scores
