"""BERT in one file: embeddings, post-LN Transformer encoder, pooler, and the pre-training heads.

Module and parameter names follow Hugging Face's (which follow Google's TF variable scopes) but
for the fused ``qkv``; the short table in ``checkpoint.py`` maps transformers' and Google's names.

Three choices make this encoder faster than the reference on CPU while computing the same function:

* Padding is not computed. The encoder runs on the real tokens only, packed into a [N, H] matrix
  (N = number of real tokens); embeddings, projections, feed-forward and LayerNorms never see a
  padded position. Attention re-pads them in groups of rows of similar length (``TokenLayout``),
  so a short row is not padded to the longest row of the batch either.
* Dropout and attention with dropout take a cheaper random mask (``kernels.py``).
* q, k and v are one Linear (``qkv``): one matmul per layer, with no concatenation of weights.

On CUDA in half precision, attention without dropout runs flash attention's variable-length kernel
on the packed tokens themselves, with no re-padding at all: ``SelfAttention.attend`` is the one
place that chooses a kernel. Callers change a mode only for a block: ``static_layout``, ``head_gates``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels
from .config import BertConfig
from .initialization import fills_skipped
from .kernels import Dropout, activation
from .layout import TokenLayout


@dataclass
class BertOutput:
    last_hidden_state: torch.Tensor  # [B, T, H]
    pooler_output: torch.Tensor  # [B, H]
    # (embeddings, layer 1, ..., layer N), each [B, T, H]; only when asked for
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class BertPreTrainingOutput(BertOutput):
    prediction_logits: torch.Tensor | None = None  # [B, T, V]
    seq_relationship_logits: torch.Tensor | None = None  # [B, 2]


# ---------------------------------------------------------------------------------------------
# The encoder. Activations are [N, H]: one row per computed token.


class Embeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        # each [N] -> [N, H]; summed in the reference's order so the floats match
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    def __init__(self, config: BertConfig, layer: int = 0):
        super().__init__()
        # A pruned layer (config.pruned_heads) keeps fewer heads of the same size, as HF's pruned models.
        self.num_heads = config.heads_in_layer(layer)
        self.head_size = config.head_size
        # q, k and v as one Linear, rows [q; k; v]: one matmul. Checkpoints name the three apart:
        # checkpoint.py maps the names, on every load of a state dict too (old task checkpoints).
        self.qkv = nn.Linear(config.hidden_size, 3 * self.num_heads * self.head_size)
        self.register_load_state_dict_pre_hook(_fuse_qkv_names)
        self.dropout_p = config.attention_probs_dropout_prob
        # [heads] multiplying each head's output (Michel et al.'s head mask: its gradient is a
        # head's importance); set only within `with head_gates(model)`.
        self.head_gate: torch.Tensor | None = None

    def forward(
        self, x: torch.Tensor, layout: TokenLayout, queries: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[N, H] -> [N, H]. With ``queries`` ([B, H]: the states of each layout row's first token)
        only those tokens attend, each to its whole row: -> [B, H] in layout row order."""
        width = self.num_heads * self.head_size
        if queries is None:
            qkv = self.qkv(x)  # [N, 3 * width]
            q, kv = qkv[:, :width], qkv[:, width:]
        else:  # [B, width], [N, 2 * width]
            q, kv = self.qkv(queries)[:, :width], self.qkv(x)[:, width:]
        y = self.attend(q, kv, layout, one_query_per_row=queries is not None)  # [N or B, width]
        if self.head_gate is not None:
            gated = y.view(len(y), self.num_heads, self.head_size) * self.head_gate.to(y.dtype)[:, None]
            y = gated.view(len(y), width)
        return y

    def attend(
        self, q: torch.Tensor, kv: torch.Tensor, layout: TokenLayout, one_query_per_row: bool
    ) -> torch.Tensor:
        """The one attention dispatch: q [N_q, width], kv [N, 2 * width] (packed tokens) -> [N_q, width].

        The first that fits computes it:
        1. flash attention's variable-length kernel on the packed tokens, no re-padding: CUDA, half
           precision, no attention dropout (the kernel has none), rows without padding, and head
           sizes the kernel is built for;
        2. training with attention dropout on CUDA: SDPA, whose fused kernels take dropout_p;
        3. training with attention dropout on CPU: ``kernels.attention_with_dropout`` (SDPA has no
           fused kernel with dropout there, and its fallback is slower);
        4. SDPA.
        2 to 4 run on grids: the rows re-padded in groups of similar length (``layout.groups``).
        """
        dropout = self.dropout_p if self.training else 0.0
        if not dropout and self.head_size % 8 == 0 and self.head_size <= 256 and layout.rows_are_exact:
            if kernels.varlen_supported(q):
                return self.attend_varlen(q, kv, layout, one_query_per_row)
        if dropout and q.is_cuda:
            kernel = partial(F.scaled_dot_product_attention, dropout_p=dropout)
        elif dropout:
            kernel = partial(kernels.attention_with_dropout, p=dropout)
        else:
            kernel = F.scaled_dot_product_attention
        heads, d = self.num_heads, self.head_size
        kv = layout.to_grids(kv)  # [G, 2 * width]
        q = q if one_query_per_row else layout.to_grids(q)  # [B or G, width]
        outputs = []
        for g in layout.groups:
            T_q = 1 if one_query_per_row else g.length
            first = g.first_row if one_query_per_row else g.offset
            group_q = q[first : first + g.rows * T_q].view(g.rows, T_q, heads, d).transpose(1, 2)
            group_kv = kv[g.offset : g.offset + g.rows * g.length].view(g.rows, g.length, 2, heads, d)
            k, v = group_kv.permute(2, 0, 3, 1, 4).unbind(0)  # each [rows, heads, T, d]
            y = kernel(group_q, k, v, g.key_mask)  # [rows, heads, T_q, d]
            outputs.append(y.transpose(1, 2).reshape(g.rows * T_q, heads * d))
        y = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        return y if one_query_per_row else layout.from_grids(y)  # [B, width] or [N, width]

    def attend_varlen(
        self, q: torch.Tensor, kv: torch.Tensor, layout: TokenLayout, one_query_per_row: bool
    ) -> torch.Tensor:
        """q [N_q, width], kv [N, 2 * width] (the packed tokens) -> [N_q, width], each row within itself."""
        heads, d = self.num_heads, self.head_size
        k, v = (t.contiguous() for t in kv.view(-1, 2, heads, d).unbind(1))  # each [N, heads, d]
        q = q.reshape(-1, heads, d).contiguous()  # [N_q, heads, d]
        keys = layout.row_starts(q.device)
        if one_query_per_row:
            queries, longest_query = torch.arange(len(keys), device=q.device, dtype=torch.int32), 1
        else:
            queries, longest_query = keys, layout.longest
        y = kernels.varlen_attn(q, k, v, queries, keys, longest_query, layout.longest)  # [N_q, heads, d]
        return y.reshape(len(q), heads * d)


