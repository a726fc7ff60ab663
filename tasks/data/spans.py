"""NER data from annotation tools: raw text plus character-offset spans, read into word-tagged
sentences and written back in the tool's own format.

Formats (``--data.format``):
- ``doccano``: JSONL, ``{"text": ..., "label": [[start, end, "PER"], ...]}``; the key may also be
  ``labels`` (older exports), or ``entities`` holding ``{"start_offset", "end_offset", "label"}``
  objects (exports of projects with relations).
- ``labelstudio``: Label Studio's JSON export, a list of tasks with ``data.text`` and
  ``annotations[*].result[*].value`` = ``{start, end, text, labels: [TYPE]}``; the first
  annotation not cancelled is read. Predictions go back as tasks with ``predictions``, which
  Label Studio imports as pre-annotations.
- ``spans-jsonl``: our own JSONL, ``{"text": ..., "spans": [{"start", "end", "label"}]}``.

Offsets are Python string indices (Unicode code points), ``end`` exclusive. Words are cut as
predict cuts raw text (``words.split_words``); a span must start and end on word boundaries, and
one that does not is an error, or widened to whole words (``misaligned``). Every record is a
document of its own; an empty text is kept, with no words and no entities.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..io import DataError, atomic_open, read_text_lines
from .conll import Sentence, spans_to_tags, tags_to_spans
from .jsonl import iter_jsonl_objects
from .words import split_words

log = logging.getLogger(__name__)

FORMATS = ("doccano", "labelstudio", "spans-jsonl")
MISALIGNED_POLICIES = ("error", "warn", "expand")
REPORTED = 5  # misaligned spans listed in the report (after the count)

CharSpan = tuple[int, int, str]  # (start, end exclusive, type) in characters


@dataclass
class SpanRecord:
    """One text of an annotation file: its spans as read, where it stands, and the record itself
    (written back with the predictions)."""

    text: str
    spans: list[CharSpan]
    where: str  # "line 3" (JSONL) or "task 2 (id 17)" (Label Studio), for messages
    line: int | None  # the JSONL line; None for Label Studio
    raw: dict[str, Any]


@dataclass
class AlignedRecord:
    """A record cut into words: their character offsets and the entities on them."""

    words: list[tuple[int, int]]
    entities: list[tuple[str, int, int]]  # (type, first word, end word exclusive)
    spans: list[CharSpan]  # the entities in characters (whole words)


@dataclass
class SpanData:
    """A file read and aligned: one ``Sentence`` per record, the gold entities in characters."""

    path: str
    format: str
    records: list[SpanRecord]
    sentences: list[Sentence]
    offsets: list[list[tuple[int, int]]]  # per record, each word's character span
    gold_spans: list[list[CharSpan]] | None  # None: unlabelled (a file to predict on)
    misaligned: list[str] = field(default_factory=list)  # one description per misaligned span


def _error(path: str | os.PathLike, record: SpanRecord, problem: str) -> DataError:
    """A DataError naming the record: its JSONL line, or its Label Studio task (number and id)."""
    prefix = "" if record.line is not None else f"{record.where}: "
    return DataError(path, prefix + problem, line=record.line)


# ----------------------------------------------------------------------------------------------
# Reading


def read_records(
    path: str | os.PathLike, data_format: str, labelled: bool, source: str = "annotations"
) -> list[SpanRecord]:
    """The records of an annotation file, with their spans as written (checked: inside the text,
    not empty, of a one-word type). ``labelled``: a Label Studio task needs an annotation;
    ``source="predictions"`` reads Label Studio's predictions instead (a file we wrote)."""
    if data_format not in FORMATS:
        raise ValueError(f"unknown span format {data_format!r}: expected one of {', '.join(FORMATS)}")
    if data_format == "labelstudio":
        records = _labelstudio_records(path, labelled, source)
    else:
        records = [
            _jsonl_record(path, number, raw, data_format, labelled)
            for number, raw in iter_jsonl_objects(path)
        ]
    if not records:
        raise DataError(path, f"no records: an empty {data_format} file", line=1)
    for record in records:
        _check_spans(path, record)
    return records


def _jsonl_record(
    path: str | os.PathLike, number: int, raw: dict[str, Any], data_format: str, labelled: bool
) -> SpanRecord:
    text = raw.get("text")
    if not isinstance(text, str):
        raise DataError(path, 'no "text" string in the record', line=number)
    where = f"line {number}"
    if not labelled:  # a file to predict on: its spans, if any, are not read
        return SpanRecord(text, [], where, number, raw)
    if data_format == "spans-jsonl":
        items = raw.get("spans", [])
        spans = [
            _span_object(path, number, item, ("start", "end", "label"))
            for item in _as_list(path, number, items)
        ]
    else:
        key = doccano_key(raw)
        items = _as_list(path, number, raw.get(key, []))
        if key == "entities":
            spans = [
                _span_object(path, number, item, ("start_offset", "end_offset", "label")) for item in items
            ]
        else:
            spans = [_span_triple(path, number, item) for item in items]
    return SpanRecord(text, spans, where, number, raw)


