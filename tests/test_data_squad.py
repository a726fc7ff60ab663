"""Reading SQuAD JSON and JSONL question files: shapes, v2.0 detection, answer_start checks, bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tasks.data.squad import SquadAnswer, read_squad, repair_whitespace_shift
from tasks.io import DataError

from .conftest import shared_path


def squad_json(
    tmp_path: Path, qas: list[dict], context: str = "Ada Lovelace wrote a program in 1843.", **extra
) -> Path:
    path = tmp_path / "data.json"
    document = {
        "version": "1.1",
        "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}],
        **extra,
    }
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def jsonl(tmp_path: Path, rows: list[dict | str]) -> Path:
    path = tmp_path / "data.jsonl"
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_squad_v1_json(tmp_path):
    path = squad_json(
        tmp_path,
        [
            {
                "id": "q1",
                "question": "Who?",
                "answers": [
                    {"text": "Ada Lovelace", "answer_start": 0},
                    {"text": "Lovelace", "answer_start": 4},
                ],
            },
            {"id": "q2", "question": "When?", "answers": [{"text": "1843", "answer_start": 32}]},
        ],
    )
    data = read_squad(path)
    assert not data.version_2_with_negative and data.has_answers and data.repaired == []
    assert [e.id for e in data.examples] == ["q1", "q2"]
    assert data.examples[0].answers == (SquadAnswer("Ada Lovelace", 0), SquadAnswer("Lovelace", 4))
    assert data.examples[0].title == "T"
    assert data.gold_answers() == {"q1": ["Ada Lovelace", "Lovelace"], "q2": ["1843"]}


def test_squad_v2_detection(tmp_path):
    qas = [
        {
            "id": "q1",
            "question": "Who?",
            "answers": [],
            "is_impossible": True,
            "plausible_answers": [{"text": "Ada", "answer_start": 0}],
        }
    ]
    data = read_squad(squad_json(tmp_path, qas, version="v2.0"))
    assert data.version_2_with_negative and data.examples[0].is_impossible
    # the version string alone is enough
    answerable = [{"id": "q1", "question": "Who?", "answers": [{"text": "Ada", "answer_start": 0}]}]
    assert read_squad(squad_json(tmp_path, answerable, version="v2.0")).version_2_with_negative


def test_jsonl_both_answer_layouts_and_default_ids(tmp_path):
    context = "Tiran casts bells from glass."
    path = jsonl(
        tmp_path,
        [
            {
                "id": "a",
                "question": "What from?",
                "context": context,
                "answers": [{"text": "glass", "answer_start": 23}],
            },
            "",
            {
                "question": "What from?",
                "context": context,
                "answers": {"text": ["glass"], "answer_start": [23]},
            },
            {"question": "Who?", "context": context},
        ],
    )
    data = read_squad(path)
    assert [e.id for e in data.examples] == ["a", "3", "4"]  # a line without id: its line number
    assert data.examples[1].answers == (SquadAnswer("glass", 23),)
    assert data.examples[2].answers is None and not data.has_answers
    assert not data.version_2_with_negative
    assert read_squad(
        jsonl(tmp_path, [{"id": "n", "question": "Q?", "context": context, "answers": []}])
    ).version_2_with_negative


def test_shared_files_read_without_repairs():
    xquad = read_squad(shared_path("data", "qa", "xquad.en.json"))
    assert len(xquad.examples) == 1190 and not xquad.version_2_with_negative and xquad.repaired == []
    v2 = read_squad(shared_path("data", "qa", "squad-v2.0-dev-sample.json"))
    assert len(v2.examples) == 626 and v2.version_2_with_negative
    assert sum(e.is_impossible for e in v2.examples) == 333


def test_answer_start_mismatch_names_the_question(tmp_path):
    path = squad_json(
        tmp_path, [{"id": "q7", "question": "When?", "answers": [{"text": "1843", "answer_start": 30}]}]
    )
    with pytest.raises(DataError) as error:
        read_squad(path)
    assert (
        str(error.value) == f"{path} (example q7): answer_start 30 points at 'n 18', not at the answer '1843'"
    )
    # the scorer reads the same file without the check
    assert read_squad(path, check_answer_starts=False).gold_answers() == {"q7": ["1843"]}


def test_whitespace_shift_repairs(tmp_path, caplog):
    # answer_start on the space before the answer
    assert repair_whitespace_shift("Ada  wrote", "wrote", 3) == SquadAnswer("wrote", 5)
    # answer text with a trailing space that the context does not have there
    assert repair_whitespace_shift("in 1843.", "1843 ", 3) == SquadAnswer("1843", 3)
    # offsets counted on the context with its whitespace runs collapsed (and no leading newline)
    context = "\n The  engine ran   on steam in the engine house."
    collapsed = " ".join(context.split())
    start = collapsed.index("steam")
    assert repair_whitespace_shift(context, "steam", start) == SquadAnswer("steam", context.index("steam"))
    # ambiguous: one occurrence is reached through whitespace, the other by collapsing
    assert repair_whitespace_shift("          engine engine", "engine", 7) is None
    # not a whitespace shift at all
    assert repair_whitespace_shift("Ada wrote in 1843.", "1843", 4) is None

    path = squad_json(
        tmp_path, [{"id": "q1", "question": "When?", "answers": [{"text": "1843", "answer_start": 31}]}]
    )
    with caplog.at_level(logging.WARNING):
        data = read_squad(path)
    assert data.examples[0].answers == (SquadAnswer("1843", 32),) and data.repaired == ["q1"]
    assert "question q1: answer '1843' moved from answer_start 31 to 32 (whitespace shift)" in caplog.text


@pytest.mark.parametrize(
    ("qa", "context", "message"),
    [
        (
            {"question": "Who?", "answers": []},
            "Ada.",
            "(example data[0].paragraphs[0].qas[0]): missing or empty 'id'",
        ),
        ({"id": "q1", "answers": []}, "Ada.", "(example q1): missing or empty 'question'"),
        ({"id": "q1", "question": "Who?", "answers": []}, "  \n", "(example q1): empty context"),
        (
            {"id": "q1", "question": "Who?", "answers": [{"text": "Ada"}]},
            "Ada.",
            "(example q1): answer 'Ada' has no valid 'answer_start'",
        ),
        (
            {"id": "q1", "question": "Who?", "answers": [{"answer_start": 0}]},
            "Ada.",
            "(example q1): an answer has a missing or empty 'text'",
        ),
        (
            {"id": "q1", "question": "Who?", "answers": "Ada"},
            "Ada.",
            "(example q1): 'answers' must be a list",
        ),
        (
            {
                "id": "q1",
                "question": "Who?",
                "answers": [{"text": "Ada", "answer_start": 0}],
                "is_impossible": True,
            },
            "Ada.",
            "(example q1): is_impossible is true but answers are given",
        ),
        (
            {"id": "q1", "question": "Who?", "answers": [], "is_impossible": False},
            "Ada.",
            "is_impossible is false but there are no answers",
        ),
    ],
)
def test_bad_questions(tmp_path, qa, context, message):
    path = squad_json(tmp_path, [qa], context=context)
    with pytest.raises(DataError, match=None) as error:
        read_squad(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_bad_files(tmp_path):
    path = tmp_path / "x.json"
    for text, message in [
        ("", "empty file: no questions"),
        ('{"data": [', ":1: not valid JSON"),
        ('{"version": "1.1"}', "expected a JSON object with a 'data' list"),
        (
            '{"data": [{"paragraphs": [{"qas": []}]}]}',
            "(example data[0].paragraphs[0]): paragraph without a 'context' string",
        ),
        ('{"data": []}', "no questions in the file"),
    ]:
        path.write_text(text, encoding="utf-8")
        with pytest.raises(DataError) as error:
            read_squad(path)
        assert message in str(error.value), (text, str(error.value))
    path.write_bytes(b'{"data": []}\n\xff\n')
    with pytest.raises(DataError, match=r"x.json:2: not valid UTF-8"):
        read_squad(path)


def test_bad_jsonl_lines_and_duplicates(tmp_path):
    row = {"id": "q1", "question": "Who?", "context": "Ada."}
    with pytest.raises(DataError, match=r"data.jsonl:2: missing 'context' string"):
        read_squad(jsonl(tmp_path, [row, {"id": "q2", "question": "Who?"}]))
    with pytest.raises(DataError, match=r"data.jsonl:2: not valid JSON"):
        read_squad(jsonl(tmp_path, [row, "{oops"]))
    with pytest.raises(
        DataError, match=r"data.jsonl:2 \(example q1\): duplicate question id \(first seen at line 1\)"
    ):
        read_squad(jsonl(tmp_path, [row, row]))


def test_records_in_memory_as_from_the_hub():
    from tasks.data.squad import squad_from_records

    rows = [
        {
            "id": "a",
            "title": "T",
            "question": "Who?",
            "context": "Ada wrote.",
            "answers": {"text": ["Ada"], "answer_start": [0]},
        },
        {
            "id": "b",
            "title": "T",
            "question": "Why?",
            "context": "Ada wrote.",
            "answers": {"text": [], "answer_start": []},
        },
    ]
    data = squad_from_records("squad_v2[validation]", rows)
    assert data.version_2_with_negative and data.gold_answers() == {"a": ["Ada"], "b": []}
    with pytest.raises(
        DataError, match=r"squad_v2\[validation\] \(example record 1\): missing 'context' string"
    ):
        squad_from_records("squad_v2[validation]", [{"id": "a", "question": "Who?"}])
