"""BERT in one file: embeddings, post-LN Transformer encoder, pooler, and the pre-training heads.

Module and parameter names follow Hugging Face's (which follow Google's TF variable scopes), so a
transformers state dict loads as it is and a Google checkpoint maps with the short table in
``checkpoint.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import BertConfig


@dataclass
class BertOutput:
    last_hidden_state: torch.Tensor  # [B, T, H]
    pooler_output: torch.Tensor  # [B, H]
    hidden_states: tuple[torch.Tensor, ...] | None = None  # (embeddings, layer 1, ..., layer N), each [B, T, H]


@dataclass
class BertPreTrainingOutput(BertOutput):
    prediction_logits: torch.Tensor | None = None  # [B, T, V]
    seq_relationship_logits: torch.Tensor | None = None  # [B, 2]


def activation(name: str):
    if name == "gelu":
        return F.gelu  # exact erf form: what transformers computes for "gelu"
    if name in ("gelu_new", "gelu_tanh", "gelu_pytorch_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")  # Google's TF "gelu"
    if name == "relu":
        return F.relu
    raise ValueError(f"unknown hidden_act {name!r}")


class Embeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        positions = torch.arange(T, device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids) + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(x))  # [B, T, H]


class SelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, H = x.shape
        # One matmul for q, k, v: the three Linear layers keep Google's/HF's weight names.
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        qkv = F.linear(x, weight, bias).view(B, T, 3, self.num_heads, self.head_size)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, T, head_size]
        dropout_p = self.dropout_p if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        return y.transpose(1, 2).reshape(B, T, H)


class SelfOutput(nn.Module):
    """Projection + dropout + residual + LayerNorm after attention (post-LN)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, y: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(y)) + residual)


class Attention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = SelfAttention(config)
        self.output = SelfOutput(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class Intermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))  # [B, T, I]


class Output(SelfOutput):
    """Feed-forward down-projection + dropout + residual + LayerNorm."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)


class Layer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = Output(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))


class Pooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # [CLS] -> [B, H]


class PretrainedMixin:
    """``from_pretrained`` / ``save_pretrained`` / ``num_parameters`` for the model classes."""

    config: BertConfig

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, config: BertConfig | None = None, **overrides):
        """Load weights from a Google TF checkpoint, an HF directory, ``all-MiniLM-L6-v2`` or a hub id.

        ``overrides`` replace config fields (e.g. ``hidden_act="gelu_new"``, dropout rates).
        """
        from .checkpoint import load_pretrained

        return load_pretrained(cls, source, config=config, **overrides)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write HF format: ``config.json`` + ``model.safetensors`` (+ tokenizer files when known)."""
        from .checkpoint import save_pretrained

        save_pretrained(self, directory)

    def num_parameters(self) -> int:
        """Unique parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters())  # parameters() already deduplicates ties


class BertModel(PretrainedMixin, nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.pooler = Pooler(config)
        self.apply(lambda module: init_weights(module, config.initializer_range))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> BertOutput:
        B, T = input_ids.shape
        if T > self.config.max_position_embeddings:
            raise ValueError(f"sequence length {T} exceeds max_position_embeddings "
                             f"({self.config.max_position_embeddings})")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        # Boolean key mask for SDPA, [B, 1, 1, T]: True = attend. None when nothing is padded,
        # which lets SDPA pick its fastest kernel.
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.bool()[:, None, None, :]
        x = self.embeddings(input_ids, token_type_ids)
        hidden_states = [x] if output_hidden_states else None
        for layer in self.encoder.layer:
            x = layer(x, mask)
            if hidden_states is not None:
                hidden_states.append(x)
        return BertOutput(
            last_hidden_state=x,
            pooler_output=self.pooler(x),
            hidden_states=tuple(hidden_states) if hidden_states is not None else None,
        )


class PredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class LMPredictionHead(nn.Module):
    """MLM head: transform, then a decoder tied to the word embeddings plus its own output bias."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = PredictionHeadTransform(config)
        self.word_embeddings = [word_embeddings]  # a list, so the tied table is not registered twice
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(x), self.word_embeddings[0].weight, self.bias)  # [B, T, V]


class PreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = LMPredictionHead(config, word_embeddings)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


class BertForPreTraining(PretrainedMixin, nn.Module):
    """BERT with its masked-LM and next-sentence heads, as in Google's pre-training checkpoints."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = PreTrainingHeads(config, self.bert.embeddings.word_embeddings)
        self.cls.apply(lambda module: init_weights(module, config.initializer_range))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> BertPreTrainingOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states)
        return BertPreTrainingOutput(
            last_hidden_state=out.last_hidden_state,
            pooler_output=out.pooler_output,
            hidden_states=out.hidden_states,
            prediction_logits=self.cls.predictions(out.last_hidden_state),
            seq_relationship_logits=self.cls.seq_relationship(out.pooler_output),
        )


def init_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation: truncated-normal-like N(0, std) weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


__all__ = ["BertConfig", "BertModel", "BertForPreTraining", "BertOutput", "BertPreTrainingOutput"]
