"""BERT in one file: embeddings, post-LN Transformer encoder, pooler, and the pre-training heads.

Module and parameter names follow Hugging Face's (which follow Google's TF variable scopes), so a
transformers state dict loads as it is and a Google checkpoint maps with the short table in
``checkpoint.py``.

Two choices make this encoder faster than the reference on CPU while computing the same function:

* Padding is not computed. The encoder runs on the real tokens only, packed into a [N, H] matrix
  (N = number of real tokens); embeddings, projections, feed-forward and LayerNorms never see a
  padded position. Attention re-pads them in groups of rows of similar length (``TokenLayout``),
  so a short row is not padded to the longest row of the batch either.
* Dropout draws 16 random bits per element from 64-bit words instead of calling ``bernoulli_``
  (several times cheaper on CPU, where dropout RNG dominates a training step), and attention with
  dropout is written out (the fused SDPA kernels have no CPU dropout; its fallback is slower).

On CUDA in half precision, attention without dropout runs flash attention's variable-length kernel
(``varlen_attn``) on the packed tokens themselves, with no re-padding at all. That kernel has no
dropout: training with attention dropout keeps SDPA (``dropout_p``) on the length-grouped grids,
so its numerics are the reference's; evaluation, prediction and fits with
``attention_probs_dropout_prob`` 0 take the variable-length kernel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import BertConfig
from .layout import AttentionGroup, TokenLayout

# Flash attention's variable-length kernel (torch >= 2.10, CUDA only), imported on first use by
# varlen_supported: its module imports torch._dynamo, about 2 s of every start-up otherwise.
varlen_attn = None
_varlen_imported = False


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


def activation(name: str):
    """``act(x, inplace=False)`` for a config's ``hidden_act``."""
    if name == "relu":
        return F.relu
    if name == "gelu":
        approximate = "none"  # exact erf form: what transformers computes for "gelu"
    elif name in ("gelu_new", "gelu_tanh", "gelu_pytorch_tanh"):
        approximate = "tanh"  # what Google's TF code computed for "gelu"
    else:
        raise ValueError(f"unknown hidden_act {name!r}")

    def gelu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        if inplace:
            return torch.ops.aten.gelu_(x, approximate=approximate)
        return F.gelu(x, approximate=approximate)

    return gelu


# ---------------------------------------------------------------------------------------------
# Dropout

_BITS = 16  # random bits per element: the drop rate is p rounded to a multiple of 2**-16


def keep_mask(like: torch.Tensor, p: float) -> tuple[torch.Tensor, float]:
    """A {0., 1.} mask shaped like ``like`` keeping each element with probability ~1-p, and that rate.

    torch's CPU dropout draws one 32-bit number per element through ``bernoulli_`` (about 15 ns
    per element here); cutting four 16-bit draws out of each 64-bit word costs about 2 ns.
    """
    numel = like.numel()
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=like.device).random_(-(2**63), None)
    draws = words.view(torch.int16)[:numel].view(like.shape)  # uniform integers in [-2**15, 2**15)
    dropped = round(p * 2**_BITS)  # the `dropped` smallest of the 2**16 values are dropped
    mask = torch.ge(draws, dropped - 2 ** (_BITS - 1), out=torch.empty_like(like))
    return mask, 1.0 - dropped / 2**_BITS


