"""NER from annotation tools (tasks/data/spans.py): readers on hand-written records, misaligned and
overlapping spans, the character-level scorer against seqeval, and the write-back round trip."""

import json
import logging
from pathlib import Path

import pytest

from tasks.data.conll import read_conll
from tasks.data.spans import (
    SpanRecord,
    conll_as_text,
    read_records,
    read_spans,
    tags_to_char_spans,
    write_span_file,
)
from tasks.io import DataError
from tasks.metrics.ner import char_span_scores, ner_scores

from .conftest import ROOT

TEXT = "Angela Merkel visited Paris, then Obama's team."  # "Paris" 22-27, "Obama" 34-39 ("'s" 39-41)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def labelstudio_task(text: str, spans: list[tuple[int, int, str]], **task) -> dict:
    result = [
        {
            "from_name": "ner",
            "to_name": "txt",
            "type": "labels",
            "value": {"start": s, "end": e, "labels": [t]},
        }
        for s, e, t in spans
    ]
    return {"data": {"text": text}, "annotations": [{"result": result}], **task}


@pytest.mark.parametrize(
    "record",
    [
        {"text": TEXT, "label": [[0, 13, "PER"], [22, 27, "LOC"], [34, 39, "PER"]]},
        {"text": TEXT, "labels": [[0, 13, "PER"], [22, 27, "LOC"], [34, 39, "PER"]]},
        {
            "text": TEXT,
            "entities": [
                {"id": 1, "label": "PER", "start_offset": 0, "end_offset": 13},
                {"id": 2, "label": "LOC", "start_offset": 22, "end_offset": 27},
                {"id": 3, "label": "PER", "start_offset": 34, "end_offset": 39},
            ],
        },
    ],
    ids=["label", "labels", "entities"],
)
def test_doccano_variants_give_the_same_words_and_tags(tmp_path, record):
    data = read_spans(write_jsonl(tmp_path / "a.jsonl", [record]), "doccano")
    sentence = data.sentences[0]
    assert sentence.words == ["Angela", "Merkel", "visited", "Paris", ",", "then", "Obama", "'s", "team", "."]
    assert sentence.tags == ["B-PER", "I-PER", "O", "B-LOC", "O", "O", "B-PER", "O", "O", "O"]
    assert data.gold_spans == [[(0, 13, "PER"), (22, 27, "LOC"), (34, 39, "PER")]]
    assert not data.misaligned


def test_labelstudio_reads_the_first_annotation_not_cancelled(tmp_path):
    task = labelstudio_task(TEXT, [(22, 27, "LOC")], id=7)
    task["annotations"].insert(0, {"was_cancelled": True, "result": []})
    task["annotations"][1]["result"].append({"type": "relation", "from_id": "a", "to_id": "b"})
    path = tmp_path / "export.json"
    path.write_text(json.dumps([task]))
    assert read_spans(path, "labelstudio").gold_spans == [[(22, 27, "LOC")]]


def test_labelstudio_task_without_annotations_is_an_error_naming_it(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(
        json.dumps([labelstudio_task("A b", []), {"id": 12, "data": {"text": "Bob"}, "annotations": []}])
    )
    with pytest.raises(DataError, match=r"export.json: task 2 \(id 12\): no annotations"):
        read_spans(path, "labelstudio")
    assert read_spans(path, "labelstudio", labelled=False).gold_spans is None  # fine to predict on


@pytest.mark.parametrize(
    ("spans", "message"),
    [
        (
            [[30, 99, "PER"]],
            r"a.jsonl:2: span \[30, 99\) 'PER' goes past the end of its text \(47 characters\)",
        ),
        ([[5, 5, "PER"]], r"a.jsonl:2: span \[5, 5\) 'PER' is empty"),
        (
            [[0, 13, "PER"], [7, 21, "ORG"]],
            r"a.jsonl:2: overlapping spans \[0, 13\) PER 'Angela Merkel' and \[7, 21\) ORG 'Merkel visited'",
        ),
        ([[0, 6, "first name"]], r"a.jsonl:2: a span needs integer offsets and a one-word label"),
    ],
    ids=["past-the-end", "empty", "overlapping", "label-with-a-space"],
)
def test_bad_spans_are_one_line_errors_naming_the_record(tmp_path, spans, message):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "ok", "label": []}, {"text": TEXT, "label": spans}])
    with pytest.raises(DataError, match=message):
        read_spans(path, "doccano")


