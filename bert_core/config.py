"""BertConfig: the hyper-parameters of a BERT encoder, read from Google's or Hugging Face's JSON."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Activation names as the two reference implementations spell them. "gelu" is the exact erf form
# (transformers' reading); Google's TF code computed the tanh approximation, which transformers
# calls "gelu_new".
HIDDEN_ACTS = ("gelu", "gelu_new", "gelu_tanh", "gelu_pytorch_tanh", "relu")


class ConfigError(ValueError):
    """An invalid or unreadable BERT configuration."""


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    # Heads removed per layer, in the layer's original head numbering (Hugging Face's meaning):
    # {layer: [head, ...]}. A pruned layer has fewer heads; the head size stays hidden/heads.
    pruned_heads: dict[int, list[int]] = field(default_factory=dict)
    # Keys of the source file we do not model (e.g. "architectures"); kept so a round trip loses nothing.
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        # JSON keys are strings ({"0": [1, 2]}); kept as sorted ints, empty layers left out.
        try:
            self.pruned_heads = {
                int(layer): sorted({int(h) for h in heads})
                for layer, heads in (self.pruned_heads or {}).items()
                if heads
            }
        except (TypeError, ValueError, AttributeError):
            raise ConfigError(
                f"pruned_heads must map layers to lists of heads, got {self.pruned_heads!r}"
            ) from None
        self.validate()

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def heads_in_layer(self, layer: int) -> int:
        """How many attention heads layer ``layer`` has once its pruned heads are removed."""
        return self.num_attention_heads - len(self.pruned_heads.get(layer, ()))

    def validate(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size ({self.hidden_size}) is not divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.hidden_act not in HIDDEN_ACTS:
            raise ConfigError(
                f"unknown hidden_act {self.hidden_act!r}; expected one of {', '.join(HIDDEN_ACTS)}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
        for layer, heads in self.pruned_heads.items():
            if not 0 <= layer < self.num_hidden_layers:
                raise ConfigError(f"pruned_heads: no layer {layer} in {self.num_hidden_layers} layers")
            if heads[0] < 0 or heads[-1] >= self.num_attention_heads:
                raise ConfigError(
                    f"pruned_heads: layer {layer} has heads 0..{self.num_attention_heads - 1}, not {heads}"
                )
            if len(heads) == self.num_attention_heads:
                raise ConfigError(f"pruned_heads: every head of layer {layer} is pruned (keep at least one)")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> BertConfig:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known and k != "extra"}
        if data.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigError(
                f"{source}: only absolute position embeddings are supported, "
                f"got position_embedding_type={data['position_embedding_type']!r}"
            )
        if data.get("model_type", "bert") != "bert":
            raise ConfigError(f"{source}: model_type is {data['model_type']!r}, not 'bert'")
        if kwargs.get("pad_token_id") is None:
            kwargs.pop("pad_token_id", None)
        try:
            return cls(**kwargs, extra=extra)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> BertConfig:
        """Read Google's ``bert_config.json`` or Hugging Face's ``config.json``."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        # String keys, as in HF's config.json (and as JSON round-trips them); none when unpruned.
        data["pruned_heads"] = {str(layer): heads for layer, heads in self.pruned_heads.items()}
        if not data["pruned_heads"]:
            del data["pruned_heads"]
        return {**self.extra, **data}

    def to_hf_dict(self) -> dict[str, Any]:
        """The dict transformers' BertConfig expects (``model_type`` and ``architectures`` set)."""
        data = self.to_dict()
        data.setdefault("architectures", ["BertModel"])
        data["model_type"] = "bert"
        data.setdefault("position_embedding_type", "absolute")
        if data["hidden_act"] == "gelu_tanh":  # the same function under the name transformers knows
            data["hidden_act"] = "gelu_pytorch_tanh"
        for key in ("_name_or_path", "transformers_version", "torch_dtype", "dtype"):
            data.pop(key, None)
        return data

    def to_json(self, path: str | os.PathLike) -> None:
        Path(path).write_text(
            json.dumps(self.to_hf_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