def doccano_key(raw: dict[str, Any]) -> str:
    """Which key of a doccano record holds its spans: ``entities``, ``label`` or ``labels``."""
    return next((key for key in ("entities", "label", "labels") if key in raw), "label")


def _as_list(path: str | os.PathLike, number: int, items: Any) -> list[Any]:
    if not isinstance(items, list):
        raise DataError(path, f"the spans must be a list, found {type(items).__name__}", line=number)
    return items


def _span_triple(path: str | os.PathLike, number: int, item: Any) -> CharSpan:
    if not (isinstance(item, list) and len(item) == 3):
        raise DataError(path, f"a doccano span is [start, end, label], found {json.dumps(item)}", line=number)
    return _typed(path, number, item[0], item[1], item[2])


def _span_object(path: str | os.PathLike, number: int, item: Any, keys: tuple[str, str, str]) -> CharSpan:
    if not (isinstance(item, dict) and all(key in item for key in keys)):
        raise DataError(path, f"a span needs {', '.join(keys)}; found {json.dumps(item)}", line=number)
    return _typed(path, number, *(item[key] for key in keys))


def _typed(
    path: str | os.PathLike, number: int | None, start: Any, end: Any, label: Any, where: str = ""
) -> CharSpan:
    valid = isinstance(start, int) and isinstance(end, int) and isinstance(label, str)
    if not valid or not label or any(char.isspace() for char in label):
        problem = f"a span needs integer offsets and a one-word label, found ({start!r}, {end!r}, {label!r})"
        raise DataError(path, (f"{where}: " if where else "") + problem, line=number)
    return start, end, label


def _labelstudio_records(path: str | os.PathLike, labelled: bool, source: str) -> list[SpanRecord]:
    try:
        tasks = json.loads("\n".join(read_text_lines(path)))
    except json.JSONDecodeError as err:
        raise DataError(path, f"not valid JSON: {err.msg}", line=err.lineno) from None
    if isinstance(tasks, dict):  # a single task exported alone
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise DataError(path, f"a Label Studio export is a JSON list of tasks, found {type(tasks).__name__}")
    records = []
    for number, task in enumerate(tasks, 1):
        where = f"task {number}" + (f" (id {task['id']})" if isinstance(task, dict) and "id" in task else "")
        data = task.get("data") if isinstance(task, dict) else None
        text = data.get("text") if isinstance(data, dict) else None
        if not isinstance(text, str):
            raise DataError(path, f'{where}: no "data.text" string')
        spans: list[CharSpan] = []
        if labelled:
            for item in _task_result(path, task, where, source):
                value = item.get("value") if isinstance(item, dict) else None
                if (
                    not isinstance(value, dict)
                    or item.get("type", "labels") != "labels"
                    or "start" not in value
                ):
                    continue  # relations, choices and other controls carry no span
                labels = value.get("labels") or [None]
                spans.extend(
                    _typed(path, None, value["start"], value.get("end"), label, where) for label in labels
                )
        records.append(SpanRecord(text, spans, where, None, task))
    return records


def _task_result(path: str | os.PathLike, task: dict[str, Any], where: str, source: str) -> list[Any]:
    """The result list of a task's first annotation not cancelled (or of its first prediction)."""
    entries = [entry for entry in task.get(source) or [] if not entry.get("was_cancelled")]
    if not entries:
        cancelled = len(task.get(source) or [])
        why = f" ({cancelled} cancelled)" if cancelled else ""
        raise DataError(path, f"{where}: no {source}{why}: label it in Label Studio or leave it out")
    return entries[0].get("result") or []


def _check_spans(path: str | os.PathLike, record: SpanRecord) -> None:
    for start, end, label in record.spans:
        if not 0 <= start < end:
            raise _error(path, record, f"span [{start}, {end}) {label!r} is empty or negative")
        if end > len(record.text):
            raise _error(
                path,
                record,
                f"span [{start}, {end}) {label!r} goes past the end of its text ({len(record.text)} characters)",
            )


# ----------------------------------------------------------------------------------------------
# Alignment to words


