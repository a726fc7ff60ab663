"""GLUE TSV readers (every quirk of the real files), generic tables, plain text, and bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tasks.data.glue import GLUE_TASKS, get_task, read_glue, write_submission
from tasks.data.tables import Example, infer_label_names, read_table
from tasks.data.text import read_text
from tasks.io import DataError, UserError

ROOT = Path(__file__).resolve().parents[1]
SHARED_GLUE = ROOT.parent / "shared" / "data" / "glue"
SAMPLES = ROOT / "data" / "glue"


def real(*parts: str) -> Path:
    path = SHARED_GLUE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found (../shared holds the real GLUE files)")
    return path


def write(tmp_path: Path, text: str | bytes, name: str = "sample.tsv") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


# --- the real files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "name", "rows"),
    [
        ("cola", "CoLA/train.tsv", 8551),
        ("cola", "CoLA/dev.tsv", 1043),
        ("sst2", "SST-2/train.5k.tsv", 5000),
        ("sst2", "SST-2/dev.tsv", 872),
        ("mrpc", "MRPC/train.tsv", 3668),
        ("mrpc", "MRPC/dev.tsv", 408),
        ("stsb", "STS-B/train.tsv", 5749),
        ("stsb", "STS-B/dev.tsv", 1500),
        ("wnli", "WNLI/train.tsv", 635),
        ("wnli", "WNLI/dev.tsv", 71),
    ],
)
def test_real_files_row_counts_and_labels(task, name, rows):
    examples = read_glue(real(name), task, require_labels=True)
    assert len(examples) == rows
    spec = get_task(task)
    if spec.is_regression:
        assert all(0.0 <= e.label <= 5.0 for e in examples)
    else:
        assert {e.label for e in examples} == set(spec.label_names)
    assert all(e.text.strip() for e in examples)
    assert all((e.text_pair is not None) == spec.is_pair for e in examples)


def test_quote_aware_reading_would_merge_rows_in_mrpc_and_stsb():
    # Why the readers split on TABs only: a quote-aware reader loses rows to unbalanced quotes.
    for name, rows, task in (("MRPC/train.tsv", 3668, "mrpc"), ("STS-B/dev.tsv", 1500, "stsb")):
        with real(name).open(encoding="utf-8-sig", newline="") as handle:
            assert len(list(csv.reader(handle, delimiter="\t"))) - 1 < rows
        assert len(read_glue(real(name), task)) == rows


def test_mrpc_quotes_stay_in_the_text():
    first = read_glue(real("MRPC/train.tsv"), "mrpc")[0]
    assert first == Example(
        index="0",
        text='Amrozi accused his brother , whom he called " the witness " , of deliberately distorting his evidence .',
        text_pair='Referring to him as only " the witness " , Amrozi accused his brother of deliberately '
        "distorting his evidence .",
        label="1",
        line=2,
    )
    dev = read_glue(real("MRPC/dev.tsv"), "mrpc")
    assert dev[0].text_pair.startswith('" The foodservice pie business')  # an unbalanced quote


def test_mrpc_starts_with_a_bom_that_the_reader_drops():
    path = real("MRPC/train.tsv")
    assert path.read_bytes().startswith(b"\xef\xbb\xbfQuality\t")
    examples = read_glue(path, "mrpc")
    assert examples[0].label == "1" and not any("\ufeff" in e.text for e in examples)


def test_cola_has_no_header_and_dev_has_no_final_newline():
    train = read_glue(real("CoLA/train.tsv"), "cola")
    assert train[0] == Example(
        "0", "Our friends won't buy this analysis, let alone the next one we propose.", None, "1", 1
    )
    assert train[-1].line == 8551 and train[-1].index == "8550"
    path = real("CoLA/dev.tsv")
    assert not path.read_bytes().endswith(b"\n")
    dev = read_glue(path, "cola")
    assert dev[0].text == "The sailors rode the breeze clear of the rocks." and dev[-1].line == 1043
    # The third column (the original judgement, "*" for unacceptable) is not the label.
    assert sum(e.label == "0" for e in train) == 2528


def test_stsb_scores_are_floats_and_the_index_column_is_kept():
    examples = read_glue(real("STS-B/dev.tsv"), "stsb")
    assert examples[0] == Example(
        "0", "A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", 5.0, 2
    )
    assert examples[1].label == pytest.approx(4.75)
    assert [e.index for e in examples[:3]] == ["0", "1", "2"]


def test_sst2_keeps_the_text_as_written():
    first = read_glue(real("SST-2/dev.tsv"), "sst2")[0]
    assert first.text == "it 's a charming and often affecting journey . " and first.label == "1"


# --- the shipped samples ----------------------------------------------------------------------

# task -> (directory, as GLUE names it; files)
SAMPLE_FILES = {
    "cola": ("CoLA", ["train", "dev", "test"]),
    "sst2": ("SST-2", ["train", "dev", "test"]),
    "mrpc": ("MRPC", ["train", "dev", "test"]),
    "stsb": ("STS-B", ["train", "dev", "test"]),
    "qqp": ("QQP", ["train", "dev", "test"]),
    "mnli": ("MNLI", ["train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched"]),
    "qnli": ("QNLI", ["train", "dev", "test"]),
    "rte": ("RTE", ["train", "dev", "test"]),
    "wnli": ("WNLI", ["train", "dev", "test"]),
}


@pytest.mark.parametrize("task", sorted(SAMPLE_FILES))
def test_samples_read_in_every_split(task):
    spec = get_task(task)
    directory, splits = SAMPLE_FILES[task]
    for split in splits:
        path = SAMPLES / directory / f"{split}.tsv"
        examples = read_glue(path, task, require_labels=not split.startswith("test"))
        assert 8 <= len(examples) <= 64
        assert all((e.text_pair is not None) == spec.is_pair for e in examples)
        if split.startswith("test"):
            assert all(e.label is None for e in examples)
            assert [e.index for e in examples] == [str(i) for i in range(len(examples))]
            with pytest.raises(DataError, match="is this a test file"):
                read_glue(path, task, require_labels=True)
        elif spec.is_regression:
            assert min(e.label for e in examples) == 0.0 and max(e.label for e in examples) == 5.0
        else:  # every class occurs in every labelled sample file
            assert {e.label for e in examples} == set(spec.label_names)


def test_samples_have_the_real_layouts():
    assert (SAMPLES / "MRPC" / "train.tsv").read_bytes().startswith(b"\xef\xbb\xbfQuality\t#1 ID")
    assert (SAMPLES / "MRPC" / "test.tsv").read_bytes().startswith(b"index\t#1 ID")
    assert (SAMPLES / "CoLA" / "train.tsv").read_text(encoding="utf-8").split("\t")[0] == "ps01"
    assert (SAMPLES / "CoLA" / "test.tsv").read_text(encoding="utf-8").startswith("index\tsentence\n")
    header = (SAMPLES / "MNLI" / "dev_matched.tsv").read_text(encoding="utf-8").split("\n")[0].split("\t")
    assert len(header) == 16 and header[-1] == "gold_label"
    assert (SAMPLES / "QQP" / "test.tsv").read_text(encoding="utf-8").startswith("id\tquestion1\tquestion2\n")


# --- task table -------------------------------------------------------------------------------


def test_task_table():
    assert list(GLUE_TASKS) == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
    assert get_task("SST-2") is GLUE_TASKS["sst2"] and get_task("sts_b").is_regression
    assert get_task("mnli").label_names == ("entailment", "neutral", "contradiction")
    assert get_task("qnli").label_names == ("entailment", "not_entailment")
    assert get_task("mrpc").main_metric == "f1" and get_task("cola").main_metric == "mcc"
    assert get_task("stsb").num_labels == 1 and get_task("mnli").num_labels == 3
    names = {t: s.submission_file for t, s in GLUE_TASKS.items()}
    assert names == {
        "cola": "CoLA.tsv", "sst2": "SST-2.tsv", "mrpc": "MRPC.tsv", "stsb": "STS-B.tsv", "qqp": "QQP.tsv",
        "mnli": "MNLI-m.tsv", "qnli": "QNLI.tsv", "rte": "RTE.tsv", "wnli": "WNLI.tsv",
    }  # fmt: skip
    assert get_task("mnli").submission_name("glue/MNLI/test_mismatched.tsv") == "MNLI-mm.tsv"
    assert get_task("mnli").submission_name("glue/MNLI/test_matched.tsv") == "MNLI-m.tsv"


def test_unknown_task_is_a_user_error():
    with pytest.raises(UserError, match=r"unknown GLUE task 'sst3'; choose one of: cola, sst2"):
        read_glue(SAMPLES / "SST-2" / "dev.tsv", "sst3")


def test_write_submission(tmp_path):
    path = write_submission(tmp_path / "out" / "STS-B.tsv", "stsb", ["0", "1"], [4.25, 0.1234])
    assert path.read_text() == "index\tprediction\n0\t4.250\n1\t0.123\n"
    path = write_submission(tmp_path / "MNLI-m.tsv", "mnli", ["7"], ["neutral"])
    assert path.read_text() == "index\tprediction\n7\tneutral\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


# --- bad input --------------------------------------------------------------------------------


def test_row_with_a_missing_column(tmp_path):
    path = write(tmp_path, "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta b\tentailment\n")
    with pytest.raises(DataError) as err:
        read_glue(path, "rte")
    assert (
        str(err.value)
        == f"{path}:3: expected 4 tab-separated columns ['index', 'sentence1', 'sentence2', 'label'], found 3"
    )


def test_a_tab_inside_a_text_is_an_error(tmp_path):
    path = write(tmp_path, "sentence\tlabel\ngood\t1\nbad\tvery bad\t0\n")
    with pytest.raises(DataError, match=r":3: expected 2 tab-separated columns"):
        read_glue(path, "sst2")


def test_cola_row_with_a_missing_column(tmp_path):
    path = write(tmp_path, "ab01\t1\t\tA fine sentence.\nab01\t0\tA broken row.\n")
    with pytest.raises(DataError, match=r"sample.tsv:2: expected 4 tab-separated columns"):
        read_glue(path, "cola")


def test_label_outside_the_label_set(tmp_path):
    path = write(tmp_path, "sentence\tlabel\ngood\t1\nfine\t2\n")
    with pytest.raises(DataError) as err:
        read_glue(path, "sst2")
    assert str(err.value) == f"{path}:3: label '2' is not one of 0, 1"
    path = write(tmp_path, "index\tquestion\tsentence\tlabel\n0\tq?\ts.\tentailed\n", "qnli.tsv")
    with pytest.raises(
        DataError, match=r"qnli.tsv:2: label 'entailed' is not one of entailment, not_entailment"
    ):
        read_glue(path, "qnli")


def test_bad_regression_scores(tmp_path):
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    path = write(tmp_path, header + "0\tg\tf\ty\t0\tnone\tnone\ta\tb\t5.5\n")
    with pytest.raises(DataError, match=r":2: score 5.5 is outside 0.0..5.0"):
        read_glue(path, "stsb")
    path = write(tmp_path, header + "0\tg\tf\ty\t0\tnone\tnone\ta\tb\thigh\n")
    with pytest.raises(DataError, match=r":2: score 'high' is not a number"):
        read_glue(path, "stsb")


def test_empty_file_and_header_only_file(tmp_path):
    with pytest.raises(DataError, match=r"empty.tsv:1: empty file"):
        read_glue(write(tmp_path, "", "empty.tsv"), "sst2")
    with pytest.raises(DataError, match=r"blank.tsv:1: empty file"):
        read_glue(write(tmp_path, "\n \n", "blank.tsv"), "sst2")
    with pytest.raises(DataError, match=r"header.tsv:1: no examples \(the file holds only a header\)"):
        read_glue(write(tmp_path, "sentence\tlabel\n", "header.tsv"), "sst2")


def test_non_utf8_file(tmp_path):
    path = write(tmp_path, b"sentence\tlabel\ngood\t1\ncaf\xe9\t1\n")
    with pytest.raises(DataError, match=r"sample.tsv:3: not valid UTF-8"):
        read_glue(path, "sst2")


def test_missing_file_and_wrong_header(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_glue(tmp_path / "nope.tsv", "sst2")
    path = write(tmp_path, "text\tlabel\ngood\t1\n")
    with pytest.raises(DataError, match=r":1: no text column 'sentence' in the header \['text', 'label'\]"):
        read_glue(path, "sst2")


# --- generic tables ---------------------------------------------------------------------------


def test_csv_with_quoted_fields_and_line_numbers(tmp_path):
    path = write(
        tmp_path, 'id,review,stars\nr1,"good, really",pos\nr2,"two\nlines",neg\n\nr3,plain,pos\n', "x.csv"
    )
    examples = read_table(path, "review", label_column="stars", index_column="id", label_names=["neg", "pos"])
    assert examples == [
        Example("r1", "good, really", None, "pos", 2),
        Example("r2", "two\nlines", None, "neg", 3),
        Example("r3", "plain", None, "pos", 6),
    ]
    with pytest.raises(DataError, match=r"x.csv:3: label 'neg' is not one of pos"):
        read_table(path, "review", label_column="stars", label_names=["pos"])


def test_tsv_by_position_without_header_and_pairs(tmp_path):
    path = write(tmp_path, 'a "quote\tb\t1\nc\td\t0\n', "pairs.tsv")
    examples = read_table(path, 0, text_pair_column=1, label_column=2, header=False)
    assert examples == [Example("0", 'a "quote', "b", "1", 1), Example("1", "c", "d", "0", 2)]
    with pytest.raises(UserError, match="given by name but header=False"):
        read_table(path, "text", header=False)
    with pytest.raises(DataError, match=r"pairs.tsv:1: expected at least 4 columns, found 3"):
        read_table(path, 0, label_column=3, header=False)


def test_table_without_the_label_column_is_unlabelled_unless_required(tmp_path):
    path = write(tmp_path, "text\nhello\n", "t.tsv")
    assert read_table(path, "text", label_column="label") == [Example("0", "hello", None, None, 2)]
    with pytest.raises(DataError, match=r"t.tsv:1: no label column 'label'"):
        read_table(path, "text", label_column="label", require_labels=True)


def test_jsonl(tmp_path):
    path = write(
        tmp_path,
        '{"q": "a?", "p": "b.", "y": 1, "id": 7}\n\n{"q": "c?", "p": "d.", "y": 0, "id": 8}\n',
        "x.jsonl",
    )
    examples = read_table(path, "q", text_pair_column="p", label_column="y", index_column="id")
    assert examples == [Example("7", "a?", "b.", "1", 1), Example("8", "c?", "d.", "0", 3)]
    scores = read_table(path, "q", label_column="y", regression=True)
    assert [e.label for e in scores] == [1.0, 0.0]
    broken = write(tmp_path, '{"q": "a?", "y": 1}\n{"y": 0}\n{"q": 3, "y": 1}\n', "b.jsonl")
    with pytest.raises(DataError, match=r"b.jsonl:2: missing field 'q'"):
        read_table(broken, "q", label_column="y")
    with pytest.raises(DataError, match=r"c.jsonl:2: not valid JSON"):
        read_table(write(tmp_path, '{"q": "a"}\n{"q": \n', "c.jsonl"), "q")
    with pytest.raises(UserError, match="field names, not positions"):
        read_table(path, 0)


def test_unknown_format(tmp_path):
    with pytest.raises(UserError, match="cannot tell the format"):
        read_table(write(tmp_path, "x\n", "data.txt"), "text")
    with pytest.raises(UserError, match="unknown file format 'xml'"):
        read_table(write(tmp_path, "x\n", "data.txt"), "text", file_format="xml")


def test_infer_label_names():
    def ex(label):
        return Example("0", "t", label=label)

    assert infer_label_names([ex("10"), ex("2"), ex("1"), ex(None)]) == ["1", "2", "10"]
    assert infer_label_names([ex("pos"), ex("neg"), ex("pos")]) == ["neg", "pos"]


# --- plain text for predict -------------------------------------------------------------------


def test_plain_text_single_and_pairs(tmp_path):
    single = read_text(write(tmp_path, 'first text\n\nsecond "text\n', "single.txt"))
    assert single == [Example("0", "first text", None, None, 1), Example("1", 'second "text', None, None, 3)]
    pairs = read_text(write(tmp_path, "a\tb\nc\td\n", "pairs.txt"))
    assert [(e.text, e.text_pair) for e in pairs] == [("a", "b"), ("c", "d")]
    with pytest.raises(DataError, match=r"mixed.txt:2: expected a sentence pair"):
        read_text(write(tmp_path, "a\tb\nno pair\n", "mixed.txt"))
    with pytest.raises(DataError, match=r"tab.txt:1: expected one text per line, found a TAB"):
        read_text(write(tmp_path, "a\tb\n", "tab.txt"), pairs=False)
    with pytest.raises(DataError, match=r"empty.txt:1: empty file"):
        read_text(write(tmp_path, "\n\n", "empty.txt"))
