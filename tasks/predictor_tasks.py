"""Each task kind as the plain predictor (``tasks.predictor``) sees it: a request record -> an
example, examples -> features (the task's ``features/`` featurizer), model outputs -> a decoded
prediction (the task's own ``split_outputs``/``decode``, which its LightningModule calls too) ->
the record its predictions file holds. No Lightning."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch

from .evaluation import OutputFile
from .feature_cache import INPUT_LENGTHS
from .io import UserError


class TaskAdapter:
    """What the predictor needs of a task kind; see the subclasses."""

    kind: ClassVar[str]
    long_inputs: ClassVar[str] = "were truncated"  # what became of an input over max_seq_length
    example_column: ClassVar[str] = "example"  # the feature column naming its example
    # The columns the Lightning loader hands the module (the rest of a feature stays behind).
    loader_columns: ClassVar[tuple[str, ...]] = (
        "input_ids",
        "token_type_ids",
        "attention_mask",
        "example",
        "feature_index",
    )

    def __init__(
        self,
        hparams: dict[str, Any],
        settings: dict[str, Any],
        tokenizer: Any,
        state: dict[str, torch.Tensor],
        num_layers: int,
    ):
        self.hparams, self.settings, self.tokenizer = hparams, settings, tokenizer
        self.pad_token_id = tokenizer.pad_token_id
        self.label_names: list[str] | None = None
        self.head_outputs = 0  # the head's outputs the task's settings call for

    @property
    def labels(self) -> list[str] | None:
        """The labels as records name them (``info()``)."""
        return self.label_names

    @staticmethod
    def make_tokenizer(source: Any, payload: dict[str, Any]) -> Any:
        """The model's tokenizer (transformers' unless the task's featurizer needs less)."""
        return source.tokenizer()

    # -- requests --------------------------------------------------------------------------------

    def example(self, record: Any, position: int) -> Any:
        """A request record as the task's example (a UserError naming a malformed field)."""
        raise NotImplementedError

    def record(self, position: int, example: Any, prediction: Any) -> dict[str, Any]:
        """The record predict's predictions file holds for the example."""
        raise NotImplementedError

    # -- files -----------------------------------------------------------------------------------

    def read(self, path: str) -> Iterator[Any]:
        """A predict file's examples in order (None: a blank line)."""
        raise NotImplementedError

    def output_files(self, path: str, predictions: Path, default_folder: bool) -> list[OutputFile]:
        """The files predict writes for ``path`` (``predictions``: the records file)."""
        raise NotImplementedError

    @classmethod
    def handles_file(cls, path: str) -> bool:
        """Whether the plain predict reads this file as predict does (else: the Lightning way)."""
        return True

    def no_features(self, path: str) -> Exception | None:
        """The error of a file that gave no model input at all (None: not an error)."""
        return None

    # -- model inputs and outputs ----------------------------------------------------------------

    def features(
        self, examples: list[Any], numbers: list[int] | None = None, lengths: list[int] | None = None
    ) -> list[dict[str, Any]]:
        """Each example's features (several windows for a long one), numbered by ``numbers``;
        each input's whole length in tokens is appended to ``lengths``."""
        raise NotImplementedError

    def loader_row(self, feature: dict[str, Any]) -> dict[str, Any]:
        return {k: feature[k] for k in self.loader_columns if k in feature}

    def split_outputs(self, outputs: Any, batch: dict[str, Any]) -> list[tuple[int, int, Any]]:
        raise NotImplementedError

    def decode(self, index: int, example: Any, outputs: list[Any], features: list[dict] = ()) -> Any:
        """The prediction from an example's outputs (in feature order); ``features``: its features."""
        raise NotImplementedError


def rows_of(columns: dict[str, list], lengths: list[int] | None = None) -> list[dict[str, Any]]:
    """A batched featurizer's columns as one dict per feature, numbered from 0; the input lengths
    it measured are appended to ``lengths``."""
    if lengths is not None:
        lengths.extend(columns.get(INPUT_LENGTHS, ()))
    columns = {k: v for k, v in columns.items() if k != INPUT_LENGTHS}
    size = len(next(iter(columns.values()))) if columns else 0
    rows = [{k: v[i] for k, v in columns.items()} for i in range(size)]
    for i, row in enumerate(rows):
        row["feature_index"] = i
    return rows


def text_field(record: dict, name: str, required: bool = True) -> str | None:
    """A request's text field: a non-empty string (a UserError naming the field otherwise)."""
    value = record.get(name)
    if value is None:
        if required:
            raise UserError(f"{name}: missing (a record needs a non-empty string {name!r})")
        return None
    if not isinstance(value, str):
        raise UserError(f"{name}: a string expected, not {type(value).__name__}")
    if not value.strip():
        raise UserError(f"{name}: empty")
    return value


