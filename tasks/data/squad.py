"""SQuAD files (v1.1 and v2.0 JSON) and JSONL question files, read into plain examples; the
prediction files written back.

Two input shapes are accepted:

- SQuAD JSON: ``{"version", "data": [{"title", "paragraphs": [{"context", "qas": [{"id",
  "question", "answers": [{"text", "answer_start"}], "is_impossible"?}]}]}]}``.
- JSONL, one question a line: ``{"id"?, "question", "context", "answers"?, "is_impossible"?}``
  where ``answers`` is a list of ``{"text", "answer_start"}`` or the Hugging Face layout
  ``{"text": [...], "answer_start": [...]}``. A line without ``id`` gets its 1-based line
  number as id.

``SquadExample.answers`` is ``None`` when the file gives no answers at all (questions to
predict), and an empty tuple when the question is unanswerable (SQuAD v2.0).

Every ``answer_start`` must point at its answer text in the context. One mismatch is repaired,
and logged as a warning: an unambiguous *whitespace shift*, where the answer text occurs exactly
once at a place that differs from ``answer_start`` only by whitespace, either because the gap
between the two is whitespace (the annotator's span took in a space, or the text carries
leading/trailing spaces) or because ``answer_start`` was counted in the context with its runs of
whitespace collapsed to one space. Anything else is a ``DataError`` naming the question id.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..io import DataError, iter_text_lines, read_text_lines, write_json
from .jsonl import iter_jsonl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SquadAnswer:
    text: str
    start: int  # character offset of ``text`` in the context: context[start:start + len(text)] == text

    @property
    def end(self) -> int:
        """Character offset one past the answer's last character."""
        return self.start + len(self.text)


@dataclass(frozen=True)
class SquadExample:
    id: str
    question: str
    context: str
    answers: tuple[SquadAnswer, ...] | None  # None: no gold given; (): unanswerable
    title: str = ""

    @property
    def is_impossible(self) -> bool:
        return self.answers == ()


@dataclass
class SquadFile:
    path: Path
    examples: list[SquadExample]
    # SQuAD v2.0 semantics (unanswerable questions exist): the "version" field says v2, or some
    # question carries "is_impossible", or some question has an empty answer list.
    version_2_with_negative: bool
    repaired: list[str]  # ids of the questions whose answer_start was repaired

    @property
    def has_answers(self) -> bool:
        """True when every question carries gold answers (the file can train or be scored)."""
        return all(example.answers is not None for example in self.examples)

    def gold_answers(self) -> dict[str, list[str]]:
        """{question id: gold answer texts}, in file order: what the official scorers read."""
        return {example.id: [answer.text for answer in example.answers or ()] for example in self.examples}


def read_squad(path: str | os.PathLike, check_answer_starts: bool = True) -> SquadFile:
    """Read a SQuAD JSON file or a JSONL question file (chosen by content, not by name).

    ``check_answer_starts=False`` skips the answer_start checks; the scorer uses it, because the
    official scripts look at answer texts only.
    """
    path = Path(path)
    lines = read_text_lines(path)
    first = next((line.lstrip() for line in lines if line.strip()), "")
    if not first:
        raise DataError(path, "empty file: no questions")
    reader = _SquadJsonReader if _is_squad_json(first, lines) else _JsonlReader
    return reader(path, lines, check_answer_starts).read()


def _is_squad_json(first_line: str, lines: list[str]) -> bool:
    # JSONL: the first line is a complete question object, or one of several one-line objects.
    # Anything else (a pretty-printed document, a one-line {"data": ...}) goes to the JSON reader,
    # which reports precisely what is wrong with it.
    try:
        record = json.loads(first_line)
    except json.JSONDecodeError:
        return True
    if not isinstance(record, dict):
        return True
    if "question" in record or "context" in record:
        return False
    return sum(1 for line in lines if line.strip()) == 1


