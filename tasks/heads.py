"""What a task head reads from the encoder, and the heads' own small steps; no Lightning.

``HeadInputs`` is a mixin of both the LightningModule (``tasks.module.TaskModule``) and the plain
predictor's network (``tasks.predictor``): one definition of which states a head sees (the last
layer, the pooled [CLS], or chosen layers combined), so that a fit's model and the predictor run
the same computation.
"""

from __future__ import annotations

from typing import Any

import torch

COMBINE_MODES = ("concat", "sum", "mean")


def hidden_layer_index(layer: int, num_layers: int) -> int:
    """Google's layer indexing -> an index into (embeddings, layer 1, ..., layer L): -1 is the last
    layer, -L the first, 0 (or -(L+1)) the embedding output, k > 0 layer k."""
    from .io import UserError

    if not -(num_layers + 1) <= layer <= num_layers:
        raise UserError(
            f"layer {layer} does not exist: the encoder has {num_layers} layers "
            f"(-1 .. -{num_layers} from the top, 0 the embeddings, 1 .. {num_layers} from the bottom)"
        )
    return layer if layer >= 0 else num_layers + 1 + layer


def combine_layers(hidden_states: tuple[torch.Tensor, ...], layers: list[int], how: str) -> torch.Tensor:
    """The chosen hidden states ([B, T, H] each, indices from ``hidden_layer_index``) joined:
    concat -> [B, T, len(layers) * H] in the order given; sum / mean -> [B, T, H]."""
    states = [hidden_states[i] for i in layers]
    if how == "concat":
        return states[0] if len(states) == 1 else torch.cat(states, dim=-1)
    total = torch.stack(states).sum(0)
    return total / len(states) if how == "mean" else total


def span_logits(logits: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """QA's head output [B, T, 2] -> start and end logits [B, T]; padding positions get -10000 so
    they never win or weigh."""
    start, end = logits.unbind(-1)
    padding = attention_mask == 0
    return start.masked_fill(padding, -10000.0), end.masked_fill(padding, -10000.0)


def all_hidden_states(encoder: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """(embeddings, layer 1, ..., layer L), each [B, T, H]: what feature extraction reads."""
    out = encoder(
        batch["input_ids"],
        batch["attention_mask"],
        batch.get("token_type_ids"),
        output_hidden_states=True,
        skip_padding=True,
    )
    return out.hidden_states


class HeadInputs:
    """The encoder's states a head reads. The host sets ``encoder`` (a ``bert_core`` BertModel),
    ``head_layers`` (indices from ``hidden_layer_index``, or None: the last layer and the pooler),
    and defines ``head_combine`` and ``encoder_frozen``."""

    encoder: Any
    head_layers: list[int] | None
    head_combine: str = "concat"
    encoder_frozen: bool = False

    def encode(self, batch: dict[str, torch.Tensor], cls_only: bool = False):
        """The encoder's output for a batch (without autograd when the encoder is frozen; with the
        hidden states, padding still skipped, when head_layers are chosen; the last layer at [CLS]
        only with ``cls_only``)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.encoder_frozen):
            return self.encoder(
                batch["input_ids"],
                batch.get("attention_mask"),
                batch.get("token_type_ids"),
                output_hidden_states=self.head_layers is not None,
                skip_padding=True,
                cls_only=cls_only,
            )

    def token_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, T, head_input_size]: the last layer, or the head_layers combined."""
        out = self.encode(batch)
        if self.head_layers is None:
            return out.last_hidden_state
        return combine_layers(out.hidden_states, self.head_layers, self.head_combine)

    def sentence_state(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, head_input_size]: the pooled [CLS], or [CLS] of the head_layers combined (no pooler)."""
        if self.head_layers is None:  # the pooler reads [CLS] alone: the last layer is computed there only
            return self.encode(batch, cls_only=True).pooler_output
        return self.token_states(batch)[:, 0]