class Dropout(nn.Dropout):
    """``nn.Dropout`` (zero with probability p, scale the rest by 1/(1-p)) with the cheaper mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        mask, keep = keep_mask(x, self.p)
        return x * mask.mul_(1.0 / keep)


def varlen_supported(x: torch.Tensor) -> bool:
    """Whether flash attention's variable-length kernel takes ``x``'s device and dtype."""
    return x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and varlen_kernel() is not None


def varlen_kernel():
    """``torch.nn.attention.varlen.varlen_attn``, imported once (None where torch lacks it)."""
    global varlen_attn, _varlen_imported
    if not _varlen_imported:
        _varlen_imported = True
        try:
            from torch.nn.attention.varlen import varlen_attn as kernel
        except ImportError:  # pragma: no cover - torch < 2.10
            kernel = None
        varlen_attn = varlen_attn or kernel  # a stand-in set before the first use stays
    return varlen_attn


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


def attention_with_dropout(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, p: float
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d), masked) with dropout on the probabilities, times v.

    q, k, v: [b, heads, T, d]; key_mask: [b, 1, 1, T] (True = attend) or None. Returns [b, heads, T, d].
    """
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # [b, heads, T, T]
    if key_mask is not None:  # in place: the matmul's backward does not need its output
        scores.masked_fill_(~key_mask, torch.finfo(scores.dtype).min)
    mask, keep = keep_mask(scores, p)
    probs = scores.softmax(-1) * mask
    return (probs @ v).mul_(1.0 / keep)  # the 1/(1-p) rescale on [T, d] rather than on [T, T]