class _Reader:
    def __init__(self, path: Path, lines: list[str], check_answer_starts: bool):
        self.path, self.lines, self.check_answer_starts = path, lines, check_answer_starts
        self.examples: list[SquadExample] = []
        self.seen_ids: dict[str, str] = {}  # id -> where it was first seen
        self.repaired: list[str] = []
        self.saw_negative_marker = False
        self.first_unanswerable: str | None = None  # the id of the first question without answers

    def error(self, problem: str, where: str | None = None, line: int | None = None) -> DataError:
        return DataError(self.path, problem, line=line, example=where)

    def add(self, qa: dict[str, Any], context: str, title: str, where: str, line: int | None) -> None:
        """Validate one question record and append it as an example."""
        qid = qa.get("id")
        if not isinstance(qid, (str, int)) or isinstance(qid, bool) or str(qid) == "":
            raise self.error("missing or empty 'id'", where, line)
        qid = str(qid)
        if qid in self.seen_ids:
            raise self.error(f"duplicate question id (first seen at {self.seen_ids[qid]})", qid, line)
        self.seen_ids[qid] = f"line {line}" if line is not None else where
        question = qa.get("question")
        if not isinstance(question, str) or not question.strip():
            raise self.error("missing or empty 'question'", qid, line)
        if not context.strip():
            raise self.error("empty context: there is nothing to find an answer in", qid, line)
        answers = self.answers(qa, context, qid, line)
        self.examples.append(SquadExample(qid, question, context, answers, title))

    def answers(
        self, qa: dict[str, Any], context: str, qid: str, line: int | None
    ) -> tuple[SquadAnswer, ...] | None:
        raw = qa.get("answers")
        impossible = qa.get("is_impossible")
        if impossible is not None:
            self.saw_negative_marker = True
            if not isinstance(impossible, bool):
                raise self.error(f"'is_impossible' must be true or false, not {impossible!r}", qid, line)
        if raw is None:
            return () if impossible else None
        pairs = _answer_pairs(raw)
        if pairs is None:
            raise self.error(
                "'answers' must be a list of {text, answer_start} or {text: [...], answer_start: [...]}",
                qid,
                line,
            )
        if impossible and pairs:
            raise self.error("is_impossible is true but answers are given", qid, line)
        if impossible is False and not pairs:
            raise self.error("is_impossible is false but there are no answers", qid, line)
        if not pairs:
            self.saw_negative_marker = True
            self.first_unanswerable = self.first_unanswerable or qid
        return tuple(self.answer(text, start, context, qid, line) for text, start in pairs)

    def answer(self, text: Any, start: Any, context: str, qid: str, line: int | None) -> SquadAnswer:
        if not isinstance(text, str) or not text.strip():
            raise self.error("an answer has a missing or empty 'text'", qid, line)
        if not isinstance(start, int) or isinstance(start, bool) or start < 0:
            raise self.error(f"answer {text!r} has no valid 'answer_start' (got {start!r})", qid, line)
        if not self.check_answer_starts or context[start : start + len(text)] == text:
            return SquadAnswer(text, start)
        repaired = repair_whitespace_shift(context, text, start)
        if repaired is None:
            found = context[start : start + len(text)]
            raise self.error(
                f"answer_start {start} points at {found!r}, not at the answer {text!r}", qid, line
            )
        self.repaired.append(qid)
        log.warning(
            "%s: question %s: answer %r moved from answer_start %d to %d (whitespace shift)",
            self.path,
            qid,
            text,
            start,
            repaired.start,
        )
        return repaired

    def finish(self, version: str = "") -> SquadFile:
        if not self.examples:
            raise self.error("no questions in the file")
        declared = version.lstrip("vV")
        if declared.startswith("1") and self.first_unanswerable is not None:
            # Silently training the whole run as v2.0 because of one stray empty list would be worse.
            raise self.error(
                f'\'answers\' is empty, but the file says "version": "{version}" (SQuAD v1.1 has no '
                "unanswerable questions): give the answer, or mark the file as version 2.0",
                self.first_unanswerable,
            )
        version_2 = self.saw_negative_marker or declared.startswith("2")
        if self.repaired:
            log.warning(
                "%s: repaired %d answer_start value(s) shifted by whitespace", self.path, len(self.repaired)
            )
        return SquadFile(self.path, self.examples, version_2, self.repaired)


