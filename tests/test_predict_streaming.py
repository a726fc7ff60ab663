"""``predict`` streams: outputs in input order with a record per input line, a file that is complete
or absent, CoNLL input recognised by its content, and peak memory that does not grow with the input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import tasks.cli  # noqa: F401  (Lightning's log handler binds to the stderr of its import)
from tests.conftest import FAST_TRAINER_ARGS as FAST
from tests.conftest import run_cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
WORDS = "a warm funny moving dull lifeless mess film story great terrible plot acting".split()


def sentences(count: int) -> list[str]:
    """Varied generated sentences (different lengths and words), no two alike in a row."""
    return [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(3 + i % 9)) for i in range(count)]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def sst2_ckpt(mixing_bert_dir: Path, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("sst2") / "run"
    code = run_cli(
        "fit",
        "--config",
        ROOT / "configs" / "sst2.yaml",
        "--model.pretrained",
        mixing_bert_dir,
        "--trainer.default_root_dir",
        run_dir,
        "--trainer.max_steps",
        "1",
        *FAST,
    )
    assert code == 0
    return run_dir / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def ner_ckpt(tiny_bert_dir: Path, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("ner") / "run"
    code = run_cli(
        "fit",
        "--config",
        ROOT / "configs" / "ner.yaml",
        "--model.pretrained",
        tiny_bert_dir,
        "--trainer.default_root_dir",
        run_dir,
        "--trainer.max_steps",
        "1",
        *FAST,
    )
    assert code == 0
    return run_dir / "checkpoints" / "best.ckpt"


def predicted(run_dir: Path, predict_file: Path) -> Path:
    """The folder where predict of ``predict_file`` writes by default: ``<run>/predict/<input stem>/``."""
    return run_dir / "predict" / predict_file.stem


def predict_args(ckpt: Path, predict_file: Path, run_dir: Path, *extra: str) -> list:
    return [
        "predict",
        "--config",
        ROOT / "configs" / ("ner.yaml" if "ner" in str(ckpt.parent.parent.parent) else "sst2.yaml"),
        "--ckpt_path",
        ckpt,
        "--data.predict_file",
        predict_file,
        "--trainer.default_root_dir",
        run_dir,
        "--return_predictions",
        "false",
        *FAST,
        *extra,
    ]


# --- order and line numbers ----------------------------------------------------------------------


def test_every_input_line_gets_its_record_in_order_blank_lines_included(sst2_ckpt: Path, tmp_path: Path):
    lines = ["a warm, funny and moving film", "", "a dull, lifeless mess", "   ", "great", ""]
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(lines + sentences(40)) + "\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    assert run_cli(*predict_args(sst2_ckpt, texts, run_dir, "--data.eval_batch_size", "4")) == 0
    records = read_jsonl(predicted(run_dir, texts) / "predictions.jsonl")
    expected = lines + sentences(40)
    assert [r["line"] for r in records] == list(range(1, len(expected) + 1))
    assert [r["text"] for r in records] == [line if line.strip() else "" for line in expected]
    for record, line in zip(records, expected, strict=True):
        if line.strip():
            assert record["label"] in ("negative", "positive")
            assert set(record["probabilities"]) == {"negative", "positive"}
        else:
            assert record == {"line": record["line"], "text": ""}
    # The GLUE submission file leaves the blank lines out; its indices count the texts.
    submission = (predicted(run_dir, texts) / "SST-2.tsv").read_text(encoding="utf-8").splitlines()
    texts_only = [r for r in records if "label" in r]
    assert submission[0] == "index\tprediction"
    assert [row.split("\t")[0] for row in submission[1:]] == [str(i) for i in range(len(texts_only))]
    assert [r["index"] for r in texts_only] == [str(i) for i in range(len(texts_only))]
    values = {"negative": "0", "positive": "1"}
    assert [row.split("\t")[1] for row in submission[1:]] == [values[r["label"]] for r in texts_only]


def test_streamed_predictions_equal_a_second_run_from_the_cache(sst2_ckpt: Path, tmp_path: Path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(sentences(30)) + "\n", encoding="utf-8")
    first, second = tmp_path / "first", tmp_path / "second"
    assert run_cli(*predict_args(sst2_ckpt, texts, first)) == 0
    assert run_cli(*predict_args(sst2_ckpt, texts, second, "--data.eval_batch_size", "7")) == 0
    a, b = (read_jsonl(predicted(d, texts) / "predictions.jsonl") for d in (first, second))
    assert [r["label"] for r in a] == [r["label"] for r in b]
    assert [r["text"] for r in a] == sentences(30)


# --- complete or absent --------------------------------------------------------------------------


ONE_SMALL_BATCH = ["--trainer.limit_predict_batches", "1", "--data.eval_batch_size", "16"]


def test_a_cut_short_run_writes_nothing_and_keeps_the_older_file(sst2_ckpt: Path, tmp_path: Path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(sentences(100)) + "\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    assert run_cli(*predict_args(sst2_ckpt, texts, tmp_path / "fresh", *ONE_SMALL_BATCH)) == 2
    assert not (predicted(tmp_path / "fresh", texts) / "predictions.jsonl").exists()
    assert not (predicted(tmp_path / "fresh", texts) / "SST-2.tsv").exists()
    folder = predicted(run_dir, texts)
    folder.mkdir(parents=True)
    older = folder / "predictions.jsonl"
    older.write_text('{"older": true}\n', encoding="utf-8")
    assert run_cli(*predict_args(sst2_ckpt, texts, run_dir, *ONE_SMALL_BATCH)) == 2
    assert older.read_text(encoding="utf-8") == '{"older": true}\n'
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # no temp files left


# --- input format from the content ---------------------------------------------------------------

CONLL_2003 = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


def test_conll_2003_layout_in_a_txt_file_is_read_as_conll(ner_ckpt: Path, tmp_path: Path):
    test_txt = tmp_path / "test.txt"
    test_txt.write_text(CONLL_2003, encoding="utf-8")
    run_dir = tmp_path / "run"
    assert run_cli(*predict_args(ner_ckpt, test_txt, run_dir)) == 0
    assert not (predicted(run_dir, test_txt) / "predictions.jsonl").exists()
    written = (predicted(run_dir, test_txt) / "predictions.conll").read_text(encoding="utf-8").splitlines()
    source = CONLL_2003.splitlines()
    assert len(written) == len(source)
    for out, line in zip(written, source, strict=True):
        if not line.strip():
            assert out == ""
            continue
        columns = out.split(" ")
        assert columns[:-1] == line.split(" ")  # the input columns, then the predicted tag
        assert columns[-1] == "O" or columns[-1][:2] in ("B-", "I-")
    assert written[0].startswith("-DOCSTART-")


def test_raw_sentences_in_a_txt_file_stay_text(ner_ckpt: Path, tmp_path: Path):
    texts = tmp_path / "test.txt"
    texts.write_text("EU rejects German call\n\nPeter Blackburn\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    assert run_cli(*predict_args(ner_ckpt, texts, run_dir)) == 0
    records = read_jsonl(predicted(run_dir, texts) / "predictions.jsonl")
    assert [r["text"] for r in records] == ["EU rejects German call", "", "Peter Blackburn"]
    assert records[1] == {"text": "", "entities": []}


# --- memory --------------------------------------------------------------------------------------

PEAK_RSS = """
import resource, subprocess, sys
code = subprocess.run([sys.executable, "-m", "tasks", *sys.argv[1:]]).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss_kb(args: list) -> int:
    """Peak RSS of one ``python -m tasks`` run, measured by a fresh wrapper process."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *map(str, args)], capture_output=True, text=True, cwd=ROOT
    )
    code, peak = done.stdout.split()[-2:]
    assert code == "0", done.stderr[-3000:]
    return int(peak)


@pytest.mark.parametrize("task", ["sst2", "ner"])
def test_peak_memory_does_not_grow_with_the_input(task: str, sst2_ckpt: Path, ner_ckpt: Path, tmp_path: Path):
    checkpoint = {"sst2": sst2_ckpt, "ner": ner_ckpt}[task]
    small, large = (2_000, 40_000) if task == "sst2" else (1_000, 20_000)
    peaks = {}
    for count in (small, large):
        texts = tmp_path / f"texts{count}.txt"
        texts.write_text("\n".join(sentences(count)) + "\n", encoding="utf-8")
        run_dir = tmp_path / f"run{count}"
        args = predict_args(checkpoint, texts, run_dir, "--data.eval_batch_size", "512")[:]
        peaks[count] = peak_rss_kb(args)
        assert (
            len((predicted(run_dir, texts) / "predictions.jsonl").read_text(encoding="utf-8").splitlines())
            == count
        )
    grown_mb = (peaks[large] - peaks[small]) / 1024
    assert grown_mb < 60, f"peak RSS {peaks} kB: 20x the input added {grown_mb:.0f} MB"


# --- SQuAD JSONL questions ------------------------------------------------------------------------

QA_WINDOWS = ["--data.max_seq_length", "64", "--data.max_query_length", "24", "--data.doc_stride", "24"]


@pytest.fixture(scope="module")
def squad_ckpt(tiny_bert_dir: Path, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("squad") / "run"
    args = ["fit", "--config", ROOT / "configs" / "squad_v2.yaml", "--model.pretrained", tiny_bert_dir]
    assert (
        run_cli(*args, *QA_WINDOWS, "--trainer.default_root_dir", run_dir, "--trainer.max_steps", "1", *FAST)
        == 0
    )
    return run_dir / "checkpoints" / "best.ckpt"


def squad_predict(ckpt: Path, questions: Path, out: Path) -> list[dict]:
    args = ["predict", "--config", ROOT / "configs" / "squad_v2.yaml", "--ckpt_path", ckpt, *QA_WINDOWS]
    args += [
        "--data.predict_file",
        questions,
        "--data.predictions_file",
        out,
        "--trainer.default_root_dir",
        out.parent,
    ]
    assert run_cli(*args, *FAST) == 0
    return read_jsonl(out)


def test_streamed_jsonl_questions_answer_as_the_same_questions_in_squad_json(
    squad_ckpt: Path, tmp_path: Path
):
    """The streamed JSONL path (questions read one by one, windows read back from the cache) and
    the whole-file SQuAD JSON path give the same answers."""
    records = [
        json.loads(line) for line in (ROOT / "data" / "squad" / "predict.jsonl").read_text().splitlines()
    ]
    jsonl = tmp_path / "questions.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")  # a trailing blank
    paragraphs = [
        {"context": r["context"], "qas": [{"id": r["id"], "question": r["question"]}]} for r in records
    ]
    document = tmp_path / "questions.json"
    document.write_text(json.dumps({"version": "v2.0", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    streamed = squad_predict(squad_ckpt, jsonl, tmp_path / "a" / "out.jsonl")
    whole = squad_predict(squad_ckpt, document, tmp_path / "b" / "out.jsonl")
    assert [r["id"] for r in streamed] == [r["id"] for r in records]
    for a, b in zip(streamed, whole, strict=True):
        assert (a["id"], a["answer"], a["start"], a["end"]) == (b["id"], b["answer"], b["start"], b["end"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_peak_memory_does_not_grow_with_the_number_of_questions(squad_ckpt: Path, tmp_path: Path):
    peaks = {}
    for count in (500, 5_000):
        questions = tmp_path / f"q{count}.jsonl"
        texts = sentences(count)
        lines = [
            json.dumps({"id": f"q{i}", "question": "what is it?", "context": text})
            for i, text in enumerate(texts)
        ]
        questions.write_text("\n".join(lines) + "\n", encoding="utf-8")
        out = tmp_path / f"run{count}" / "out.jsonl"
        args = [
            "predict",
            "--config",
            ROOT / "configs" / "squad_v2.yaml",
            "--ckpt_path",
            squad_ckpt,
            *QA_WINDOWS,
        ]
        args += [
            "--data.predict_file",
            questions,
            "--data.predictions_file",
            out,
            "--data.eval_batch_size",
            "512",
        ]
        peaks[count] = peak_rss_kb([*args, "--trainer.default_root_dir", out.parent, *FAST])
        assert len(out.read_text(encoding="utf-8").splitlines()) == count
    grown_mb = (peaks[5_000] - peaks[500]) / 1024
    assert grown_mb < 60, f"peak RSS {peaks} kB: 10x the questions added {grown_mb:.0f} MB"


def test_a_generic_table_streams_in_its_order(tiny_bert_dir: Path, tmp_path: Path):
    """A CSV of texts (not GLUE) to predict goes through the same streamed path."""
    train = tmp_path / "train.csv"
    train.write_text(
        "text,label\n" + "".join(f"{t},{'pos' if i % 2 else 'neg'}\n" for i, t in enumerate(sentences(16)))
    )
    data = ["--data.task", "classification", "--data.train_file", train, "--data.validation_file", train]
    config = [
        "--config",
        ROOT / "configs" / "sst2.yaml",
        "--data.text_column",
        "text",
        "--data.label_column",
        "label",
    ]
    run_dir = tmp_path / "fit"
    fit = ["fit", *config, *data, "--model.pretrained", tiny_bert_dir, "--trainer.max_steps", "1"]
    assert (
        run_cli(
            *fit,
            "--data.test_file",
            "null",
            "--data.predict_file",
            "null",
            "--trainer.default_root_dir",
            run_dir,
            *FAST,
        )
        == 0
    )
    texts = sentences(40)
    table = tmp_path / "to_predict.csv"
    table.write_text("id,text\n" + "".join(f"x{i},{t}\n" for i, t in enumerate(texts)))
    out = tmp_path / "out" / "predictions.jsonl"
    predict = ["predict", *config, "--data.task", "classification", "--data.index_column", "id"]
    predict += ["--ckpt_path", run_dir / "checkpoints" / "best.ckpt", "--data.predict_file", table]
    assert (
        run_cli(*predict, "--data.predictions_file", out, "--trainer.default_root_dir", out.parent, *FAST)
        == 0
    )
    records = read_jsonl(out)
    assert [(r["index"], r["text"], r["line"]) for r in records] == [
        (f"x{i}", t, i + 2) for i, t in enumerate(texts)
    ]
    assert all(r["label"] in ("neg", "pos") for r in records)