class SelfAttention(nn.Module):
    def __init__(self, config: BertConfig, layer: int = 0):
        super().__init__()
        # A pruned layer (config.pruned_heads) keeps fewer heads of the same size: q, k, v are
        # [heads * d, H], as in HF's pruned models.
        self.num_heads = config.heads_in_layer(layer)
        self.head_size = config.head_size
        all_heads = self.num_heads * self.head_size
        self.query = nn.Linear(config.hidden_size, all_heads)
        self.key = nn.Linear(config.hidden_size, all_heads)
        self.value = nn.Linear(config.hidden_size, all_heads)
        self.dropout_p = config.attention_probs_dropout_prob
        # [heads] multiplying each head's output when set (Michel et al.'s head mask: its gradient
        # is a head's importance); None in normal use.
        self.head_gate: torch.Tensor | None = None
        self.fuse_qkv = True

    def forward(
        self, x: torch.Tensor, layout: TokenLayout, queries: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[N, H] -> [N, H]. With ``queries`` ([B, H]: the states of each layout row's first token)
        only those tokens attend, each to its whole row: -> [B, H] in layout row order."""
        all_heads = self.num_heads * self.head_size
        if queries is None:
            qkv = self.project(x, "query", "key", "value")  # [N, 3H]
            q, kv = qkv[:, :all_heads], qkv[:, all_heads:]
        else:
            q, kv = self.project(queries, "query"), self.project(x, "key", "value")  # [B, H], [N, 2H]
        if self.takes_varlen(q, layout):
            return self.attend_varlen(q, kv, layout, one_query_per_row=queries is not None)
        if queries is None:
            grids = layout.to_grids(qkv)  # [G, 3H]
            q, kv = grids[:, :all_heads], grids[:, all_heads:]
        else:
            kv = layout.to_grids(kv)  # [G, 2H]
        outputs = []
        for g in layout.groups:
            q_rows = (
                slice(g.first_row, g.first_row + g.rows)
                if queries is not None
                else slice(g.offset, g.offset + g.rows * g.length)
            )
            outputs.append(self.attend(q[q_rows], kv[g.offset : g.offset + g.rows * g.length], g))
        y = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        return y if queries is not None else layout.from_grids(y)  # [B, H] or [N, H]

    def project(self, x: torch.Tensor, *names: str) -> torch.Tensor:
        """x through the named projections, side by side: [N, len(names) * H].

        One matmul for q, k, v: the three Linear layers keep Google's/HF's weight names. Quantized
        layers (bert_core.quantize sets fuse_qkv False) hold no float weight to concatenate: each
        runs as its own int8 matmul."""
        layers = [getattr(self, name) for name in names]
        if len(layers) == 1:
            return layers[0](x)
        if self.fuse_qkv:
            weight = torch.cat([layer.weight for layer in layers])
            bias = torch.cat([layer.bias for layer in layers])
            return F.linear(x, weight, bias)
        return torch.cat([layer(x) for layer in layers], dim=-1)

    def takes_varlen(self, q: torch.Tensor, layout: TokenLayout) -> bool:
        """Flash attention's variable-length kernel: CUDA, half precision, no attention dropout (the
        kernel has none), rows without padding, and head sizes the kernel is built for."""
        return (
            varlen_supported(q)
            and layout.rows_are_exact
            and not (self.training and self.dropout_p > 0)
            and self.head_size % 8 == 0
            and self.head_size <= 256
        )

    def attend_varlen(
        self, q: torch.Tensor, kv: torch.Tensor, layout: TokenLayout, one_query_per_row: bool
    ) -> torch.Tensor:
        """q [N_q, H], kv [N, 2H] (the packed tokens) -> [N_q, H], each row attending within itself."""
        heads, d = self.num_heads, self.head_size
        k, v = (t.contiguous() for t in kv.view(-1, 2, heads, d).unbind(1))  # each [N, heads, d]
        q = q.reshape(-1, heads, d).contiguous()  # [N_q, heads, d]
        keys = layout.row_starts(q.device)
        if one_query_per_row:
            queries, longest_query = torch.arange(len(keys), device=q.device, dtype=torch.int32), 1
        else:
            queries, longest_query = keys, layout.longest
        y = varlen_attn(q, k, v, queries, keys, longest_query, layout.longest)  # [N_q, heads, d]
        if self.head_gate is not None:
            y = y * self.head_gate.to(y.dtype)[:, None]
        return y.reshape(len(q), heads * d)

    def attend(self, q: torch.Tensor, kv: torch.Tensor, group: AttentionGroup) -> torch.Tensor:
        """One group: q [rows * T_q, H] (T_q = T, or 1 for a query per row), its grid kv
        [rows * T, 2H] -> [rows * T_q, H]."""
        rows, T = group.rows, group.length
        q = q.view(rows, -1, self.num_heads, self.head_size).transpose(1, 2)  # [rows, heads, T_q, d]
        kv = kv.view(rows, T, 2, self.num_heads, self.head_size).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)  # each [rows, heads, T, d]
        if self.training and self.dropout_p > 0 and not q.is_cuda:
            # CPU: SDPA has no fused kernel with dropout there, and its fallback is slower than this.
            y = attention_with_dropout(q, k, v, group.key_mask, self.dropout_p)
        elif self.training and self.dropout_p > 0:
            # CUDA: the fused kernels take dropout on the probabilities themselves.
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=group.key_mask, dropout_p=self.dropout_p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=group.key_mask)
        if self.head_gate is not None:
            y = y * self.head_gate.to(y.dtype)[:, None, None]  # [rows, heads, T_q, d]
        return y.transpose(1, 2).reshape(rows * q.shape[2], -1)


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
        overwrites."""
        with torch.device("meta"):
            model = cls(config)
        return model.to_empty(device="cpu")

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
        # True: every position is computed, padded keys masked, and the layout never looks at the
        # mask's values (no data-dependent shapes or branches): the graph torch.export and ONNX take.
        self.static_layout = False

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
        every other token that skips 10 of the last layer's 12 H x H matmuls (the key and value
        projections remain): 14% of a 6-layer encoder's work, 7% of a 12-layer one's.
        """
        if cls_only and output_hidden_states:
            raise ValueError(
                "cls_only computes the last layer at [CLS] only: it has no hidden states to return"
            )
        return self._encode(
            input_ids,
            attention_mask,
            token_type_ids,
            output_hidden_states,
            skip_padding=not output_hidden_states if skip_padding is None else skip_padding,
            # The static layout (the graph torch.export and ONNX take) computes every position.
            cls_only=cls_only and not self.static_layout,
        )

    def _encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        output_hidden_states: bool,
        skip_padding: bool,
        cls_only: bool = False,
    ) -> BertOutput:
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
        out = self.bert._encode(
            input_ids, attention_mask, token_type_ids, output_hidden_states, skip_padding=False
        )
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