def check_record(record: Any) -> dict:
    if not isinstance(record, dict):
        raise UserError(f"a record is a JSON object, not {type(record).__name__}")
    return record


class ClassificationAdapter(TaskAdapter):
    kind = "classification"

    def __init__(self, hparams, settings, tokenizer, state, num_layers):
        super().__init__(hparams, settings, tokenizer, state, num_layers)
        from .data.classification_outputs import display_names
        from .data.glue import GLUE_TASKS
        from .features.classification import SentenceFeatures, is_regression

        self.task = hparams.get("task") or "classification"
        self.regression = is_regression(self.task)
        self.label_names = None if self.regression else list(hparams["label_names"])
        self.display = display_names(self.task)
        glue = GLUE_TASKS.get(self.task)
        # A generic task's pairs are a data option (--data.text_pair_column), not in the checkpoint.
        self.is_pair = glue.is_pair if glue is not None else bool(settings.get("text_pair_column"))
        self.settings = settings
        length = settings["max_seq_length"]
        self.featurizer = SentenceFeatures(self.task, self.label_names, self.is_pair, length)
        self.tokenize = self.featurizer.tokenizing(tokenizer)
        self.head_outputs = 1 if self.regression else len(self.label_names)
        self.thresholds = state.get("thresholds")
        self.threshold = state.get("threshold")

    @staticmethod
    def make_tokenizer(source: Any, payload: dict[str, Any]) -> Any:
        """``tokenizers`` directly: transformers' import is most of a short predict's time."""
        from bert_core.plain_tokenizer import PlainTokenizer
        from bert_core.vocab import vocab_ids

        positions = payload["bert_config"].get("max_position_embeddings", 512)
        return PlainTokenizer(vocab_ids(payload["vocab"], warn=False), payload["do_lower_case"], positions)

    @property
    def labels(self) -> list[str] | None:
        return None if self.label_names is None else [self.display(n) for n in self.label_names]

    def example(self, record: Any, position: int):
        from .data.tables import Example

        record = check_record(record)
        text = text_field(record, "text")
        pair_name = "text_pair" if "text_pair" in record or "text_b" not in record else "text_b"
        pair = text_field(record, pair_name, required=self.is_pair)
        if pair is not None and not self.is_pair:
            raise UserError(f"{pair_name}: this model classifies single texts, not pairs")
        index = record.get("index", position)
        return Example(index=str(index), text=text, text_pair=pair, line=position + 1)

    def record(self, position: int, example: Any, prediction: Any) -> dict[str, Any]:
        from .data.classification_outputs import prediction_record

        if example is None:
            return {"line": position + 1, "text": ""}
        return prediction_record(example, prediction, self.display)

    def read(self, path: str) -> Iterator[Any]:
        from .data.classification_inputs import iter_predict_file

        stored = self.settings  # a generic table's layout, as the train file's (stored in the checkpoint)
        columns = {
            k: stored[k] for k in ("text_column", "index_column", "header", "label_separator") if k in stored
        }
        pair = {"text_pair_column": stored.get("text_pair_column")}
        return iter_predict_file(
            path, self.task, self.is_pair, **columns, **pair, label_names=self.label_names
        )

    def output_files(self, path: str, predictions: Path, default_folder: bool) -> list[OutputFile]:
        from .data.classification_outputs import prediction_files
        from .data.text import LineCursor

        cursor = lambda: LineCursor(lambda: self.read(path)).get  # noqa: E731
        return prediction_files(predictions, self.task, path, cursor, default_folder)

    def features(self, examples, numbers=None, lengths=None) -> list[dict[str, Any]]:
        numbers = list(range(len(examples))) if numbers is None else numbers
        if not examples:
            return []
        rows = [{**self.featurizer.row(e), "example": n} for e, n in zip(examples, numbers)]
        columns = {key: [row[key] for row in rows] for key in rows[0]}
        return rows_of(self.tokenize(columns), lengths)

    def split_outputs(self, outputs: Any, batch: dict[str, Any]) -> list[tuple[int, int, Any]]:
        from .decoding.classification import split_logits

        return split_logits(outputs, batch)

    def decode(self, index: int, example: Any, outputs: list[Any], features: list[dict] = ()) -> Any:
        from .decoding.classification import classify

        if not outputs:
            return None
        (logits,) = outputs
        return classify(logits, self.label_names, self.regression, self.thresholds, self.threshold)


