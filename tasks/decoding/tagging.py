"""NER decoding: per-word label scores -> one tag sequence per sentence; pure, no Lightning.

``viterbi`` (the default) finds the best sequence the tag scheme allows; ``argmax`` takes each
word's best label on its own (Hugging Face's run_ner), which may give sequences such as ``O I-PER``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..data.conll import OUTSIDE, allowed_end, allowed_transition, normalize_scheme, split_tag
from ..features.tagging import IGNORE_INDEX

# How a sentence's per-word scores become tags (``--model.decoding``).
DECODINGS = ("viterbi", "argmax")


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


def argmax_path(scores: np.ndarray) -> list[int]:
    """Each word's highest-scoring label, independently of its neighbours (``scores`` is
    [words, labels]; a tie goes to the lower label index). The sequence may be invalid in the
    scheme (``O I-PER``); conlleval's lenient reading counts such an ``I-`` as an entity's start."""
    return [int(label) for label in scores.argmax(axis=1)] if scores.shape[0] else []


def fill_untokenized(tags: list[str | None]) -> list[str]:
    """Tags for the words the model saw nothing of (None): inside an entity whose next word
    continues it, the word joins the entity (``I-X``); anywhere else it is ``O``. A sequence
    valid in BIO or IOBES stays valid; one of argmax decoding, valid or not, gets no new entity
    and no entity cut in two under conlleval's reading (``O None I-X`` -> ``O O I-X``: the
    entity still starts at the ``I-X``; ``I-X None I-X`` -> ``I-X I-X I-X``). (In IOB1, ``I-X
    None B-X`` -> ``I-X O B-X``, which strict IOB1 forbids; conlleval reads the same entities.)"""
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
    constraints: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    decoding: str = "viterbi",
) -> list[str]:
    """The tags of a sentence of ``length`` words from the scores of all its windows: the best
    valid sequence under ``constraints`` (``transition_constraints``) with ``viterbi``, each
    word's best label with ``argmax`` (``constraints`` unused, may be None).

    Each word is labelled by one window; words that no window labels (they have no sub-token)
    are filled in by ``fill_untokenized``, in either mode."""
    if decoding not in DECODINGS:
        raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, not {decoding!r}")
    if decoding == "viterbi" and constraints is None:
        raise ValueError("viterbi decoding needs the scheme's transition constraints")
    words: dict[int, np.ndarray] = {}
    for window in windows:
        for word, scores in zip(window.word_indices, window.scores, strict=True):
            words[int(word)] = scores
    order = sorted(words)
    stacked = np.stack([words[w] for w in order]) if order else np.zeros((0, len(label_names)))
    path = argmax_path(stacked) if decoding == "argmax" else viterbi(stacked, *constraints)
    tags: list[str | None] = [None] * length
    for word, label in zip(order, path, strict=True):
        tags[word] = label_names[label]
    return fill_untokenized(tags)


@dataclass
class TaggingContext:
    """What decoding a split needs besides the model's scores."""

    sentence_lengths: Sequence[int]  # words per sentence
    tag_scheme: str  # the scheme of the labels (and of the gold tags)
    # Text read with character offsets (--data.format doccano, ...): each word's character span
    # per sentence, and the gold entities in characters; scored at the character level.
    word_offsets: Sequence[Sequence[tuple[int, int]]] | None = None
    gold_spans: Sequence[Sequence[tuple[int, int, str]]] | None = None


@dataclass
class TaggedSentence:
    tags: list[str]
    loss_sum: float  # of all its windows
    labelled: int

    @classmethod
    def from_windows(
        cls,
        length: int,
        windows: Sequence[WindowOutput],
        label_names: Sequence[str],
        scheme: str,
        decoding: str,
    ) -> TaggedSentence:
        """A sentence of ``length`` words from the outputs of all its windows (``decode_sentence``)."""
        constraints = _constraints(tuple(label_names), scheme) if decoding == "viterbi" else None
        tags = decode_sentence(length, [w.scores for w in windows], label_names, constraints, decoding)
        return cls(tags, sum(w.loss_sum for w in windows), sum(w.labelled for w in windows))


@dataclass
class WindowOutput:
    """What one window contributes to its sentence."""

    # The feature columns ``from_batch`` reads.
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "labels",
        "word_positions",
        "word_indices",
        "sentence",
        "feature_index",
    )

    scores: WordScores  # the words this window labels
    loss_sum: float  # cross-entropy summed over its labelled tokens
    labelled: int  # how many

    @classmethod
    def from_batch(
        cls, log_probs: np.ndarray, loss_sums: Sequence[float], batch: dict[str, np.ndarray]
    ) -> list[tuple[int, int, WindowOutput]]:
        """(sentence, feature index, output) of each window of a batch: the label log-probabilities
        (``log_probs``: [B, T, labels]) at the positions of the words it labels, and its loss.
        ``batch`` holds the ``COLUMNS`` (word positions and indices padded with IGNORE_INDEX)."""
        labelled = (batch["labels"] != IGNORE_INDEX).sum(-1)
        outputs = []
        for row, loss_sum in enumerate(loss_sums):
            positions = batch["word_positions"][row]
            keep = positions != IGNORE_INDEX
            scores = WordScores(batch["word_indices"][row][keep], log_probs[row, positions[keep]])
            output = cls(scores, loss_sum, int(labelled[row]))
            outputs.append((int(batch["sentence"][row]), int(batch["feature_index"][row]), output))
        return outputs


def window_outputs(logits: Any, batch: dict[str, Any]) -> list[tuple[int, int, WindowOutput]]:
    """The tagging head's logits [B, T, labels] for a batch of windows -> each window's labelled
    words, their label log-probabilities, and its loss (summed over its labelled tokens, so that a
    split's loss is the mean over all of them): what predict, validate, test and the plain
    predictor decode from."""
    import torch.nn.functional as F

    log_probs, labels = logits.detach().float().log_softmax(-1), batch["labels"]
    losses = F.nll_loss(log_probs.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    arrays = {key: batch[key].cpu().numpy() for key in WindowOutput.COLUMNS}
    return WindowOutput.from_batch(log_probs.cpu().numpy(), losses.sum(-1).tolist(), arrays)


@functools.lru_cache(maxsize=8)
def _constraints(label_names: tuple[str, ...], scheme: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``transition_constraints``, built once per label set and scheme (not once per sentence)."""
    return transition_constraints(label_names, scheme)
