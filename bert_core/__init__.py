"""Our own BERT: the encoder, its config, checkpoint loaders and the tokenizer of a checkpoint."""

from .checkpoint import CheckpointError, resolve_source
from .config import BertConfig, ConfigError
from .model import BertForPreTraining, BertModel, BertOutput, BertPreTrainingOutput
from .tokenizer import load_tokenizer

__all__ = [
    "BertConfig",
    "BertForPreTraining",
    "BertModel",
    "BertOutput",
    "BertPreTrainingOutput",
    "CheckpointError",
    "ConfigError",
    "load_tokenizer",
    "resolve_source",
]