class SelfOutput(nn.Module):
    """Projection + dropout + residual + LayerNorm after attention (post-LN)."""

    def __init__(self, config: BertConfig, in_features: int | None = None):
        super().__init__()
        self.dense = nn.Linear(in_features or config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, y: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.dense(y))
        # In place when the dtypes agree: neither the projection's nor dropout's backward needs its
        # output. Under autocast the projection is bf16 while the residual stream stays fp32: an
        # in-place add would round the stream to bf16, so the sum is taken in fp32 (as the reference).
        return self.LayerNorm(h.add_(residual) if h.dtype == residual.dtype else h + residual)


class Attention(nn.Module):
    def __init__(self, config: BertConfig, layer: int = 0):
        super().__init__()
        self.self = SelfAttention(config, layer)
        self.output = SelfOutput(config, in_features=self.self.num_heads * self.self.head_size)

    def forward(
        self, x: torch.Tensor, layout: TokenLayout, queries: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``queries``: [B] positions of the tokens that attend (each row's first); None: all."""
        at_queries = None if queries is None else x[queries]  # [B, H]: their projection and residual
        residual = x if at_queries is None else at_queries
        return self.output(self.self(x, layout, at_queries), residual)  # [N, H], or [B, H] at the queries


class Intermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Without autograd the activation may overwrite its input: one [N, I] buffer fewer.
        return self.act(self.dense(x), inplace=not torch.is_grad_enabled())  # [N, I]


class Output(SelfOutput):
    """Feed-forward down-projection + dropout + residual + LayerNorm."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)


class Layer(nn.Module):
    def __init__(self, config: BertConfig, index: int = 0):
        super().__init__()
        self.attention = Attention(config, index)
        self.intermediate = Intermediate(config)
        self.output = Output(config)

    def forward(
        self, x: torch.Tensor, layout: TokenLayout, queries: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = self.attention(x, layout, queries)
        return self.output(self.intermediate(x), x)  # [N, H], or [B, H] at the queries


class Encoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(config, i) for i in range(config.num_hidden_layers))


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

    @classmethod
    def uninitialised(cls, config: BertConfig):
        """``cls(config)`` with its tensors allocated but not initialised: for a model whose weights
        are loaded next. BERT's initialisation of all-MiniLM-L6-v2 (the 30,522 x 384 table's
        truncated normal above all) takes about a second on a laptop CPU, for values a checkpoint
        overwrites. (Not built on the meta device: its fills import torch._dynamo, seconds of start-up.)"""
        with fills_skipped():
            return cls(config)

    def initialise_missing(self, loaded: set[str]) -> None:
        """BERT's initialisation for the parameters of an ``uninitialised`` model not in ``loaded``
        (new pre-training heads, a checkpoint without a pooler); other parameters start at zero (the
        MLM head's output bias, as when built)."""
        for prefix, module in self.named_modules():
            missing = [
                name
                for name, _ in module.named_parameters(recurse=False)
                if (f"{prefix}.{name}" if prefix else name) not in loaded
            ]
            if not missing:
                continue
            if isinstance(module, (nn.Linear, nn.Embedding, nn.LayerNorm)):
                init_weights(module, self.config.initializer_range)
            else:
                with torch.no_grad():
                    for name in missing:
                        getattr(module, name).zero_()

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
        self.static_layout = False  # set only within `with static_layout(model)`

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        skip_padding: bool | None = None,
        cls_only: bool = False,
    ) -> BertOutput:
        """Encode a batch: input_ids, attention_mask (1 = real token, 0 = padding), token_type_ids, all [B, T].

        Padded positions are not computed: their rows of ``last_hidden_state`` are zeros. Real
        positions and ``pooler_output`` equal the reference (transformers) to float32 rounding.
        With ``output_hidden_states=True`` (an inspection mode) every position is computed, padding
        included, exactly as the reference does, so all outputs match it position by position;
        ``skip_padding=True`` keeps the fast path for hidden states too (zeros at padding).

        ``cls_only=True`` (a sentence classifier's path): the last layer is computed at each row's
        first token ([CLS]) only, which is all the pooler reads; its keys and values still come from
        the whole row. ``last_hidden_state`` is then [B, 1, H]; ``pooler_output`` is unchanged. At
        every other token that skips 9 of the last layer's 12 H x H matmuls (the fused q, k, v
        projection remains): 12% of a 6-layer encoder's work, 6% of a 12-layer one's.
        """
        if cls_only and output_hidden_states:
            raise ValueError(
                "cls_only computes the last layer at [CLS] only: it has no hidden states to return"
            )
        skip_padding = not output_hidden_states if skip_padding is None else skip_padding
        cls_only = cls_only and not self.static_layout  # the static layout computes every position
        B, T = input_ids.shape
        if T > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {T} exceeds max_position_embeddings ({self.config.max_position_embeddings})"
            )
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if self.static_layout:
            layout = TokenLayout.every_position(attention_mask, B, T)
        else:
            layout = self._layout(attention_mask, B, T, skip_padding)
        positions = torch.arange(T, device=input_ids.device).expand(B, T)
        x = self.embeddings(
            layout.pack(input_ids), layout.pack(token_type_ids), layout.pack(positions)
        )  # [N, H]
        hidden_states = [x] if output_hidden_states else None
        layers = list(self.encoder.layer)
        last = layers.pop() if cls_only and layers else None
        for layer in layers:
            x = layer(x, layout)
            if hidden_states is not None:
                hidden_states.append(x)
        if last is not None:  # [CLS] only: [B, H] in layout row order -> [B, 1, H]
            last_hidden_state = layout.to_batch_order(last(x, layout, layout.first_tokens(x.device)))[:, None]
        else:
            last_hidden_state = layout.unpack(x)  # [B, T, H]
        return BertOutput(
            last_hidden_state=last_hidden_state,
            pooler_output=self.pooler(last_hidden_state),
            hidden_states=None if hidden_states is None else tuple(layout.unpack(h) for h in hidden_states),
        )

    @staticmethod
    def _layout(attention_mask: torch.Tensor | None, B: int, T: int, skip_padding: bool) -> TokenLayout:
        if attention_mask is None or bool(attention_mask.all()):
            return TokenLayout.every_position(None, B, T)  # nothing to mask: the fastest kernels
        # A row starting with padding (left padding, or no token at all) has its pooled [CLS] on a
        # padded position: such batches take the reference's way, as does an explicit request.
        if not skip_padding or not bool(attention_mask[:, 0].all()):
            return TokenLayout.every_position(attention_mask, B, T)
        return TokenLayout.real_tokens(attention_mask, multiple=8 if attention_mask.is_cuda else 1)


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
    """BERT with its masked-LM and next-sentence heads, as in Google's pre-training checkpoints.

    This is the checkpoint-parity model: it computes every position, padding included, so all its
    outputs (MLM logits at padded positions too) equal the reference's position by position.
    """

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
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states, skip_padding=False)
        return BertPreTrainingOutput(
            **vars(out),
            prediction_logits=self.cls.predictions(out.last_hidden_state),
            seq_relationship_logits=self.cls.seq_relationship(out.pooler_output),
        )