def align(
    path: str | os.PathLike,
    record: SpanRecord,
    misaligned: Literal["error", "warn", "expand"],
    report: list[str],
) -> AlignedRecord:
    """The record's words and its spans as word ranges. A span that does not start and end on
    word boundaries is a DataError (``misaligned="error"``) or widened to the words it touches
    (described in ``report``); one that touches no word (only spaces) is dropped. Spans that
    overlap (after widening) are a DataError naming both; an exact repeat counts once."""
    words = split_words(record.text)
    starts = {start: index for index, (start, _) in enumerate(words)}
    ends = {end: index + 1 for index, (_, end) in enumerate(words)}
    entities: dict[tuple[str, int, int], CharSpan] = {}
    for start, end, label in record.spans:
        if start in starts and end in ends:
            first, last = starts[start], ends[end]
        else:
            touched = [index for index, (a, b) in enumerate(words) if a < end and b > start]
            described = f"{record.where}: [{start}, {end}) {label} {record.text[start:end]!r}"
            if misaligned == "error":
                problem = f"span [{start}, {end}) {label} {record.text[start:end]!r} does not start and end on word boundaries"
                hint = " (--data.misaligned_spans warn or expand widens it to whole words)"
                raise _error(path, record, problem + hint)
            if not touched:
                report.append(f"{described} covers no word: dropped")
                continue
            first, last = touched[0], touched[-1] + 1
            widened = record.text[words[first][0] : words[last - 1][1]]
            report.append(f"{described} -> {widened!r}")
        entities.setdefault((label, first, last), (start, end, label))
    ordered = sorted(entities, key=lambda entity: (entity[1], entity[2]))
    for previous, current in zip(ordered, ordered[1:], strict=False):
        if current[1] < previous[2]:
            a, b = entities[previous], entities[current]
            problem = (
                f"overlapping spans [{a[0]}, {a[1]}) {a[2]} {record.text[a[0] : a[1]]!r} and "
                f"[{b[0]}, {b[1]}) {b[2]} {record.text[b[0] : b[1]]!r}: NER tags one entity per word"
            )
            raise _error(path, record, problem)
    spans = [(words[first][0], words[last - 1][1], label) for label, first, last in ordered]
    return AlignedRecord(words, ordered, spans)


def read_spans(
    path: str | os.PathLike,
    data_format: str,
    labelled: bool = True,
    misaligned: Literal["error", "warn", "expand"] = "warn",
    source: str = "annotations",
) -> SpanData:
    """An annotation file as sentences of words with BIO tags (None when not ``labelled``) and
    its gold entities in characters. Misaligned spans are reported once per file (``warn``):
    the count, then the first few with their record and text."""
    if misaligned not in MISALIGNED_POLICIES:
        raise ValueError(f"misaligned must be one of {', '.join(MISALIGNED_POLICIES)}, not {misaligned!r}")
    records = read_records(path, data_format, labelled, source)
    report: list[str] = []
    sentences, offsets, gold = [], [], []
    for index, record in enumerate(records):
        aligned = align(path, record, misaligned, report)
        words = [record.text[a:b] for a, b in aligned.words]
        tags = spans_to_tags(aligned.entities, len(words), "BIO") if labelled else None
        sentences.append(Sentence(words, tags, index, [record.line or index + 1] * len(words)))
        offsets.append(aligned.words)
        gold.append(aligned.spans)
    if report and misaligned == "warn":
        shown = "; ".join(report[:REPORTED]) + ("; ..." if len(report) > REPORTED else "")
        log.warning(
            "%s: %d span(s) not on word boundaries, widened to whole words: %s", path, len(report), shown
        )
    return SpanData(str(path), data_format, records, sentences, offsets, gold if labelled else None, report)


def drop_unseen_types(
    data: SpanData, known_types: Collection[str], unseen: Literal["error", "map_to_o"] = "error"
) -> None:
    """A dev or test file's entities of a type the train file lacks: a DataError naming the
    record, or (``map_to_o``) dropped from the tags and the gold spans, with a warning."""
    dropped = 0
    for index, record in enumerate(data.records):
        spans = data.gold_spans[index] if data.gold_spans is not None else []
        for start, end, label in spans:
            if label in known_types:
                continue
            if unseen == "error":
                problem = (
                    f"span [{start}, {end}) type {label!r} is not in the train file's label set "
                    f"({', '.join(sorted(known_types)) or 'none'}); pass --data.unseen_tags map_to_o to read it as O"
                )
                raise _error(data.path, record, problem)
            dropped += 1
        if data.gold_spans is not None and dropped:
            kept = [span for span in spans if span[2] in known_types]
            data.gold_spans[index] = kept
            words = data.offsets[index]
            data.sentences[index].tags = spans_to_tags(_word_entities(words, kept), len(words), "BIO")
    if dropped:
        log.warning("%s: %d span(s) of types unseen in training read as O", data.path, dropped)


def _word_entities(
    offsets: Sequence[tuple[int, int]], spans: Sequence[CharSpan]
) -> list[tuple[str, int, int]]:
    """Whole-word character spans as ``(type, first word, end word)``."""
    starts = {start: index for index, (start, _) in enumerate(offsets)}
    ends = {end: index + 1 for index, (_, end) in enumerate(offsets)}
    return [(label, starts[s], ends[e]) for s, e, label in spans]


