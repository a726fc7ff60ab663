"""Our own BERT: the encoder, its config, checkpoint loaders and the tokenizer of a checkpoint.

Layers, lowest first (a module imports only modules above it in this list):
  errors        CheckpointError, the one error of every checkpoint layer
  config        BertConfig, ConfigError
  vocab         vocab.txt and casing rules (pure Python)
  tf_checkpoint the TensorFlow tensor-bundle reader and the one TF-prefix resolver (numpy, no TensorFlow)
  sources       where weights come from: directory, TF prefix, packaged model, hub id
  checkpoint    the name-map table (q/k/v <-> the fused qkv); load and save (torch, safetensors)
  kernels       what attention and the layers call: dropout masks, the varlen import, activations (torch)
  pretrained    from_pretrained / save_pretrained of the model classes, BERT's initialisation
  model         the encoder and its one attention dispatch (torch); loads and saves through checkpoint
  tokenizer     the one place a tokenizer is built (transformers, imported when one is built)

The names below are imported on first use (PEP 562), so ``import bert_core.config`` or
``from bert_core import CheckpointError`` costs neither torch nor transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import BertConfig, ConfigError
    from .errors import CheckpointError
    from .model import BertForPreTraining, BertModel, BertOutput, BertPreTrainingOutput
    from .sources import resolve_source
    from .tokenizer import TokenizerSpec, build_tokenizer, load_tokenizer, tokenizer_spec

# public name -> the submodule that defines it
_EXPORTS = {
    "BertConfig": "config",
    "BertForPreTraining": "model",
    "BertModel": "model",
    "BertOutput": "model",
    "BertPreTrainingOutput": "model",
    "CheckpointError": "errors",
    "ConfigError": "config",
    "TokenizerSpec": "tokenizer",
    "build_tokenizer": "tokenizer",
    "load_tokenizer": "tokenizer",
    "resolve_source": "sources",
    "tokenizer_spec": "tokenizer",
}

__all__ = [
    "BertConfig",
    "BertForPreTraining",
    "BertModel",
    "BertOutput",
    "BertPreTrainingOutput",
    "CheckpointError",
    "ConfigError",
    "TokenizerSpec",
    "build_tokenizer",
    "load_tokenizer",
    "resolve_source",
    "tokenizer_spec",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