# ---------------------------------------------------------------------------------------------
# Modes a caller switches on for a block, never set on the model from outside.


@contextmanager
def static_layout(model: nn.Module) -> Iterator[None]:
    """Within the block every BertModel in ``model`` computes every position, padded keys masked,
    and its layout never looks at the mask's values (no data-dependent shapes or branches): the
    graph torch.export and ONNX take."""
    encoders = [m for m in model.modules() if isinstance(m, BertModel)]
    with _set_each(encoders, "static_layout", [True] * len(encoders), default=False):
        yield


@contextmanager
def head_gates(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block every head's output is multiplied by a gate (one [heads] tensor of ones per
    layer, requiring grad): after a backward pass ``gate.grad`` is d loss / d head mask."""
    attentions = [m for m in model.modules() if isinstance(m, SelfAttention)]
    param = next(model.parameters())
    gates = [torch.ones(a.num_heads, device=param.device, requires_grad=True) for a in attentions]
    with _set_each(attentions, "head_gate", gates, default=None):
        yield gates


@contextmanager
def _set_each(modules: list[nn.Module], name: str, values: list, default) -> Iterator[None]:
    for module, value in zip(modules, values, strict=True):
        setattr(module, name, value)
    try:
        yield
    finally:
        for module in modules:
            setattr(module, name, default)


def _fuse_qkv_names(module: nn.Module, state: dict, prefix: str, *_) -> None:
    """A state dict's query/key/value tensors joined into ``qkv`` as a SelfAttention loads them."""
    from .checkpoint import fuse_qkv  # the name table (imported on the first load)

    fuse_qkv(state, prefix)


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
