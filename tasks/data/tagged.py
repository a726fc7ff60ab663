"""How the NER data module's files are read: CoNLL columns, or raw text with character-offset spans
from an annotation tool (``spans``); every split's tags converted to the training scheme."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import DataError, UserError
from . import conll, spans


@dataclass(frozen=True)
class TaggedFiles:
    """The reading options of ``--data`` for NER (see ``TaggingDataModule``), checked once."""

    format: str = "conll"
    tag_column: int = -1
    tag_scheme: str = "BIO"
    unseen_tags: str = "error"
    misaligned_spans: str = "warn"
    predict_format: str = "auto"

    def __post_init__(self) -> None:
        if self.format not in ("conll", *spans.FORMATS):
            raise UserError(f"--data.format must be conll, {', '.join(spans.FORMATS)}, not {self.format!r}")
        if self.misaligned_spans not in spans.MISALIGNED_POLICIES:
            choices = ", ".join(spans.MISALIGNED_POLICIES)
            raise UserError(
                f"--data.misaligned_spans must be one of {choices}, not {self.misaligned_spans!r}"
            )

    def reads_spans(self, split: str, path: str | None) -> bool:
        """Whether a split's file is an annotation file (``format``): a predict file is, unless
        ``predict_format`` names conll or text, or it is a ``.txt``/``.text`` file (raw text)."""
        if self.format == "conll" or split != "predict":
            return self.format != "conll"
        suffix = Path(path or "").suffix.lower()
        return self.predict_format == "auto" and suffix not in (".txt", ".text")

    def read(
        self, split: str, path: str | None, label_names: list[str] | None, hub: tuple[Any, str] | None = None
    ) -> tuple[conll.TaggedSplit, spans.SpanData | None]:
        """The split (a file, or ``hub``: a Hub data set's rows and its name) with its tags in the
        training scheme, and for an annotation file what it was read from; a dev or test tag of a
        type ``label_names`` lacks is an error or O (``unseen_tags``)."""
        labelled = split != "predict"
        known = None if split == "train" else conll.entity_types(label_names or [])
        if path is not None and self.reads_spans(split, path):
            data = spans.read_spans(path, self.format, labelled, self.misaligned_spans)
            if labelled and known is not None:
                spans.drop_unseen_types(data, known, self.unseen_tags)
            gold = conll.gold_in_scheme(path, data.sentences, self.tag_scheme) if labelled else None
            return conll.TaggedSplit(path, data.sentences, gold), data
        file = conll.read_conll(path, self.tag_column) if path is not None else None
        if file is not None and labelled and not file.has_tags:
            problem = f"no tag column: a {split} file needs a token and a tag per line"
            raise DataError(path, problem, line=file.sentences[0].line)
        origin = file.path if file else hub[1]
        sentences = file.sentences if file else conll.hub_sentences(hub[0])
        gold = None
        if labelled:
            gold = conll.gold_in_scheme(origin, sentences, self.tag_scheme, known, self.unseen_tags)
        return conll.TaggedSplit(str(path or origin), sentences, gold, file), None
