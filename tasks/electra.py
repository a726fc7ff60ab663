"""ELECTRA's replaced-token detection (Clark et al., ICLR 2020), ``--model.objective electra``.

A small masked-LM generator fills the masked positions of the pre-training batch with tokens sampled
from its softmax (no gradient through the sampling); the model being trained, the discriminator,
tells at every real token whether it was replaced (a sampled token equal to the original counts as
not replaced, as in the paper). Loss: generator MLM + 50 x the discriminator's mean per-token binary
cross-entropy. Every token trains the discriminator, not 15% of them.

The generator (``generator_layers``, ``generator_hidden_size``): by default the bottom third of the
model's own layers (copies of their weights, trained apart) at its width; a narrower one gets fresh
layers of that width and a projection from the embeddings. Its embeddings are the discriminator's,
tied (the paper's sharing: token, position and type tables), so are the MLM decoder's weights.
``--model.generator SOURCE`` takes the layers of another BERT (same vocabulary, not larger).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bert_core.config import BertConfig
from bert_core.model import BertModel, activation, init_weights

from .io import UserError

OBJECTIVES = ("mlm", "electra")


class ElectraOutputs(NamedTuple):
    generator_logits: torch.Tensor  # [M, V] at the masked positions
    rtd_logits: torch.Tensor  # [B, T]: > 0 means "replaced"
    replaced: torch.Tensor  # [B, T] bool: the token the discriminator read is not the original


class SharedEmbeddings(nn.Module):
    """The discriminator's embedding module (held, not registered: its weights are saved once,
    under the discriminator), projected to the generator's width when that is smaller."""

    def __init__(self, shared: nn.Module, hidden_size: int, generator_size: int):
        super().__init__()
        self.shared = [shared]
        self.project = nn.Linear(hidden_size, generator_size) if generator_size != hidden_size else None

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        x = self.shared[0](*args)  # [N, H]
        return x if self.project is None else self.project(x)  # [N, h]