# ----------------------------------------------------------------------------------------------
# Character-level entities and writing back


def tags_to_char_spans(tags: Sequence[str], offsets: Sequence[tuple[int, int]]) -> list[CharSpan]:
    """The entities of a word tag sequence (conlleval's chunking) in characters."""
    return [(offsets[first][0], offsets[last - 1][1], kind) for kind, first, last in tags_to_spans(tags)]


def record_with_spans(
    record: SpanRecord, data_format: str, spans: Sequence[CharSpan], labelstudio_key: str = "predictions"
) -> dict[str, Any]:
    """The record again, its spans replaced by ``spans``, in ``data_format``: doccano keeps the
    key (and shape) it came with; Label Studio gets a task (``data``, ``id``) with its spans as
    ``predictions`` (imported as pre-annotations), or as ``annotations`` (``labelstudio_key``)."""
    raw = dict(record.raw)
    if data_format == "spans-jsonl":
        raw["spans"] = [{"start": s, "end": e, "label": label} for s, e, label in spans]
    elif data_format == "doccano":
        key = doccano_key(raw)
        if key == "entities":
            raw[key] = [
                {"id": i, "label": label, "start_offset": s, "end_offset": e}
                for i, (s, e, label) in enumerate(spans)
            ]
        else:
            raw[key] = [[s, e, label] for s, e, label in spans]
    else:
        from_name, to_name = _labelstudio_names(raw)
        result = [
            {
                "id": f"span{i}",
                "from_name": from_name,
                "to_name": to_name,
                "type": "labels",
                "value": {"start": s, "end": e, "text": record.text[s:e], "labels": [label]},
            }
            for i, (s, e, label) in enumerate(spans)
        ]
        entry: dict[str, Any] = {"result": result}
        if labelstudio_key == "predictions":
            entry["model_version"] = "bert-tasks"
        raw = {**({"id": raw["id"]} if "id" in raw else {}), "data": raw["data"], labelstudio_key: [entry]}
    return raw


def _labelstudio_names(task: dict[str, Any]) -> tuple[str, str]:
    """The control and object names of the project's labelling config, as the task's own results
    use them (``label``/``text`` by default): Label Studio matches predictions by these names."""
    for entry in [*(task.get("annotations") or []), *(task.get("predictions") or [])]:
        for item in entry.get("result") or []:
            if isinstance(item, dict) and item.get("type", "labels") == "labels" and "from_name" in item:
                return item["from_name"], item.get("to_name", "text")
    return "label", "text"


class SpanWriter:
    """Renders records with new spans in their format, one call per record in order: JSONL
    formats one record a line, Label Studio one JSON list of tasks (``header``, ``footer``)."""

    def __init__(self, records: Sequence[SpanRecord], data_format: str, labelstudio_key: str = "predictions"):
        self.records, self.format, self.labelstudio_key = records, data_format, labelstudio_key
        self.written = 0
        json_list = data_format == "labelstudio"
        self.file_name = "predictions.json" if json_list else "predictions.jsonl"
        self.header, self.footer = (["["], ["]"]) if json_list else ([], [])

    def render(self, index: int, spans: Sequence[CharSpan]) -> list[str]:
        record = record_with_spans(self.records[index], self.format, spans, self.labelstudio_key)
        line = json.dumps(record, ensure_ascii=False)
        if self.format == "labelstudio" and self.written:
            line = "," + line  # a separator before every task but the first
        self.written += 1
        return [line]


def write_span_file(
    path: str | os.PathLike,
    data_format: str,
    records: Sequence[SpanRecord],
    spans: Sequence[Sequence[CharSpan]],
    labelstudio_key: str = "predictions",
) -> Path:
    """Write ``records`` with ``spans`` (one list per record) in ``data_format``, atomically."""
    writer = SpanWriter(records, data_format, labelstudio_key)
    with atomic_open(path) as handle:
        lines = [*writer.header]
        for index, record_spans in enumerate(spans):
            lines.extend(writer.render(index, record_spans))
        handle.write("\n".join([*lines, *writer.footer]) + "\n")
    return Path(path)


def conll_as_text(sentence: Sentence) -> tuple[str, list[CharSpan]]:
    """A tagged CoNLL sentence as raw text (its words joined by spaces) and its entities in
    characters: how the shipped samples and the benchmark's doccano files are made."""
    offsets, position = [], 0
    for word in sentence.words:
        offsets.append((position, position + len(word)))
        position += len(word) + 1
    return " ".join(sentence.words), tags_to_char_spans(sentence.tags or [], offsets)