def test_a_repeated_span_counts_once(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": TEXT, "label": [[22, 27, "LOC"], [22, 27, "LOC"]]}])
    assert read_spans(path, "doccano").gold_spans == [[(22, 27, "LOC")]]


MISALIGNED = {
    "text": TEXT,
    "label": [[1, 13, "PER"], [22, 26, "LOC"], [13, 14, "MISC"]],
}  # "ngela Merkel", "Pari", " "


def test_misaligned_spans_error_names_the_line_and_text(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [MISALIGNED])
    with pytest.raises(
        DataError, match=r"a.jsonl:1: span \[1, 13\) PER 'ngela Merkel' does not start and end on word"
    ):
        read_spans(path, "doccano", misaligned="error")


@pytest.mark.parametrize("policy", ["warn", "expand"])
def test_misaligned_spans_are_widened_to_whole_words(tmp_path, caplog, policy):
    path = write_jsonl(tmp_path / "a.jsonl", [MISALIGNED])
    with caplog.at_level(logging.WARNING):
        data = read_spans(path, "doccano", misaligned=policy)
    # "Pari" widens to "Paris"; a span over a lone space touches no word and is dropped
    assert data.gold_spans == [[(0, 13, "PER"), (22, 27, "LOC")]]
    assert data.sentences[0].tags[:5] == ["B-PER", "I-PER", "O", "B-LOC", "O"]
    assert len(data.misaligned) == 3
    reported = [r.getMessage() for r in caplog.records if "word boundaries" in r.getMessage()]
    if policy == "expand":
        assert reported == []
    else:
        (line,) = reported
        assert "a.jsonl: 3 span(s) not on word boundaries" in line
        assert "line 1: [1, 13) PER 'ngela Merkel' -> 'Angela Merkel'" in line


def test_the_report_lists_the_first_few(tmp_path, caplog):
    records = [{"text": "Paris x", "label": [[0, 4, "LOC"]]}] * 8
    with caplog.at_level(logging.WARNING):
        read_spans(write_jsonl(tmp_path / "a.jsonl", records), "doccano")
    (line,) = [r.getMessage() for r in caplog.records if "word boundaries" in r.getMessage()]
    assert "8 span(s)" in line and "line 5:" in line and "line 6:" not in line and line.endswith("; ...")


def test_an_empty_text_is_kept_with_no_words(tmp_path):
    path = write_jsonl(
        tmp_path / "a.jsonl", [{"text": "", "label": []}, {"text": "Paris", "label": [[0, 5, "LOC"]]}]
    )
    data = read_spans(path, "doccano")
    assert [s.words for s in data.sentences] == [[], ["Paris"]]


def test_character_scores_equal_seqeval_on_aligned_data():
    sentences = read_conll(ROOT / "data" / "ner" / "dev.conll").sentences
    gold_tags = [s.tags for s in sentences]
    # a prediction with errors of every kind: a shifted start, a wrong type, a missed and an extra entity
    predicted_tags = [list(tags) for tags in gold_tags]
    predicted_tags[0][:2] = ["O", "B-ORG"]
    predicted_tags[1] = ["O"] * len(predicted_tags[1])
    predicted_tags[2][-2] = "B-MISC"
    predicted_tags[3] = [tag.replace("PER", "LOC") for tag in predicted_tags[3]]
    offsets = []
    for sentence in sentences:
        text, _ = conll_as_text(sentence)
        position, words = 0, []
        for word in sentence.words:
            words.append((position, position + len(word)))
            position += len(word) + 1
        offsets.append(words)
    gold = [tags_to_char_spans(t, o) for t, o in zip(gold_tags, offsets, strict=True)]
    predicted = [tags_to_char_spans(t, o) for t, o in zip(predicted_tags, offsets, strict=True)]
    expected = ner_scores(gold_tags, predicted_tags)
    expected.pop("token_accuracy")
    scores = char_span_scores(gold, predicted)
    assert 0.5 < scores["f1"] < 1.0
    assert scores == pytest.approx(expected)


@pytest.mark.parametrize("data_format", ["doccano", "labelstudio", "spans-jsonl"])
def test_round_trip_through_the_written_predictions(tmp_path, data_format):
    """Read a sample, write its gold spans as the predictions, read that back: the same spans."""
    sample = {
        "doccano": "dev.doccano.jsonl",
        "labelstudio": "dev.labelstudio.json",
        "spans-jsonl": "dev.spans.jsonl",
    }[data_format]
    data = read_spans(ROOT / "data" / "ner" / sample, data_format)
    written = write_span_file(tmp_path / "out", data_format, data.records, data.gold_spans)
    source = "predictions" if data_format == "labelstudio" else "annotations"
    again = read_spans(written, data_format, source=source)
    assert again.gold_spans == data.gold_spans and sum(map(len, data.gold_spans)) > 20
    assert [r.text for r in again.records] == [r.text for r in data.records]
    if data_format == "labelstudio":  # importable: a list of tasks with a prediction each
        tasks = json.loads(written.read_text())
        assert all(set(t) == {"data", "predictions"} for t in tasks)
        assert tasks[0]["predictions"][0]["result"][0]["value"]["text"] == "Pinecrest University"


def test_the_samples_are_the_conll_sample():
    """The shipped doccano sample holds the CoNLL sample's sentences and entities."""
    sentences = read_conll(ROOT / "data" / "ner" / "train.conll").sentences
    records = read_records(ROOT / "data" / "ner" / "train.doccano.jsonl", "doccano", labelled=True)
    assert [(r.text, r.spans) for r in records] == [conll_as_text(s) for s in sentences]
    assert isinstance(records[0], SpanRecord)


def test_labelstudio_span_past_the_end_names_the_task(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(
        json.dumps([labelstudio_task("Bob", [(0, 3, "PER")]), labelstudio_task("Ann", [(0, 9, "PER")], id=4)])
    )
    with pytest.raises(
        DataError, match=r"export.json: task 2 \(id 4\): span \[0, 9\) 'PER' goes past the end"
    ):
        read_spans(path, "labelstudio")