class _SquadJsonReader(_Reader):
    def read(self) -> SquadFile:
        try:
            document = json.loads("\n".join(self.lines))
        except json.JSONDecodeError as err:
            raise self.error(f"not valid JSON: {err.msg} (column {err.colno})", line=err.lineno) from None
        if not isinstance(document, dict) or not isinstance(document.get("data"), list):
            raise self.error("not a SQuAD file: expected a JSON object with a 'data' list of articles")
        version = document.get("version", "")
        for a, article in enumerate(document["data"]):
            where = f"data[{a}]"
            if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
                raise self.error("article without a 'paragraphs' list", where)
            title = article.get("title", "")
            for p, paragraph in enumerate(article["paragraphs"]):
                where = f"data[{a}].paragraphs[{p}]"
                if not isinstance(paragraph, dict):
                    raise self.error("paragraph is not an object", where)
                context = paragraph.get("context")
                if not isinstance(context, str):
                    raise self.error("paragraph without a 'context' string", where)
                qas = paragraph.get("qas")
                if not isinstance(qas, list):
                    raise self.error("paragraph without a 'qas' list", where)
                for q, qa in enumerate(qas):
                    if not isinstance(qa, dict):
                        raise self.error("question is not an object", f"{where}.qas[{q}]")
                    self.add(qa, context, str(title), f"{where}.qas[{q}]", None)
        return self.finish(str(version))


class _JsonlReader(_Reader):
    def read(self) -> SquadFile:
        for _ in self.iter_examples(self.lines):
            pass
        return self.finish()

    def iter_examples(self, lines: Iterable[str]) -> Iterator[SquadExample]:
        """Check and add the question of each line; yields each as it is added."""
        for number, record in iter_jsonl(self.path, lines):
            self.add_record(record, number, f"line {number}")
            yield self.examples[-1]

    def add_record(self, record: Any, number: int, where: str) -> None:
        line = number if self.lines else None
        if not isinstance(record, dict):
            raise self.error("expected a JSON object {id, question, context, answers?}", where, line)
        context = record.get("context")
        if not isinstance(context, str):
            raise self.error("missing 'context' string", where if line is None else None, line)
        if "id" not in record:
            record = {**record, "id": str(number)}
        self.add(record, context, str(record.get("title", "")), where, line)


def looks_like_jsonl(path: str | os.PathLike) -> bool:
    """Whether a question file is JSONL (its first non-blank line a question object), read from
    its first line only."""
    first = next((line for line in iter_text_lines(path) if line.strip()), "")
    try:
        record = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(record, dict) and ("question" in record or "context" in record)


def iter_jsonl_questions(path: str | os.PathLike) -> Iterator[SquadExample]:
    """The questions of a JSONL file one at a time, checked as ``read_squad`` checks them, without
    holding the file; only the question ids are kept, to refuse a repeated one."""
    path = Path(path)
    reader = _JsonlReader(path, [""], check_answer_starts=False)  # [""]: errors name their line
    count = 0
    for example in reader.iter_examples(iter_text_lines(path)):
        reader.examples.clear()  # the ids stay in reader.seen_ids
        count += 1
        yield example
    if not count:
        raise DataError(path, "empty file: no questions", line=1)


def squad_from_records(
    source: str, records: Iterable[dict[str, Any]], check_answer_starts: bool = True
) -> SquadFile:
    """Examples from JSONL-shaped records held in memory (e.g. a Hugging Face ``squad`` split).

    Errors name ``source`` and the record's id (or 1-based position).
    """
    reader = _JsonlReader(Path(source), [], check_answer_starts)
    for number, record in enumerate(records, start=1):
        reader.add_record(record, number, f"record {number}")
    return reader.finish()


