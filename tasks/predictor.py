"""Plain inference, no Lightning: a fine-tuned checkpoint (or its ONNX export) -> records.

``Predictor.load(path)`` opens the model source once (``Source``), rebuilds the encoder and the
task's head from the weights, and ``predictor(records)`` runs request records (the fields of a
predict file's JSONL lines) through the task's pure rooms: ``features/`` to make the model inputs,
token-budget batches (``TokenBudgetBatchSampler``), the task's ``split_outputs`` and ``decode`` (the
functions the LightningModules call too), and the record a predictions file holds. So its records
equal ``python -m tasks predict``'s, record for record; ``python -m tasks predict`` runs through it
when no Lightning option is asked for (``tasks.plain_predict``).

    from tasks.predictor import Predictor
    predictor = Predictor.load("outputs/sst2/checkpoints/best.ckpt")
    predictor([{"text": "a warm, funny film"}])   # [{"line": 1, "index": "0", "label": ..., ...}]
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .batching import collate
from .heads import HeadInputs, all_hidden_states, hidden_layer_index, span_logits
from .inference import RUNTIMES, OnnxRunner, int8_note, onnx_note
from .io import UserError
from .predictor_tasks import TASK_ADAPTERS, TaskAdapter
from .sampling import TokenBudgetBatchSampler
from .source import Source, mismatched_weights

DEFAULT_BATCH_TOKENS = 4096  # the data modules' eval_tokens_per_batch default


class TaskNet(HeadInputs, nn.Module):
    """The task module's forward without Lightning: the encoder, then the task's head, in eval mode."""

    def __init__(self, kind: str, encoder: nn.Module, head: nn.Module | None, hparams: dict[str, Any]):
        super().__init__()
        self.kind, self.encoder, self.head = kind, encoder, head
        layers = hparams.get("head_layers")
        num_layers = encoder.config.num_hidden_layers
        self.head_layers = None if layers is None else [hidden_layer_index(i, num_layers) for i in layers]
        self.head_combine = hparams.get("head_combine", "concat")
        self.regression = False

    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        if self.kind == "classification":
            logits = self.head(self.sentence_state(batch))  # [B, num_labels]
            return logits.squeeze(-1) if self.regression else logits
        if self.kind == "tagging":
            return self.head(self.token_states(batch))  # [B, T, labels]
        if self.kind == "qa":
            return span_logits(self.head(self.token_states(batch)), batch["attention_mask"])
        return all_hidden_states(self.encoder, batch)  # features


# The head's weights in a checkpoint's state dict, by task kind.
HEAD_NAMES = {"classification": "classifier", "tagging": "classifier", "qa": "qa_outputs", "features": None}


class Predictor:
    """A fine-tuned model of this app, ready to predict without Lightning (see the module's doc)."""

    task: str  # the registry key: "classification", "tagging", "qa", "features"

    def __init__(
        self,
        source: Source,
        adapter: TaskAdapter,
        run: Any,
        runtime: str,
        quantize: str | None,
        max_seq_length: int,
    ):
        self.source, self.adapter, self.run = source, adapter, run
        self.task = adapter.kind
        self.runtime, self.quantize, self.max_seq_length = runtime, quantize, max_seq_length
        self.notes: list[str] = []  # how the model runs (onnxruntime, int8), as predict says it

    @classmethod
    def load(
        cls,
        path: str,
        runtime: str = "torch",
        quantize: str | None = None,
        max_seq_length: int | None = None,
        map_weights: bool = False,
    ) -> Predictor:
        """A task checkpoint (``.ckpt``) or its ONNX export directory (``runtime="onnx"``);
        ``quantize="int8"``: the encoder's Linear layers in dynamic int8 (torch runtime);
        ``max_seq_length``: instead of the one the model was fine-tuned with (capped at its positions);
        ``map_weights``: the encoder's parameters stay in the checkpoint file's mapped pages instead of
        being copied (a quicker start, for a short-lived process such as ``predict``; a long-lived one
        copies them, so that a checkpoint rewritten in place under it cannot change or break it)."""
        if runtime not in RUNTIMES:
            raise UserError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
        if quantize not in (None, "int8"):
            raise UserError(f"quantize must be int8 (or None), not {quantize!r}")
        source = Source(path)
        if not source.is_task_model:  # a pretrained encoder: feature extraction
            if runtime == "onnx":
                raise UserError(f"runtime onnx runs an ONNX export directory, not {path}")
            return cls._extractor(source, quantize, max_seq_length)
        if (source.kind == Source.ONNX) != (runtime == "onnx"):
            raise UserError(
                f"{path}: an ONNX export runs with runtime onnx"
                if source.kind == Source.ONNX
                else f"runtime onnx runs an ONNX export directory, not {path}"
            )
        if quantize and runtime == "onnx":
            raise UserError("quantize int8 quantizes the PyTorch encoder; it does not apply to runtime onnx")
        stored = source.stored()
        row = source.task_kind()
        kind = row.saves_as or row.key
        if kind not in TASK_ADAPTERS:
            raise UserError(f"{path}: a {kind} model; the predictor runs {', '.join(TASK_ADAPTERS)} models")
        hparams, settings = stored["hyper_parameters"], dict(stored["data_settings"])
        tokenizer = TASK_ADAPTERS[kind].make_tokenizer(source, stored["payload"])
        positions = tokenizer.model_max_length
        length = min(max_seq_length or settings.get("max_seq_length") or 128, positions)
        settings["max_seq_length"] = length
        encoder, _ = source.encoder(mapped=map_weights and runtime == "torch" and not quantize)
        state = source.state_dict() if source.kind == Source.CHECKPOINT else {}
        adapter = TASK_ADAPTERS[kind](hparams, settings, tokenizer, state, encoder.config.num_hidden_layers)
        if runtime == "onnx":
            run: Any = OnnxRunner(path)
            notes = [onnx_note(path)]
        else:
            run, notes = _torch_net(kind, encoder, state, hparams, adapter, path), []
            if quantize:
                from bert_core.quantize import quantize_int8

                notes = [int8_note(run.encoder, quantize_int8(run.encoder, "auto"))]
        predictor = cls(source, adapter, run, runtime, quantize, length)
        predictor.notes = notes
        return predictor

    @classmethod
    def _extractor(cls, source: Source, quantize: str | None, max_seq_length: int | None) -> Predictor:
        """A pretrained encoder's feature extractor (``configs/features.yaml``'s defaults)."""
        encoder, _ = source.encoder()
        tokenizer = source.tokenizer()
        length = min(max_seq_length or 128, tokenizer.model_max_length)
        num_layers = encoder.config.num_hidden_layers
        adapter = TASK_ADAPTERS["features"]({}, {"max_seq_length": length}, tokenizer, {}, num_layers)
        net, notes = TaskNet("features", encoder, None, {}).eval(), []
        if quantize:
            from bert_core.quantize import quantize_int8

            notes = [int8_note(net.encoder, quantize_int8(net.encoder, "auto"))]
        predictor = cls(source, adapter, net, "torch", quantize, length)
        predictor.notes = notes
        return predictor

    def info(self) -> dict[str, Any]:
        """What the model is: its task, labels, source, input length, runtime and library versions."""
        versions = {name: _version(name) for name in ("torch", "tokenizers", "onnxruntime")}
        from importlib.metadata import PackageNotFoundError

        try:
            versions["bert-tasks"] = importlib.metadata.version("bert-tasks")
        except PackageNotFoundError:
            pass
        return {
            "task": self.task,
            "labels": self.adapter.labels,
            "model": str(self.source.location),
            "max_seq_length": self.max_seq_length,
            "runtime": self.runtime,
            "versions": versions,
        }

    def check(self, record: dict) -> None:
        """A UserError naming the field when a request record is malformed."""
        self.adapter.example(record, 0)

    def length(self, record: dict) -> int:
        """The record's length in tokens (its longest window), for grouping requests by length."""
        return self.example_length(self.adapter.example(record, 0))

    def example_length(self, example: Any) -> int:
        """An example's length in tokens (its longest window)."""
        return max((len(f["input_ids"]) for f in self.adapter.features([example])), default=0)

    def __call__(self, records: list[dict], max_batch_tokens: int | None = None) -> list[dict]:
        """One record out per record in, in order: what predict's records file holds for it."""
        if isinstance(records, dict):
            raise UserError("records: a list of records, not one record")
        examples = [self.adapter.example(record, i) for i, record in enumerate(records)]
        predictions = dict(self.predict(examples, max_batch_tokens))
        return [self.adapter.record(i, example, predictions[i]) for i, example in enumerate(examples)]

    # -- the file path of ``python -m tasks predict`` --------------------------------------------

    def predict(
        self,
        examples: Iterable[Any],
        max_batch_tokens: int | None = None,
        batch_size: int | None = None,
        chunk: int = 4096,
        lengths: list[int] | None = None,
    ) -> Iterator[tuple[int, Any]]:
        """(example index, decoded prediction) for each of ``examples`` (None: a blank line, decoded
        from no outputs), in order, read and run a chunk at a time: batches by tokens (longest first
        within a chunk) or, with ``batch_size``, by rows in file order. ``lengths`` is given each
        input's whole length in tokens (what the input-length line reports)."""
        buffer: list[Any] = []
        start = 0
        for example in examples:
            buffer.append(example)
            if len(buffer) >= chunk:
                yield from self._predict_chunk(buffer, start, max_batch_tokens, batch_size, lengths)
                start += len(buffer)
                buffer = []
        if buffer:
            yield from self._predict_chunk(buffer, start, max_batch_tokens, batch_size, lengths)

    def _predict_chunk(
        self,
        examples: list[Any],
        start: int,
        max_batch_tokens: int | None,
        batch_size: int | None,
        lengths: list[int] | None = None,
    ) -> Iterator[tuple[int, Any]]:
        adapter = self.adapter
        numbered = [(start + i, e) for i, e in enumerate(examples) if e is not None]
        features = adapter.features([e for _, e in numbered], [i for i, _ in numbered], lengths)
        by_example: dict[int, list[dict[str, Any]]] = {}
        for feature in features:
            by_example.setdefault(feature[adapter.example_column], []).append(feature)
        if batch_size is not None:
            batches = [
                list(range(i, min(i + batch_size, len(features))))
                for i in range(0, len(features), batch_size)
            ]
        else:
            lengths = [len(f["input_ids"]) for f in features]
            batches = TokenBudgetBatchSampler(lengths, max_batch_tokens or DEFAULT_BATCH_TOKENS).batches
        outputs: dict[int, dict[int, Any]] = {}
        pad = adapter.pad_token_id
        with torch.inference_mode():
            for rows in batches:
                batch = collate([adapter.loader_row(features[i]) for i in rows], pad)
                for example, feature, output in adapter.split_outputs(self.run(batch), batch):
                    outputs.setdefault(example, {})[feature] = output
        for i, example in enumerate(examples, start):
            parts, own = outputs.get(i, {}), by_example.get(i, [])
            if len(parts) != len(own):
                raise RuntimeError(f"example {i}: {len(parts)} of {len(own)} outputs")
            yield i, adapter.decode(i, example, [parts[f] for f in sorted(parts)], own)


def _torch_net(
    kind: str,
    encoder: nn.Module,
    state: dict[str, Any],
    hparams: dict[str, Any],
    adapter: TaskAdapter,
    path: str,
) -> TaskNet:
    """The encoder and the task's head as the task module builds it from the checkpoint's settings
    (its labels, its head_layers), the head's weights loaded: a checkpoint whose weights do not
    fit them is refused with the task module's message."""
    head_name, head = HEAD_NAMES[kind], None
    net = TaskNet(kind, encoder, None, hparams)
    if head_name is not None:
        layers, hidden = net.head_layers, encoder.config.hidden_size
        concat = layers is not None and net.head_combine == "concat"
        head = nn.Linear(hidden * len(layers) if concat else hidden, adapter.head_outputs)
        holder = nn.Module()
        holder.add_module(head_name, head)
        try:
            holder.load_state_dict({k: v for k, v in state.items() if k.startswith(f"{head_name}.")})
        except RuntimeError as err:
            raise mismatched_weights(path, err) from None
    net.head = head
    net.regression = getattr(adapter, "regression", False)
    return net.eval()


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def load(path: str | Path, **options: Any) -> Predictor:
    """``Predictor.load``."""
    return Predictor.load(str(path), **options)
