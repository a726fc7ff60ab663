"""NER decoding: per-word label scores -> one valid tag sequence per sentence; pure, no Lightning."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..data.conll import OUTSIDE, allowed_end, allowed_transition, normalize_scheme, split_tag


def transition_constraints(
    label_names: Sequence[str], scheme: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean masks of what the scheme allows: ``start[j]``, ``transition[i, j]`` (label i then
    label j) and ``end[i]``."""
    scheme = normalize_scheme(scheme)
    start = np.array([allowed_transition(None, label, scheme) for label in label_names])
    transition = np.array(
        [[allowed_transition(prev, label, scheme) for label in label_names] for prev in label_names]
    )
    end = np.array([allowed_end(label, scheme) for label in label_names])
    return start, transition, end


def viterbi(
    scores: np.ndarray,
    start: np.ndarray,
    transition: np.ndarray,
    end: np.ndarray,
    transition_scores: np.ndarray | None = None,
) -> list[int]:
    """The label sequence with the highest total score among the sequences the masks allow.

    ``scores`` is [words, labels] (log-probabilities: the sum is the sequence's log-probability
    under independent per-word predictions). ``transition_scores`` (a CRF's) are added when given.
    """
    length = scores.shape[0]
    if length == 0:
        return []
    forbidden = np.float64(-1e9)  # a large finite penalty keeps the arithmetic free of inf - inf
    pair = np.where(transition, 0.0, forbidden)
    if transition_scores is not None:
        pair = pair + transition_scores
    best = scores[0] + np.where(start, 0.0, forbidden)
    back = np.zeros((length, scores.shape[1]), dtype=np.int64)
    for step in range(1, length):
        candidates = best[:, None] + pair  # [previous label, label]
        back[step] = candidates.argmax(axis=0)
        best = candidates.max(axis=0) + scores[step]
    best = best + np.where(end, 0.0, forbidden)
    path = [int(best.argmax())]
    for step in range(length - 1, 0, -1):
        path.append(int(back[step, path[-1]]))
    return path[::-1]


def fill_untokenized(tags: list[str | None]) -> list[str]:
    """Tags for the words the model saw nothing of (None): inside an entity whose next word
    continues it, the word joins the entity (``I-X``); anywhere else it is ``O``. Either way
    the sequence stays valid."""
    filled: list[str] = []
    for index, tag in enumerate(tags):
        if tag is None:
            previous = filled[-1] if filled else OUTSIDE
            following = next((t for t in tags[index + 1 :] if t is not None), OUTSIDE)
            previous_prefix, previous_type = split_tag(previous)
            following_prefix, following_type = split_tag(following)
            continues = (
                previous_prefix in ("B", "I")
                and following_prefix in ("I", "E")
                and previous_type == following_type
            )
            tag = f"I-{previous_type}" if continues else OUTSIDE
        filled.append(tag)
    return filled


@dataclass
class WordScores:
    """The label log-probabilities of the words one window labels."""

    word_indices: np.ndarray  # [words]: index in the sentence of each labelled word
    scores: np.ndarray  # [words, labels]


def decode_sentence(
    length: int,
    windows: Iterable[WordScores],
    label_names: Sequence[str],
    constraints: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> list[str]:
    """The best valid tags of a sentence of ``length`` words from the scores of all its windows.

    Each word is labelled by one window; words that no window labels (they have no sub-token)
    are filled in by ``fill_untokenized``."""
    words: dict[int, np.ndarray] = {}
    for window in windows:
        for word, scores in zip(window.word_indices, window.scores, strict=True):
            words[int(word)] = scores
    order = sorted(words)
    path = viterbi(np.stack([words[w] for w in order]), *constraints) if order else []
    tags: list[str | None] = [None] * length
    for word, label in zip(order, path, strict=True):
        tags[word] = label_names[label]
    return fill_untokenized(tags)