class TaggingAdapter(TaskAdapter):
    """NER: a raw text (``text``: its entities with character offsets, as predict writes for a
    ``.txt`` file) or given words (``tokens``: a tag per word)."""

    kind = "tagging"
    long_inputs = "were split into windows"
    example_column = "sentence"

    def __init__(self, hparams, settings, tokenizer, state, num_layers):
        super().__init__(hparams, settings, tokenizer, state, num_layers)
        from .data import conll
        from .features.tagging import FEATURE_COLUMNS, TaggingFeaturizer

        self.label_names = list(hparams["label_names"])
        self.head_outputs = len(self.label_names)
        self.scheme = conll.scheme_for_labels(self.label_names, settings.get("tag_scheme") or "BIO")
        self.decoding = hparams.get("decoding", "viterbi")
        featurizer = TaggingFeaturizer(
            tuple(self.label_names),
            self.scheme,
            bool(settings.get("document_context", False)),
            bool(settings.get("label_all_tokens", False)),
            settings.get("tag_column", -1),
            "text",
        )
        self.featurize = featurizer.batch_function(tokenizer, settings["max_seq_length"])
        self.loader_columns = (*FEATURE_COLUMNS, "feature_index")

    make_tokenizer = staticmethod(ClassificationAdapter.make_tokenizer)

    @classmethod
    def handles_file(cls, path: str) -> bool:
        """Raw text (``.txt`` not in CoNLL columns): CoNLL and annotation files go the Lightning way."""
        from .data.words import reads_as_text

        return reads_as_text(path, "auto")

    def example(self, record: Any, position: int):
        from .data.words import split_words

        record = check_record(record)
        if "tokens" in record:
            tokens = record["tokens"]
            if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
                raise UserError("tokens: a non-empty list of strings expected")
            if any(not t.strip() or any(c.isspace() for c in t) for t in tokens):
                raise UserError("tokens: each token a non-empty string without spaces")
            return {"tokens": tokens, "words": list(tokens)}
        text = text_field(record, "text")
        spans = split_words(text)
        return {"text": text, "spans": spans, "words": [text[a:b] for a, b in spans]}

    def record(self, position: int, example: Any, prediction: Any) -> dict[str, Any]:
        from .data.words import entity_record

        if "tokens" in example:
            return {"tokens": example["tokens"], "tags": prediction.tags}
        return entity_record(example["text"], example["spans"], prediction.tags)

    def read(self, path: str) -> Iterator[Any]:
        from .data.words import line_words

        return ({"words": words} for words in line_words(path))

    def output_files(self, path: str, predictions: Path, default_folder: bool) -> list[OutputFile]:
        from .data.words import entity_lines

        render = entity_lines(path)
        return [OutputFile(predictions, lambda s, p: render(s, p.tags))]

    def no_features(self, path: str) -> Exception:
        from .io import DataError

        return DataError(path, "empty file: no text to tag (only blank lines, or none)", line=1)

    def features(self, examples, numbers=None, lengths=None) -> list[dict[str, Any]]:
        numbers = list(range(len(examples))) if numbers is None else numbers
        rows = [
            {"sentence_ids": [n], "words": [e["words"]], "labels": [[]]}
            for e, n in zip(examples, numbers)
            if e["words"]
        ]
        if not rows:
            return []
        columns = {key: [row[key] for row in rows] for key in rows[0]}
        return rows_of(self.featurize(columns), lengths)

    def split_outputs(self, outputs: Any, batch: dict[str, Any]) -> list[tuple[int, int, Any]]:
        from .decoding.tagging import window_outputs

        return window_outputs(outputs, batch)

    def decode(self, index: int, example: Any, outputs: list[Any], features: list[dict] = ()) -> Any:
        from .decoding.tagging import TaggedSentence

        length = len(example["words"])
        return TaggedSentence.from_windows(length, outputs, self.label_names, self.scheme, self.decoding)


