"""Feature extraction: the encoder's states of a batch -> one vector per line (pooled) or per word;
pure, no Lightning. The one pooling of predict and the plain predictor (``tasks.predictor``)."""

from __future__ import annotations

import numpy as np
import torch


def line_vectors(
    hidden_states: tuple[torch.Tensor, ...],
    batch: dict,
    layer_indices: list[int],
    combine: str,
    pooling: str,
    word_vector: str = "first",
) -> list[tuple[int, int, np.ndarray]]:
    """(example, feature, vector or word matrix) of each line of a batch, from the encoder's hidden
    states (embeddings, layer 1, ..., layer L) with ``layer_indices`` combined."""
    from ..heads import combine_layers

    outputs = tuple(h.float().cpu() for h in hidden_states)
    mask, word_ids = batch["attention_mask"].bool().cpu(), batch["word_ids"].cpu()
    states = combine_layers(outputs, layer_indices, combine)  # [B, T, D]
    values = pooled_vectors(states, mask, word_ids, batch["num_words"].tolist(), pooling, word_vector)
    return list(zip(batch["example"].tolist(), batch["feature_index"].tolist(), values))


def pooled_vectors(
    states: torch.Tensor,
    mask: torch.Tensor,
    word_ids: torch.Tensor,
    num_words: list[int],
    pooling: str,
    word_vector: str = "first",
) -> list[np.ndarray]:
    """Per line of ``states`` [B, T, D] (``mask`` [B, T] its real tokens): the ``cls`` vector, the
    ``mean`` or ``max`` over the real tokens, or (``none``) a [num_words, D] matrix (``word_vectors``)."""
    if pooling == "cls":
        return list(states[:, 0].float().numpy())
    if pooling == "mean":
        weights = mask.unsqueeze(-1).to(states.dtype)  # [B, T, 1]
        return list((states * weights).sum(1).div(weights.sum(1)).float().numpy())
    if pooling == "max":
        return list(states.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1).float().numpy())
    return [word_vectors(states[b], word_ids[b], num_words[b], word_vector) for b in range(len(states))]


def word_vectors(states: torch.Tensor, word_ids: torch.Tensor, num_words: int, how: str) -> np.ndarray:
    """[num_words, D] for one line: each word's first sub-token or the mean of its sub-tokens
    (zeros for a word that has no token: cut off by max_seq_length, or tokenised to nothing)."""
    real = word_ids >= 0
    words = word_ids[real]
    tokens = states[real]  # [n, D]
    if how == "mean":
        total = torch.zeros(num_words, states.shape[-1], dtype=states.dtype).index_add_(0, words, tokens)
        count = torch.zeros(num_words, dtype=states.dtype).index_add_(
            0, words, torch.ones_like(words, dtype=states.dtype)
        )
        vectors = total / count.clamp(min=1).unsqueeze(-1)
    else:
        first = torch.ones_like(words, dtype=torch.bool)
        first[1:] = words[1:] != words[:-1]
        vectors = torch.zeros(num_words, states.shape[-1], dtype=states.dtype)
        vectors[words[first]] = tokens[first]
    return vectors.float().numpy()
