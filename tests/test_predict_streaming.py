"""``predict`` streams: outputs in input order with a record per input line, a file that is complete
or absent, CoNLL input recognised by its content, and peak memory that does not grow with the input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import tasks.cli  # noqa: F401  (Lightning's log handler binds to the stderr of its import)
from tests.conftest import run_cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
FAST = [
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.accelerator",
    "cpu",
    "--trainer.devices",
    "1",
]
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
    records = read_jsonl(run_dir / "predictions.jsonl")
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
    submission = (run_dir / "SST-2.tsv").read_text(encoding="utf-8").splitlines()
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
    a, b = read_jsonl(first / "predictions.jsonl"), read_jsonl(second / "predictions.jsonl")
    assert [r["label"] for r in a] == [r["label"] for r in b]
    assert [r["text"] for r in a] == sentences(30)


# --- complete or absent --------------------------------------------------------------------------


def test_a_cut_short_run_writes_nothing_and_keeps_the_older_file(sst2_ckpt: Path, tmp_path: Path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(sentences(100)) + "\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    assert (
        run_cli(*predict_args(sst2_ckpt, texts, tmp_path / "fresh", "--trainer.limit_predict_batches", "1"))
        == 2
    )
    assert not (tmp_path / "fresh" / "predictions.jsonl").exists()
    assert not (tmp_path / "fresh" / "SST-2.tsv").exists()
    run_dir.mkdir()
    older = run_dir / "predictions.jsonl"
    older.write_text('{"older": true}\n', encoding="utf-8")
    assert run_cli(*predict_args(sst2_ckpt, texts, run_dir, "--trainer.limit_predict_batches", "1")) == 2
    assert older.read_text(encoding="utf-8") == '{"older": true}\n'
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []  # no temp files left


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
    assert not (run_dir / "predictions.jsonl").exists()
    written = (run_dir / "predictions.conll").read_text(encoding="utf-8").splitlines()
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
    records = read_jsonl(run_dir / "predictions.jsonl")
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
        assert len((run_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()) == count
    grown_mb = (peaks[large] - peaks[small]) / 1024
    assert grown_mb < 60, f"peak RSS {peaks} kB: 20x the input added {grown_mb:.0f} MB"
