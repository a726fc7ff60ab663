"""How checkpoint tensor names map onto ours, and loading and saving a model (HF safetensors in and out).

Where the files are comes from ``sources.py``; Google TF bundles are read by ``tf_checkpoint.py``.
Every name is brought to the HF BertForPreTraining layout ("bert.*", "cls.*") before loading.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors

from .config import BertConfig
from .errors import CheckpointError
from .sources import ResolvedSource, resolve_source
from .tf_checkpoint import read_tf_checkpoint
from .vocab import write_tokenizer_files

# ---------------------------------------------------------------------------------------------
# Name mapping

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
# Checkpoints name an attention's projections apart; our SelfAttention holds them as one Linear
# "qkv", rows [query; key; value] (each heads * head_size rows, fewer in a pruned layer).
_QKV = ("query", "key", "value")
_QUERY = re.compile(r"(?P<at>(?:.*\.)?)query\.(?P<kind>weight|bias)")


def fuse_qkv(state: dict[str, torch.Tensor], prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Checkpoint names -> ours, in place: each ``query/key/value`` tensor triple (under ``prefix``
    only, when given) joined into one ``qkv`` tensor. Returns ``state``."""
    for name in [n for n in state if _QUERY.fullmatch(n)]:
        at, kind = _QUERY.fullmatch(name).group("at", "kind")
        parts = [f"{at}{part}.{kind}" for part in _QKV]
        if (prefix is None or at == prefix) and all(part in state for part in parts):
            state[f"{at}qkv.{kind}"] = torch.cat([state.pop(part) for part in parts])
    return state