class QAAdapter(TaskAdapter):
    """Extractive QA: ``{"question", "context"[, "id"]}`` -> ``{id, answer, start, end, score}``
    (character offsets into the context), as predict writes for a JSONL question file."""

    kind = "qa"
    long_inputs = "were split into windows"
    example_column = "example_index"
    loader_columns = ("input_ids", "token_type_ids", "attention_mask", "example_index", "feature_index")

    def __init__(self, hparams, settings, tokenizer, state, num_layers):
        super().__init__(hparams, settings, tokenizer, state, num_layers)
        from .decoding.qa import QADecoder
        from .features.qa import QAFeaturizer

        v2 = hparams.get("task") == "squad_v2"
        self.head_outputs = 2  # start and end
        sizes = (settings.get("max_query_length", 64), settings.get("doc_stride", 128))
        self.featurizer = QAFeaturizer(settings["max_seq_length"], *sizes, False, v2)
        self.decoder = QADecoder(
            hparams.get("n_best_size", 20),
            hparams.get("max_answer_length", 30),
            v2,
            hparams.get("null_score_diff_threshold", 0.0),
        )

    @classmethod
    def handles_file(cls, path: str) -> bool:
        """JSONL questions (streamed as predict streams them); SQuAD JSON goes the Lightning way."""
        from .data.squad import looks_like_jsonl

        return looks_like_jsonl(path)

    def example(self, record: Any, position: int):
        from .data.squad import SquadExample

        record = check_record(record)
        question, context = text_field(record, "question"), text_field(record, "context")
        qid = record.get("id", str(position))
        if not isinstance(qid, str | int) or isinstance(qid, bool):
            raise UserError(f"id: a string expected, not {type(qid).__name__}")
        return SquadExample(str(qid), question, context, None)

    def record(self, position: int, example: Any, prediction: Any) -> dict[str, Any]:
        from .data.squad import prediction_record

        return prediction_record(prediction)

    def read(self, path: str) -> Iterator[Any]:
        from .data.squad import iter_jsonl_questions

        return iter_jsonl_questions(path)

    def output_files(self, path: str, predictions: Path, default_folder: bool) -> list[OutputFile]:
        from .data.squad import prediction_line

        return [OutputFile(predictions, lambda _, prediction: [prediction_line(prediction)])]

    def features(self, examples, numbers=None, lengths=None) -> list[dict[str, Any]]:
        from .features.qa import feature_columns

        numbers = list(range(len(examples))) if numbers is None else numbers
        if not examples:
            return []
        windows, stats = self.featurizer(examples, self.tokenizer)
        if lengths is not None:
            lengths.extend(stats.input_lengths)
        rows = rows_of(feature_columns(windows, numbers, False))
        for row, window in zip(rows, windows, strict=True):
            row["window"] = window  # what decoding reads besides the logits
        return rows

    def split_outputs(self, outputs: Any, batch: dict[str, Any]) -> list[tuple[int, int, Any]]:
        from .decoding.qa import window_logits

        return window_logits(outputs, batch)

    def decode(self, index: int, example: Any, outputs: list[Any], features: list[dict] = ()) -> Any:
        return self.decoder(example, [f["window"] for f in features], outputs)


class ExtractionAdapter(TaskAdapter):
    """Feature extraction with a pretrained encoder: ``{"text"[, "text_pair"]}`` -> the line's
    vector (the last layer, mean-pooled over its tokens, as ``configs/features.yaml``)."""

    kind = "features"
    loader_columns = (
        "input_ids",
        "token_type_ids",
        "attention_mask",
        "word_ids",
        "num_words",
        "example",
        "feature_index",
    )
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "layers": [-1],
        "combine": "concat",
        "pooling": "mean",
        "word_vector": "first",
    }

    def __init__(self, hparams, settings, tokenizer, state, num_layers):
        super().__init__(hparams, settings, tokenizer, state, num_layers)
        from .features.extraction import LineFeaturizer
        from .heads import hidden_layer_index

        self.options = {**self.DEFAULTS, **{k: v for k, v in hparams.items() if k in self.DEFAULTS}}
        self.layer_indices = [hidden_layer_index(i, num_layers) for i in self.options["layers"]]
        self.featurize = LineFeaturizer(tokenizer, settings["max_seq_length"])

    def example(self, record: Any, position: int):
        from .data.tables import Example

        record = check_record(record)
        text, pair = text_field(record, "text"), text_field(record, "text_pair", required=False)
        return Example(index=str(position), text=text, text_pair=pair, line=position + 1)

    def record(self, position: int, example: Any, prediction: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {"line": position + 1, "text": example.text}
        if example.text_pair is not None:
            fields["text_pair"] = example.text_pair
        key = "vectors" if self.options["pooling"] == "none" else "vector"
        return {**fields, key: prediction.tolist()}

    @classmethod
    def handles_file(cls, path: str) -> bool:
        return False  # feature files (.npy, .safetensors) are written the Lightning way

    def features(self, examples, numbers=None, lengths=None) -> list[dict[str, Any]]:
        from .features.extraction import line_row

        numbers = list(range(len(examples))) if numbers is None else numbers
        if not examples:
            return []
        rows = [{**line_row(e), "example": n} for e, n in zip(examples, numbers)]
        return rows_of(self.featurize({key: [row[key] for row in rows] for key in rows[0]}), lengths)

    def split_outputs(self, outputs: Any, batch: dict[str, Any]) -> list[tuple[int, int, Any]]:
        from .decoding.extraction import line_vectors

        how = (self.options["combine"], self.options["pooling"], self.options["word_vector"])
        return line_vectors(outputs, batch, self.layer_indices, *how)

    def decode(self, index: int, example: Any, outputs: list[Any], features: list[dict] = ()) -> Any:
        return outputs[0]


TASK_ADAPTERS: dict[str, type[TaskAdapter]] = {
    adapter.kind: adapter for adapter in (ClassificationAdapter, TaggingAdapter, QAAdapter, ExtractionAdapter)
}