def _answer_pairs(raw: Any) -> list[tuple[Any, Any]] | None:
    """(text, answer_start) pairs from either answer layout; None when the layout is unknown."""
    if isinstance(raw, list):
        if not all(isinstance(item, dict) for item in raw):
            return None
        return [(item.get("text"), item.get("answer_start")) for item in raw]
    if (
        isinstance(raw, dict)
        and isinstance(raw.get("text"), list)
        and isinstance(raw.get("answer_start"), list)
    ):
        if len(raw["text"]) != len(raw["answer_start"]):
            return None
        return list(zip(raw["text"], raw["answer_start"], strict=True))
    return None


# ----------------------------------------------------------------------------------------------
# Prediction files

# null_odds.json stays strict JSON: a question without any valid span gets this instead of infinity.
NO_SPAN_NULL_ODDS = 1e9


class SquadPrediction(Protocol):
    """What the prediction files show of a decoded answer (``tasks.decoding.qa.QAPrediction``)."""

    id: str
    text: str  # "" for no answer
    start: int | None  # character offsets of ``text`` in the context
    end: int | None
    score: float | None
    null_odds: float | None  # v2.0: null score minus the best span score
    nbest: list[dict]


def prediction_line(prediction: SquadPrediction) -> str:
    """``predict``'s JSONL ``{id, answer, start, end, score}``: ``context[start:end] == answer``."""
    return json.dumps(prediction_record(prediction), ensure_ascii=False)


def prediction_record(prediction: SquadPrediction) -> dict[str, Any]:
    """One line of ``prediction_line`` as a dict (what the plain predictor returns)."""
    score = None if prediction.score is None else round(prediction.score, 6)
    record = {
        "id": prediction.id,
        "answer": prediction.text,
        "start": prediction.start,
        "end": prediction.end,
    }
    return {**record, "score": score}


def write_evaluation_files(
    predictions: Iterable[SquadPrediction], directory: Path, version_2_with_negative: bool
) -> list[Path]:
    """``predictions.json`` ({id: answer}, the official format), ``nbest_predictions.json`` and,
    for v2.0, ``null_odds.json`` (what the official v2.0 script reads with ``--na-prob-file``)."""
    answers = list(predictions)
    paths = [
        write_json(directory / "predictions.json", {p.id: p.text for p in answers}),
        write_json(directory / "nbest_predictions.json", {p.id: p.nbest for p in answers}),
    ]
    if version_2_with_negative:
        odds = {p.id: _finite(p.null_odds) for p in answers}
        paths.append(write_json(directory / "null_odds.json", odds))
    return paths


def _finite(odds: float | None) -> float | None:
    return NO_SPAN_NULL_ODDS if odds is not None and math.isinf(odds) else odds


# ----------------------------------------------------------------------------------------------
# The whitespace-shift repair

_WHITESPACE_RUN = re.compile(r"\s+")


def repair_whitespace_shift(context: str, text: str, start: int) -> SquadAnswer | None:
    """The answer's true place when ``start`` is off by whitespace only and the place is unique.

    Candidates are the occurrences of the answer text (its surrounding whitespace stripped).
    One qualifies when the context between it and ``start`` is whitespace only, or when
    ``start`` is its offset in the context with whitespace runs collapsed to single spaces.
    Exactly one qualifying occurrence is a repair; none or several is no repair (None).
    """
    stripped = text.strip()
    collapsed_offsets = _collapsed_offsets(context)
    qualifying = []
    for position in _occurrences(context, stripped):
        low, high = sorted((start, position))
        gap_is_whitespace = high <= len(context) and context[low:high].strip() == ""
        if gap_is_whitespace or collapsed_offsets[position] == start:
            qualifying.append(position)
    if len(qualifying) != 1:
        return None
    return SquadAnswer(stripped, qualifying[0])


def _occurrences(context: str, text: str) -> Iterator[int]:
    position = context.find(text)
    while position != -1:
        yield position
        position = context.find(text, position + 1)


def _collapsed_offsets(context: str) -> list[int]:
    """offsets[i] = where character i lands once leading whitespace is dropped and runs collapse."""
    offsets, collapsed, previous_space = [], 0, True  # True drops the leading whitespace
    for char in context:
        offsets.append(collapsed)
        is_space = char.isspace()
        if not (is_space and previous_space):
            collapsed += 1
        previous_space = is_space
    return offsets