def split_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Ours -> checkpoint names: each ``qkv`` tensor as its ``query``, ``key`` and ``value`` thirds."""
    split = {}
    for name, tensor in state.items():
        at, qkv, kind = name.rpartition("qkv.")
        if qkv and kind in ("weight", "bias") and (not at or at.endswith(".")):
            split.update(
                {f"{at}{part}.{kind}": third for part, third in zip(_QKV, tensor.chunk(3), strict=True)}
            )
        else:
            split[name] = tensor
    return split


def tf_name_to_hf(name: str) -> tuple[str, bool]:
    """Map a Google TF variable name to an HF parameter name; returns (name, transpose)."""
    transpose = name.endswith("/kernel")
    for pattern, replacement in _TF_RULES:
        name = re.sub(pattern, replacement, name)
    return name.replace("/", "."), transpose


def _read_tf_state(prefix: Path) -> dict[str, torch.Tensor]:
    state = {}
    for tf_name, array in read_tf_checkpoint(prefix).items():
        if _TF_SKIP.search(tf_name):
            continue
        name, transpose = tf_name_to_hf(tf_name)
        tensor = torch.from_numpy(np.ascontiguousarray(array.T if transpose else array))
        state[name] = tensor
    return state


def load_torch_file(path: str | os.PathLike, mmap: bool = False) -> Any:
    """A file written by ``torch.save``, read with ``weights_only=True`` always: passed explicitly, it
    holds even under TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, so a file never runs code. The one
    ``torch.load`` of the code base (tasks' checkpoint reader calls it too). ``mmap``: tensors stay
    in the file's pages until used; a file in torch's old non-zip format cannot be mapped and is
    read whole."""
    if not mmap:
        return torch.load(path, map_location="cpu", weights_only=True)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def _read_hf_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            raw = load_safetensors(str(path))
        else:
            raw = load_torch_file(path)
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


_Model = TypeVar("_Model", bound=torch.nn.Module)


def load_pretrained(
    cls: type[_Model], source: str | os.PathLike, config: BertConfig | None = None, **overrides
) -> _Model:
    """A ``cls`` built from the source's config (``overrides`` replace fields) holding the source's weights.

    Every tensor is checked against the model (unexpected, missing, shape), so a mismatched config
    or checkpoint is an error rather than a silently half-initialised model.
    """
    resolved = resolve_source(source)
    if config is None:
        config = BertConfig.from_json(resolved.config_path)
    if overrides:
        config = BertConfig.from_dict({**config.to_dict(), **overrides}, source=str(resolved.config_path))
    _check_vocab(resolved, config, smaller_too=False)
    model = cls.uninitialised(config)
    state, new_heads = _tensors_for(model, fuse_qkv(read_state_dict(resolved)), resolved.name)
    expected = model.state_dict()
    _check_tensors(state, expected, resolved, new_heads)
    _check_vocab(resolved, config, smaller_too=True)  # once the tensors agree with the config
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=False)
    model.initialise_missing(set(state))
    model.source_directory = resolved.directory  # lets save_pretrained copy the tokenizer files
    model.source_name = resolved.name
    return model


def _tensors_for(
    model: torch.nn.Module, state: dict[str, torch.Tensor], name: str
) -> tuple[dict[str, torch.Tensor], bool]:
    """The tensors ``model`` takes from a checkpoint's, and whether its pre-training heads start new."""
    if not hasattr(model, "cls"):  # BertModel: take the encoder, drop pre-training and task heads silently
        return {k[len("bert.") :]: v for k, v in state.items() if k.startswith("bert.")}, False
    new_heads = not any(k.startswith("cls.") for k in state)
    if new_heads:
        print(
            f"bert_core: {name} has no pre-training heads; the MLM and NSP heads are newly initialised",
            file=sys.stderr,
        )
    return {k: v for k, v in state.items() if not k.startswith(_HF_TASK_HEADS)}, new_heads


def _check_tensors(
    state: dict[str, torch.Tensor],
    expected: dict[str, torch.Tensor],
    resolved: ResolvedSource,
    new_heads: bool,
) -> None:
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise CheckpointError(f"{resolved.weights}: unexpected tensor(s) {_first_five(unexpected)}")
    missing = sorted(k for k in set(expected) - set(state) if not (new_heads and k.startswith("cls.")))
    # BertForMaskedLM and BertForTokenClassification are saved without a pooler (HF builds them
    # with add_pooling_layer=False, e.g. run_mlm.py's output): the pooler then starts new.
    pooler = [k for k in missing if k.removeprefix("bert.").startswith("pooler.")]
    if pooler and len(pooler) == sum(k.removeprefix("bert.").startswith("pooler.") for k in expected):
        print(f"bert_core: {resolved.name} has no pooler; it is newly initialised", file=sys.stderr)
        missing = [k for k in missing if k not in pooler]
    if missing:
        raise CheckpointError(f"{resolved.weights}: missing tensor(s) {_first_five(missing)}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"{resolved.weights}: tensor {name} has shape {tuple(tensor.shape)}, "
                f"the config ({resolved.config_path.name}) implies {tuple(expected[name].shape)}"
            )


def _first_five(names: list[str]) -> str:
    return ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")


def _check_vocab(resolved: ResolvedSource, config: BertConfig, smaller_too: bool) -> None:
    vocab = resolved.directory / "vocab.txt"
    if vocab.is_file():
        with open(vocab, encoding="utf-8", errors="replace") as handle:
            size = sum(1 for _ in handle)
        # Larger: ids past the embedding table. Smaller: almost always another model's vocabulary
        # (a cased vocab.txt beside an uncased model), whose ids would silently mean other words.
        if size > config.vocab_size or (smaller_too and size < config.vocab_size):
            raise CheckpointError(
                f"{vocab}: {size} tokens, but the model's vocab_size is {config.vocab_size} "
                f"({resolved.config_path.name}): vocab and embeddings do not match (another model's vocab.txt?)"
            )


def save_pretrained(
    model: torch.nn.Module,
    directory: str | os.PathLike,
    head: dict[str, torch.Tensor] | None = None,
    architecture: str | None = None,
    config_fields: dict | None = None,
    with_pooler: bool = True,
) -> None:
    """Write HF format so that ``transformers.BertModel.from_pretrained(directory)`` loads it.

    With ``head`` (a fine-tuned task head under transformers' names, ``classifier.*`` or
    ``qa_outputs.*``) a BertModel's tensors go under ``bert.*``: the layout of transformers'
    ``BertFor<Task>`` classes, named by ``architecture``; ``config_fields`` (``id2label``, ...)
    join config.json. ``with_pooler=False`` leaves the pooler out, as transformers' token-level
    classes (``BertForTokenClassification``, ``BertForQuestionAnswering``) have none: they then
    load without an "unexpected keys" report.
    """
    state = model.state_dict()
    if not with_pooler:
        state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    if head is not None:
        if not all(name.startswith(_HF_TASK_HEADS) for name in head):
            raise ValueError(
                f"task head tensors must be named {' or '.join(_HF_TASK_HEADS)}*, got {sorted(head)}"
            )
        state = {"bert." + k: v for k, v in state.items()}
        state.update(head)
    save_state(directory, model.config, state, architecture or type(model).__name__, config_fields)
    source = getattr(model, "source_directory", None)
    if source is not None:
        write_tokenizer_files(source, directory, name=getattr(model, "source_name", str(source)))


def save_state(
    directory: str | os.PathLike,
    config: BertConfig,
    state: dict[str, torch.Tensor],
    architecture: str,
    config_fields: dict | None = None,
) -> None:
    """``config.json`` and ``model.safetensors`` in ``directory`` from a ``state`` under our names
    (fused ``qkv``), for a model of class ``architecture``: what ``save_pretrained`` writes, without
    a model to hold the tensors (a pre-training run writes its best checkpoint's weights from the
    file, not through a second model)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hf_config = config.to_hf_dict()
    hf_config["architectures"] = [architecture]
    hf_config.update(config_fields or {})
    (directory / "config.json").write_text(
        json.dumps(hf_config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    state = {k: v.detach().contiguous() for k, v in split_qkv(state).items()}
    save_safetensors(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    # safetensors creates its file owner-only (0600); give it the mode a plain open would (0644 under umask 022)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory / "model.safetensors", 0o666 & ~umask)


# CheckpointError, ResolvedSource and resolve_source are re-exported for callers of the old layout.
__all__ = [
    "CheckpointError",
    "ResolvedSource",
    "resolve_source",
    "read_state_dict",
    "fuse_qkv",
    "split_qkv",
    "load_pretrained",
    "save_pretrained",
    "save_state",
    "tf_name_to_hf",
]
