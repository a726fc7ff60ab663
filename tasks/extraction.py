"""Feature extraction: the encoder as a frozen feature extractor, one vector per input line.

``python -m tasks predict --config configs/features.yaml --data.predict_file texts.txt`` reads one
text (or ``a<TAB>b`` pair) per line and writes, streamed and atomically:

* pooled (``--model.pooling cls|mean|max``): ``--data.predictions_file out.npy``, float32
  ``[num_lines, dim]``;
* per word (``--model.pooling none``): ``out.safetensors`` with ``vectors`` ``[total_words, dim]``
  and ``offsets`` ``[num_lines + 1]`` (line i's words: ``vectors[offsets[i]:offsets[i+1]]``),
  one vector per whitespace word (its first sub-token, or the mean of its sub-tokens);
* Google's ``extract_features.py`` JSONL (``--data.features_format google_jsonl``): every token
  of every line with the values of each requested layer;

and ``out.index.jsonl`` beside it: line number, text, number of words. Layers use Google's
indexing (-1 the last encoder layer, 0 the embedding output) and are combined by
``--model.combine``; pooling runs over the real tokens ([CLS] and [SEP] included).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch

from .data.arrays import NpyRows, SafetensorsRagged
from .data.tables import Example
from .data.text import LineCursor, iter_text
from .datamodule import Prepared, TaskDataModule
from .decoding.extraction import line_vectors
from .evaluation import Evaluation, OutputFile
from .features.extraction import ExtractionLayout, LineFeaturizer, line_row
from .heads import all_hidden_states
from .io import UserError
from .module import COMBINE_MODES, TaskModule, hidden_layer_index

POOLING = ("cls", "mean", "max", "none")
WORD_VECTOR = ("first", "mean")


@dataclass
class ExtractionContext:
    per_token_layers: bool  # Google's JSONL: every token, each layer apart


class FeatureDataModule(TaskDataModule):
    """Text lines for feature extraction (predict only).

    Args:
        features_format: ``npy`` (``.npy`` pooled vectors, or ``.safetensors`` per-word vectors
            with ``--model.pooling none``) or ``google_jsonl`` (Google's extract_features layout).
        pooling: set from ``--model.pooling`` by the CLI (it decides the file layout).
    """

    stored_settings = ("max_seq_length",)
    task = "features"
    label_names = None

    def __init__(self, features_format: str = "npy", pooling: str = "mean", **kwargs: Any):
        super().__init__(**kwargs)
        self.layout = ExtractionLayout(features_format, pooling)
        self.features_format, self.pooling = features_format, pooling

    def _token_budget_batches(self, dataset) -> bool:
        # Google's JSONL keeps every token's layers: batches in file order, so that decoding in
        # order holds a batch of them, not a chunk of 4,096 lines.
        return not self.layout.per_token_layers and super()._token_budget_batches(dataset)

    def prepare(self, split: str) -> list[Prepared]:
        if split != "predict":
            raise UserError(
                "feature extraction only predicts: python -m tasks predict --config configs/features.yaml"
            )
        path = self.predict_file
        if path is None:
            raise UserError("no input: set --data.predict_file (one text, or a<TAB>b, per line)")
        featurizer = LineFeaturizer(self.tokenizer, self.max_seq_length)
        settings = {"max_seq_length": self.max_seq_length}
        rows = lambda: map(line_row, iter_text(path))  # noqa: E731 (read only when the cache misses)
        dataset, count = self.feature_cache.stream("predict", path, rows, featurizer, settings)
        context = ExtractionContext(per_token_layers=self.layout.per_token_layers)
        outputs = self._outputs(path)
        evaluation = Evaluation("predict", str(path), windows=[1] * count, context=context, outputs=outputs)
        return [Prepared(dataset, evaluation)]

    def _outputs(self, path: str) -> list[OutputFile]:
        target = self.predictions_path(self.layout.default_name())
        if self.layout.per_token_layers:
            tokenizer = self.tokenizer

            def google(example: int, value: dict[str, Any]) -> list[str]:
                tokens = tokenizer.convert_ids_to_tokens(value["input_ids"])
                features = [
                    {
                        "token": token,
                        "layers": [
                            {"index": layer, "values": [round(float(x), 6) for x in value["states"][t, k]]}
                            for k, layer in enumerate(value["layers"])
                        ],
                    }
                    for t, token in enumerate(tokens)
                ]
                return [json.dumps({"linex_index": example, "features": features}, ensure_ascii=False)]

            vectors = OutputFile(target, google)
        else:  # pooled rows in .npy, or per-word matrices in .safetensors
            array = SafetensorsRagged() if self.layout.per_word else NpyRows()
            vectors = OutputFile(
                target,
                lambda example, value: [array.encode(value)],
                header=array.header,  # called as each predict starts: it resets the counts
                binary=True,
                finish=array.finish,
            )
        self.layout.check_target(target)
        index_path = target.with_name(f"{target.name.rsplit('.', 1)[0]}.index.jsonl")
        cursor = LineCursor(lambda: iter_text(path))

        def index(example: int, value: Any) -> list[str]:
            item: Example | None = cursor.get(example)
            record: dict[str, Any] = {"line": example + 1, "text": item.text if item else ""}
            if item is not None and item.text_pair is not None:
                record["text_pair"] = item.text_pair
            words = len(record["text"].split()) + len((record.get("text_pair") or "").split())
            record["words"] = words
            return [json.dumps(record, ensure_ascii=False)]

        return [vectors, OutputFile(index_path, index)]


class FeatureExtractor(TaskModule):
    """The pretrained encoder, frozen, turned into vectors (nothing is trained).

    Args:
        layers: hidden layers to read, Google's indexing (-1 the last, 0 the embedding output).
        combine: concat (len(layers) x H), mean or sum of the layers.
        pooling: cls, mean or max over the real tokens of a line; none: one vector per word.
        word_vector: with pooling none, a word's first sub-token or the mean of its sub-tokens.
    """

    runs_without_fine_tuning = True

    def __init__(
        self,
        layers: list[int] | None = None,
        combine: str = "concat",
        pooling: str = "mean",
        word_vector: str = "first",
        **kwargs: Any,
    ):
        kwargs.setdefault("freeze_encoder", True)
        super().__init__(**kwargs)
        for name, value, choices in (
            ("combine", combine, COMBINE_MODES),
            ("pooling", pooling, POOLING),
            ("word_vector", word_vector, WORD_VECTOR),
        ):
            if value not in choices:
                raise UserError(f"--model.{name} must be one of {', '.join(choices)}, not {value!r}")
        self.layers = [-1] if layers is None else list(layers)
        if not self.layers:
            raise UserError("--model.layers is empty: name at least one layer (e.g. [-1])")
        num_layers = self.encoder.config.num_hidden_layers
        self.layer_indices = [hidden_layer_index(i, num_layers) for i in self.layers]

    def setup(self, stage: str) -> None:
        if stage != "predict":
            raise UserError(f"feature extraction has nothing to {stage}: use predict")
        super().setup(stage)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return all_hidden_states(self.encoder, batch)  # (embeddings, layer 1, ..., layer L)

    def split_outputs(self, outputs, batch: dict[str, Any]) -> list[tuple[int, int, Any]]:
        context: ExtractionContext = self.evaluations["predict"][0].context
        if not context.per_token_layers:
            how = (self.hparams.combine, self.hparams.pooling, self.hparams.word_vector)
            return line_vectors(outputs, batch, self.layer_indices, *how)
        outputs = tuple(h.float().cpu() for h in outputs)  # numpy arrays go to the writer
        mask = batch["attention_mask"].bool().cpu()  # [B, T]
        input_ids = batch["input_ids"].cpu()
        examples, features = batch["example"].tolist(), batch["feature_index"].tolist()
        states = torch.stack([outputs[i] for i in self.layer_indices], dim=2)  # [B, T, layers, H]
        values = [
            {
                "input_ids": input_ids[b][mask[b]].tolist(),
                "states": states[b][mask[b]].numpy(),
                "layers": self.layers,
            }
            for b in range(len(examples))
        ]
        return list(zip(examples, features, values))

    def decode(self, example: int, outputs: list[Any], evaluation: Evaluation) -> Any:
        return outputs[0]