class GeneratorHead(nn.Module):
    """The generator's MLM head: h -> H (the embeddings' width), then the tied word-embedding decoder."""

    def __init__(self, config: BertConfig, generator_size: int, word_embeddings: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(generator_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.word_embeddings = [word_embeddings]  # tied: not registered twice
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.LayerNorm(self.act(self.dense(x))), self.word_embeddings[0].weight, self.bias)


class DiscriminatorHead(nn.Module):
    """ELECTRA's discriminator predictions: dense H -> H, activation, dense H -> 1 per token."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.dense_prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dense_prediction(self.act(self.dense(hidden))).squeeze(-1)  # [B, T, H] -> [B, T]


class Electra(nn.Module):
    """The generator and the discriminator's head around an encoder (the discriminator itself)."""

    def __init__(
        self,
        encoder: BertModel,
        layers: int | None = None,
        hidden_size: int | None = None,
        source: tuple[BertModel, dict[str, Any]] | None = None,
        vocab: list[str] | None = None,
    ):
        super().__init__()
        config = encoder.config
        if source is not None:
            generator, payload = source
            if generator.config.vocab_size != config.vocab_size:
                raise UserError(
                    f"--model.generator: its vocabulary ({generator.config.vocab_size} tokens) is not the "
                    f"model's ({config.vocab_size}): its samples would be other tokens than the model reads"
                )
            if payload.get("vocab") != vocab:
                theirs, ours = list(payload.get("vocab") or []), list(vocab or [])
                at = next(
                    (i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours))
                )
                seen = [repr(v[at]) if at < len(v) else "nothing" for v in (theirs, ours)]
                raise UserError(
                    f"--model.generator: its vocabulary differs from the model's at token id {at} ({seen[0]} "
                    f"against {seen[1]}): its samples would be other tokens than the model reads"
                )
            gen_config, bottom = generator.config, generator.encoder.layer
            check_generator_size(config, gen_config.num_hidden_layers, gen_config.hidden_size, source=True)
        else:
            layers = max(1, config.num_hidden_layers // 3) if layers is None else layers
            hidden_size = config.hidden_size if hidden_size is None else hidden_size
            check_generator_size(config, layers, hidden_size)
            gen_config = dataclasses.replace(
                config,
                num_hidden_layers=layers,
                hidden_size=hidden_size,
                num_attention_heads=hidden_size // config.head_size,
                intermediate_size=config.intermediate_size * hidden_size // config.hidden_size,
                pruned_heads={} if hidden_size != config.hidden_size else _below(config.pruned_heads, layers),
            )
            bottom = encoder.encoder.layer
        width, layers = gen_config.hidden_size, gen_config.num_hidden_layers
        self.generator = BertModel(gen_config)
        self.generator.pooler = nn.Identity()  # no sentence output: no untrained weights for DDP to wait on
        if width == bottom[0].attention.output.dense.out_features:  # the same width: start from its layers
            self.generator.encoder.layer = nn.ModuleList(copy.deepcopy(bottom[i]) for i in range(layers))
        self.generator.embeddings = SharedEmbeddings(encoder.embeddings, config.hidden_size, width)
        self.generator_head = GeneratorHead(config, width, encoder.embeddings.word_embeddings)
        self.discriminator_head = DiscriminatorHead(config)
        for module in (self.generator.embeddings, self.generator_head, self.discriminator_head):
            module.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(
        self,
        encode,
        batch: dict[str, torch.Tensor],
        seeds: list[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> ElectraOutputs:
        """``encode(batch)``: the discriminator's output for a batch. ``seeds`` (one per sequence)
        fix the sampling for evaluation, however the sequences are batched or spread over ranks;
        without them, ``generator`` (``training_generator``) or torch's global random state draws."""
        ids, positions = batch["input_ids"], batch["mlm_positions"]
        out = self.generator(ids, batch.get("attention_mask"), batch.get("token_type_ids"), skip_padding=True)
        generator_logits = self.generator_head(out.last_hidden_state.flatten(0, 1)[positions])  # [M, V]
        with torch.no_grad():  # ELECTRA does not back-propagate through the sampling
            sampled = sample(generator_logits, positions // ids.shape[1], seeds, generator)  # [M]
            original = ids.flatten().index_put((positions,), batch["mlm_labels"])  # [B * T]
            corrupted = original.index_put((positions,), sampled)
            replaced = (corrupted != original).view_as(ids)  # [B, T]
        hidden = encode({**batch, "input_ids": corrupted.view_as(ids)}).last_hidden_state  # [B, T, H]
        return ElectraOutputs(generator_logits, self.discriminator_head(hidden), replaced)


def training_generator(device: torch.device, rank: int) -> torch.Generator:
    """The random state of one training step's replacements: a draw from torch's global state
    (seeded, and restored when a run resumes: a rerun samples the same) mixed with the process's
    rank. Every DDP rank starts from the same seed; without the rank they would draw the same noise."""
    draw = int(torch.randint(0, 2**62, ()).item())
    seed = int(np.random.SeedSequence([draw, rank]).generate_state(1, np.uint64)[0])
    return torch.Generator(device=device).manual_seed(seed)


def sample(
    logits: torch.Tensor,
    rows: torch.Tensor,
    seeds: list[int] | None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row of ``logits`` [M, V] from its softmax. With ``seeds``, the Gumbel-max
    trick (argmax of logits + Gumbel noise: an exact softmax sample) with each sequence's noise
    drawn from its own seed (``rows``: the sequence of each position); else from ``generator``."""
    logits = logits.float()
    if seeds is None:
        if not len(logits):
            return rows
        return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)
    noise = torch.empty_like(logits)
    for row in rows.unique().tolist():
        at = rows == row
        rng = torch.Generator(device=logits.device).manual_seed(int(seeds[row]))
        uniform = torch.rand(int(at.sum()), logits.shape[1], generator=rng, device=logits.device)
        noise[at] = -torch.log(-torch.log(uniform.clamp_min(1e-20)))
    return (logits + noise).argmax(-1)


def electra_losses(
    outputs: ElectraOutputs, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(generator MLM loss: mean over the masked tokens, RTD loss: mean over the real tokens)."""
    logits = outputs.generator_logits
    mlm = F.cross_entropy(logits, batch["mlm_labels"]) if len(logits) else logits.sum()
    real = _real(batch)
    rtd = F.binary_cross_entropy_with_logits(outputs.rtd_logits[real], outputs.replaced[real].float())
    return mlm, rtd


def _real(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    mask = batch.get("attention_mask")
    return torch.ones_like(batch["input_ids"], dtype=torch.bool) if mask is None else mask.bool()


def check_generator_size(config: BertConfig, layers: int, hidden_size: int, source: bool = False) -> None:
    """One line for a generator larger than the discriminator, or of a width heads do not divide."""
    if source and (layers > config.num_hidden_layers or hidden_size > config.hidden_size):
        raise UserError(
            f"--model.generator: {layers} layers of width {hidden_size}, larger than the discriminator "
            f"({config.num_hidden_layers} layers of {config.hidden_size}); the generator must be smaller"
        )
    if not 1 <= layers <= config.num_hidden_layers:
        raise UserError(
            f"--model.generator_layers {layers}: the generator must have 1 to {config.num_hidden_layers} "
            f"layers (the discriminator's); a generator larger than the discriminator is refused"
        )
    if hidden_size > config.hidden_size:
        raise UserError(
            f"--model.generator_hidden_size {hidden_size}: wider than the discriminator "
            f"({config.hidden_size}); ELECTRA's generator is a fraction of its width (1/4 to 1/2 works best)"
        )
    if hidden_size < 1 or hidden_size % config.head_size:
        raise UserError(
            f"--model.generator_hidden_size {hidden_size}: must be a positive multiple of the head size "
            f"{config.head_size} (e.g. {config.hidden_size // 4 // config.head_size * config.head_size or config.head_size})"
        )


def _below(pruned_heads: dict[int, list[int]], layers: int) -> dict[int, list[int]]:
    return {layer: heads for layer, heads in pruned_heads.items() if layer < layers}
