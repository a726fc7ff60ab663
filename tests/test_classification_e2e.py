"""GLUE classification end to end through the command line, on the tiny random BERT.

Per family (single sentences, sentence pairs, regression, MNLI's matched + mismatched dev sets):
``fit`` a few steps, then ``validate`` / ``test`` / ``predict``; the outputs' layout; a checkpoint
alone predicting from elsewhere; the logged metrics recomputed by hand from the predictions; and
bad input giving exit code 2, one ``file:line: problem`` message and no half-written output.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import tasks.cli  # noqa: F401  (see below)
from tests.conftest import FAST_TRAINER_ARGS as FAST
from tests.conftest import run_cli

# tasks.cli is imported at collection on purpose: Lightning's log handler binds to the sys.stderr of
# the moment it is imported, and if that were a test's capfd stream, closed after the test, every
# later log line would print a "--- Logging error --- Traceback" into the stderr checked below.

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT / "data" / "glue"
# One short epoch: 3 training batches, then a full validation over the (small) dev sample.
SHORT_FIT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3"]
CLASSIFIER = [
    "--model.class_path",
    "tasks.classification.SequenceClassifier",
    "--data.class_path",
    "tasks.classification.ClassificationDataModule",
]


# --- helpers ---------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def read_metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


def predicted_in(run_dir: Path, predict_file: Path | str, name: str = "predictions.jsonl") -> Path:
    """Where ``predict`` of ``predict_file`` writes by default: the run's ``predict/<input stem>/``."""
    return run_dir / "predict" / Path(predict_file).stem / name


def tsv_column(path: Path, column: str | int, header: bool = True) -> list[str]:
    """One column of a TSV file, split by hand on TABs (independent of the readers under test)."""
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    if not header:
        return [line.split("\t")[column] for line in lines if line.strip()]
    names = lines[0].split("\t")
    return [line.split("\t")[names.index(column)] for line in lines[1:] if line.strip()]


def fit(config: str, pretrained: Path, run_dir: Path, *extra: str) -> None:
    code = run_cli(
        "fit",
        "--config",
        ROOT / "configs" / config,
        "--model.pretrained",
        pretrained,
        "--trainer.default_root_dir",
        run_dir,
        *SHORT_FIT,
        *FAST,
        *extra,
    )
    assert code == 0


def predict(ckpt: Path, task: str, predict_file: Path, run_dir: Path, *extra: str) -> int:
    """A predict run from the checkpoint alone: no config, no train file, no encoder directory."""
    return run_cli(
        "predict",
        *CLASSIFIER,
        "--data.task",
        task,
        "--data.predict_file",
        predict_file,
        "--ckpt_path",
        ckpt,
        "--trainer.default_root_dir",
        run_dir,
        *FAST,
        *extra,
    )


SST2_VALUES = {"negative": "0", "positive": "1"}  # GLUE's label values behind the names


def counts(predicted: list[str], gold: list[str], positive: str = "1") -> tuple[int, int, int, int]:
    tp = sum(p == positive and g == positive for p, g in zip(predicted, gold))
    tn = sum(p != positive and g != positive for p, g in zip(predicted, gold))
    fp = sum(p == positive and g != positive for p, g in zip(predicted, gold))
    fn = sum(p != positive and g == positive for p, g in zip(predicted, gold))
    return tp, tn, fp, fn


def f1_by_hand(predicted: list[str], gold: list[str]) -> float:
    tp, _, fp, fn = counts(predicted, gold)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def mcc_by_hand(predicted: list[str], gold: list[str]) -> float:
    tp, tn, fp, fn = counts(predicted, gold)
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denominator if denominator else 0.0  # sklearn's (GLUE's) convention


def pearson_by_hand(x: list[float], y: list[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


def average_ranks(values: list[float]) -> list[float]:
    ranks = [0.0] * len(values)
    order = sorted(range(len(values)), key=values.__getitem__)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1  # ties share their average rank
        start = end + 1
    return ranks


# --- single sentences: SST-2 ------------------------------------------------------------------


@pytest.fixture(scope="module")
def sst2_run(mixing_bert_dir: Path, tmp_path_factory) -> Path:
    """A short SST-2 fit (2 epochs of 2 batches, so best and last can differ) from a copy of the
    tiny encoder, which is deleted afterwards: everything later must come from the checkpoint alone."""
    base = tmp_path_factory.mktemp("sst2")
    encoder = base / "encoder"
    shutil.copytree(mixing_bert_dir, encoder)
    run_dir = base / "run"
    fit(
        "sst2.yaml",
        encoder,
        run_dir,
        "--data.train_file",
        GLUE / "SST-2" / "train.tsv",
        "--data.validation_file",
        GLUE / "SST-2" / "dev.tsv",
        "--data.test_file",
        GLUE / "SST-2" / "dev.tsv",
        "--data.predict_file",
        GLUE / "SST-2" / "test.tsv",
        "--trainer.max_epochs",
        "2",
        "--trainer.limit_train_batches",
        "2",
    )
    shutil.rmtree(encoder)
    return run_dir


def epoch_metrics(run_dir: Path, name: str) -> list[float]:
    """A metric's value at each validation of the fit, from its CSV log (later validate/test runs in
    the same directory log under logs/csv/validate, logs/csv/test)."""
    with open(run_dir / "logs" / "csv" / "fit" / "metrics.csv", newline="") as handle:
        return [float(row[name]) for row in csv.DictReader(handle) if row.get(name)]


def test_sst2_fit_writes_checkpoints_config_and_dev_metrics(sst2_run: Path):
    assert (sst2_run / "checkpoints" / "best.ckpt").is_file()
    assert (sst2_run / "config.yaml").is_file()
    # last.ckpt holds the final weights even when the last epoch did not improve on the best.
    last = torch.load(sst2_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (1, 4)
    metrics = read_metrics(sst2_run)
    assert set(metrics) == {
        "val/accuracy",
        "val/loss",
        "val/evaluated_examples",
        "val/total_examples",
        "best_checkpoint",
        "input_lengths",
    }
    # metrics.json describes best.ckpt: the first epoch with the highest accuracy
    per_epoch = epoch_metrics(sst2_run, "val/accuracy")
    assert metrics["val/accuracy"] == pytest.approx(max(per_epoch))
    best = torch.load(sst2_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == per_epoch.index(max(per_epoch))
    recorded = metrics["best_checkpoint"]
    assert (recorded["epoch"], recorded["step"]) == (best["epoch"], best["global_step"])
    assert Path(recorded["path"]) == sst2_run / "checkpoints" / "best.ckpt"


def test_sst2_validate_test_predict(sst2_run: Path, monkeypatch, capfd):
    monkeypatch.chdir(ROOT)
    per_epoch = epoch_metrics(sst2_run, "val/accuracy")
    last = ["--config", "configs/sst2.yaml", "--ckpt_path", sst2_run / "checkpoints" / "last.ckpt"]
    fit_record = (sst2_run / "metrics.json").read_bytes()
    assert run_cli("validate", *last, "--trainer.default_root_dir", sst2_run, *FAST) == 0
    # the final model's own folder: last.ckpt is not best.ckpt
    assert read_metrics(sst2_run / "eval" / "validation-last")["val/accuracy"] == pytest.approx(per_epoch[-1])

    common = ["--config", "configs/sst2.yaml", "--ckpt_path", sst2_run / "checkpoints" / "best.ckpt"]
    common += ["--trainer.default_root_dir", sst2_run, *FAST]
    assert run_cli("validate", *common) == 0
    validated = read_metrics(sst2_run / "eval" / "validation")
    assert validated["val/accuracy"] == pytest.approx(max(per_epoch))  # best by the main metric

    assert run_cli("test", *common) == 0  # the test file is the dev file here: the same numbers
    tested = read_metrics(sst2_run / "eval" / "test")
    # each evaluation has its own metrics.json
    assert set(tested) == {
        "test/accuracy",
        "test/loss",
        "test/evaluated_examples",
        "test/total_examples",
        "input_lengths",
    }
    assert tested["test/accuracy"] == pytest.approx(validated["val/accuracy"])
    assert (sst2_run / "metrics.json").read_bytes() == fit_record  # the fit's record is untouched

    capfd.readouterr()
    assert run_cli("predict", *common) == 0
    predictions_path = predicted_in(sst2_run, "test.tsv")
    # predict's one closing line names the file and the extras beside it
    assert f"predictions: {predictions_path} (also SST-2.tsv, config.predict.yaml)" in capfd.readouterr().err

    records = read_jsonl(predictions_path)
    test_tsv = GLUE / "SST-2" / "test.tsv"
    assert [r["index"] for r in records] == tsv_column(test_tsv, "index")  # one per input, in order
    texts = tsv_column(test_tsv, "sentence")
    for line, (record, text) in enumerate(zip(records, texts, strict=True), start=2):  # line 1: header
        assert set(record) == {"line", "index", "text", "label", "probabilities"}
        assert record["line"] == line and record["text"] == text
        assert set(record["probabilities"]) == {"negative", "positive"}  # GLUE's names for 0 and 1
        assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert record["label"] == max(record["probabilities"], key=record["probabilities"].get)

    # GLUE's submission file: a header, then index<TAB>label (GLUE's own 0/1), in the test file's order.
    submission = predicted_in(sst2_run, "test.tsv", "SST-2.tsv").read_text(encoding="utf-8").splitlines()
    assert submission[0] == "index\tprediction"
    assert submission[1:] == [f"{r['index']}\t{SST2_VALUES[r['label']]}" for r in records]


def test_evaluating_another_runs_checkpoint_writes_into_that_run_never_over_the_configs(
    sst2_run: Path, tmp_path: Path, monkeypatch, capfd
):
    """README's ``validate --config configs/sst2.yaml --ckpt_path outputs/distill_sst2/...``: the
    student's numbers go into the student's run (int8 into a folder of its own); the teacher's
    record in outputs/sst2 (the config's run) stays byte for byte; a checkpoint alone follows its run."""
    monkeypatch.chdir(tmp_path)
    teacher, student = Path("outputs/sst2"), Path("outputs/distill_sst2")
    for run in (teacher, student):
        shutil.copytree(sst2_run, run)
    before = {p: p.read_bytes() for p in sorted(teacher.rglob("*")) if p.is_file()}
    student_record = (student / "metrics.json").read_bytes()
    assert "best_checkpoint" in json.loads(student_record)
    config = [
        "--config",
        ROOT / "configs" / "sst2.yaml",
        "--data.validation_file",
        GLUE / "SST-2" / "dev.tsv",
    ]
    ckpt = ["--ckpt_path", student / "checkpoints" / "best.ckpt", *FAST]

    capfd.readouterr()
    assert run_cli("validate", *config, *ckpt) == 0
    folder = student / "eval" / "validation-dev"  # the file given on the command line names it
    assert capfd.readouterr().err.rstrip().splitlines()[-1] == (
        f"wrote {folder}/ (config.validate.yaml, confusion_matrix.json, logs/, metrics.json)"
    )
    scored = {"val/accuracy", "val/loss", "val/evaluated_examples", "val/total_examples", "input_lengths"}
    assert set(read_metrics(folder)) == scored
    assert run_cli("validate", *config, *ckpt, "--model.quantize", "int8") == 0
    assert set(read_metrics(student / "eval" / "validation-dev-int8")) == scored

    # --ckpt_path alone: the checkpoint's run, not outputs/sequenceclassifier/
    texts = tmp_path / "texts.txt"
    texts.write_text("a fine film\n", encoding="utf-8")
    assert (
        run_cli(
            "predict",
            "--ckpt_path",
            student / "checkpoints" / "best.ckpt",
            "--data.predict_file",
            texts,
            *FAST,
        )
        == 0
    )
    assert len(read_jsonl(predicted_in(student, texts))) == 1
    assert sorted(p.name for p in Path("outputs").iterdir()) == ["distill_sst2", "sst2"]

    after = {p: p.read_bytes() for p in sorted(teacher.rglob("*")) if p.is_file()}
    assert after == before  # nothing added, nothing changed in the config's run
    assert (student / "metrics.json").read_bytes() == student_record  # best_checkpoint kept


def test_predict_writes_only_the_file_asked_for(sst2_run: Path, tmp_path: Path, capfd):
    """An explicit --data.predictions_file is all predict writes: no GLUE submission file beside it,
    no predict folder, config or logs in the run; a name whose extension says another format gets a note."""
    before = sorted(p for p in sst2_run.rglob("*"))
    out = tmp_path / "mine" / "preds.txt"
    out.parent.mkdir()
    capfd.readouterr()
    assert predict(sst2_run / "checkpoints" / "best.ckpt", "sst2", GLUE / "SST-2" / "test.tsv", sst2_run,
                   "--data.predictions_file", out) == 0  # fmt: skip
    err = capfd.readouterr().err
    assert f"note: {out}: written as jsonl (its extension says otherwise)" in err
    assert err.rstrip().splitlines()[-1] == f"predictions: {out}"
    assert [p.name for p in out.parent.iterdir()] == ["preds.txt"]
    assert len(read_jsonl(out)) == len(tsv_column(GLUE / "SST-2" / "test.tsv", "index"))
    assert sorted(p for p in sst2_run.rglob("*")) == before


def test_sst2_metrics_equal_those_recomputed_from_predictions(sst2_run: Path, tmp_path: Path):
    dev = GLUE / "SST-2" / "dev.tsv"
    assert predict(sst2_run / "checkpoints" / "best.ckpt", "sst2", dev, tmp_path) == 0
    predicted = [SST2_VALUES[r["label"]] for r in read_jsonl(predicted_in(tmp_path, dev))]
    gold = tsv_column(dev, "label")
    assert len(predicted) == len(gold) == 24
    accuracy = sum(p == g for p, g in zip(predicted, gold)) / len(gold)
    assert max(epoch_metrics(sst2_run, "val/accuracy")) == pytest.approx(accuracy, abs=1e-6)  # best.ckpt's


def test_checkpoint_alone_predicts_from_another_directory(sst2_run: Path, tmp_path: Path, monkeypatch):
    """Only the .ckpt travels: another working directory, no config, no train file, and the
    encoder directory the model was fine-tuned from is gone."""
    texts = ["a warm , funny and moving film", "a dull , lifeless and boring mess", "terrific acting"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(sst2_run / "checkpoints" / "best.ckpt", elsewhere / "model.ckpt")
    (elsewhere / "reviews.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    monkeypatch.chdir(elsewhere)

    assert predict(Path("model.ckpt"), "sst2", Path("reviews.txt"), Path("run")) == 0
    records = read_jsonl(predicted_in(elsewhere / "run", "reviews.txt"))
    assert [r["index"] for r in records] == ["0", "1", "2"]

    # The same texts through the original run directory give the same predictions: the
    # tokenizer rebuilt from the checkpoint is the one the model was trained with.
    monkeypatch.chdir(ROOT)
    assert (
        predict(sst2_run / "checkpoints" / "best.ckpt", "sst2", elsewhere / "reviews.txt", tmp_path / "again")
        == 0
    )
    again = read_jsonl(predicted_in(tmp_path / "again", "reviews.txt"))
    assert [r["label"] for r in again] == [r["label"] for r in records]
    for first, second in zip(records, again):
        for name, probability in first["probabilities"].items():
            assert second["probabilities"][name] == pytest.approx(probability, abs=1e-6)


# --- sentence pairs (MRPC: F1 + accuracy) and CoLA (MCC, header-less files) -------------------------


@pytest.mark.parametrize(
    ("config", "task", "dev", "label_column", "header", "seed"),
    [
        ("mrpc.yaml", "mrpc", "MRPC/dev.tsv", "Quality", True, "42"),
        # Seed 3: the tiny model then predicts both classes on CoLA's dev sample (MCC != 0).
        ("cola.yaml", "cola", "CoLA/dev.tsv", 1, False, "3"),
    ],
    ids=["mrpc", "cola"],
)
def test_pair_and_cola_metrics_equal_those_recomputed_from_predictions(
    config, task, dev, label_column, header, seed, mixing_bert_dir: Path, tmp_path: Path, monkeypatch
):
    monkeypatch.chdir(ROOT)
    run_dir = tmp_path / "run"
    fit(config, mixing_bert_dir, run_dir, "--seed_everything", seed)
    metrics = read_metrics(run_dir)

    # best.ckpt holds the weights whose validation metrics.json reports.
    assert predict(run_dir / "checkpoints" / "best.ckpt", task, GLUE / dev, tmp_path / "predict") == 0
    values = {
        "mrpc": {"not_equivalent": "0", "equivalent": "1"},
        "cola": {"unacceptable": "0", "acceptable": "1"},
    }
    predicted = [values[task][r["label"]] for r in read_jsonl(predicted_in(tmp_path / "predict", dev))]
    gold = tsv_column(GLUE / dev, label_column, header=header)
    assert len(predicted) == len(gold)
    accuracy = sum(p == g for p, g in zip(predicted, gold)) / len(gold)
    assert metrics["val/accuracy"] == pytest.approx(accuracy, abs=1e-6)
    if task == "mrpc":
        assert metrics["val/f1"] == pytest.approx(f1_by_hand(predicted, gold), abs=1e-6)
    else:
        assert metrics["val/mcc"] == pytest.approx(mcc_by_hand(predicted, gold), abs=1e-6)


# --- regression: STS-B -----------------------------------------------------------------------


def test_stsb_regression_end_to_end(mixing_bert_dir: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(ROOT)
    run_dir = tmp_path / "run"
    fit("stsb.yaml", mixing_bert_dir, run_dir)
    metrics = read_metrics(run_dir)
    assert {"val/pearson", "val/spearman", "val/loss"} <= set(metrics)
    ckpt = run_dir / "checkpoints" / "best.ckpt"

    # Scores on the dev set give back the logged correlations.
    dev = GLUE / "STS-B" / "dev.tsv"
    assert predict(ckpt, "stsb", dev, tmp_path / "dev") == 0
    records = read_jsonl(predicted_in(tmp_path / "dev", dev))
    assert all(set(r) == {"line", "index", "text", "text_pair", "score"} for r in records)
    assert all(isinstance(r["score"], float) for r in records)
    scores = [r["score"] for r in records]
    gold = [float(s) for s in tsv_column(dev, "score")]
    assert metrics["val/pearson"] == pytest.approx(pearson_by_hand(scores, gold), abs=1e-4)
    spearman = pearson_by_hand(average_ranks(scores), average_ranks(gold))
    assert metrics["val/spearman"] == pytest.approx(spearman, abs=1e-4)

    # The test file: one score per pair in order, and STS-B.tsv with 3-decimal scores.
    test_tsv = GLUE / "STS-B" / "test.tsv"
    assert predict(ckpt, "stsb", test_tsv, tmp_path / "test") == 0
    records = read_jsonl(predicted_in(tmp_path / "test", test_tsv))
    assert [r["index"] for r in records] == tsv_column(test_tsv, "index")
    submission = predicted_in(tmp_path / "test", test_tsv, "STS-B.tsv").read_text().splitlines()
    assert submission == ["index\tprediction", *(f"{r['index']}\t{r['score']:.3f}" for r in records)]


# --- MNLI: matched and mismatched dev sets ----------------------------------------------------


def test_mnli_scores_matched_and_mismatched(mixing_bert_dir: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(ROOT)
    run_dir = tmp_path / "run"
    fit("mnli.yaml", mixing_bert_dir, run_dir)
    metrics = read_metrics(run_dir)
    assert {"val/accuracy", "val/accuracy_mm", "val/loss", "val/loss_mm"} <= set(metrics)

    mismatched = GLUE / "MNLI" / "dev_mismatched.tsv"
    assert predict(run_dir / "checkpoints" / "best.ckpt", "mnli", mismatched, tmp_path / "mm") == 0
    records = read_jsonl(predicted_in(tmp_path / "mm", mismatched))
    assert all(set(r["probabilities"]) == {"entailment", "neutral", "contradiction"} for r in records)
    gold = tsv_column(mismatched, "gold_label")
    accuracy = sum(r["label"] == g for r, g in zip(records, gold)) / len(gold)
    assert metrics["val/accuracy_mm"] == pytest.approx(accuracy, abs=1e-6)
    # Predictions on a mismatched file go to GLUE's MNLI-mm.tsv.
    assert predicted_in(tmp_path / "mm", mismatched, "MNLI-mm.tsv").read_text().splitlines()[1:] == [
        f"{r['index']}\t{r['label']}" for r in records
    ]


# --- bad input ---------------------------------------------------------------------------------


def assert_user_error(capfd, *fragments: str) -> str:
    """Exit code checked by the caller; here: one clean message on stderr naming what went wrong."""
    err = capfd.readouterr().err
    assert "Traceback" not in err
    message = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(message) == 1, err
    for fragment in fragments:
        assert fragment in message[0]
    return message[0]


@pytest.mark.parametrize(
    ("content", "where", "problem"),
    [
        ("sentence\tlabel\na fine film\t1\nno label here\n", ":3:", "expected 2 tab-separated columns"),
        ("sentence\tlabel\na fine film\t1\na sad film\t2\n", ":3:", "label '2' is not one of 0, 1"),
        ("", ":1:", "empty file"),
        (b"sentence\tlabel\na fine film\t1\nna\xefve\t0\n", ":3:", "not valid UTF-8"),
    ],
    ids=["missing-column", "unknown-label", "empty", "not-utf8"],
)
def test_bad_train_file_fails_cleanly(content, where, problem, tiny_bert_dir: Path, tmp_path: Path, capfd):
    train = tmp_path / "train.tsv"
    train.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    run_dir = tmp_path / "run"
    code = run_cli(
        "fit",
        "--config",
        ROOT / "configs" / "sst2.yaml",
        "--model.pretrained",
        tiny_bert_dir,
        "--data.train_file",
        train,
        "--data.validation_file",
        GLUE / "SST-2" / "dev.tsv",
        "--trainer.default_root_dir",
        run_dir,
        *FAST,
    )
    assert code == 2
    assert_user_error(capfd, f"{train}{where}", problem)
    assert not list(run_dir.glob("checkpoints/*.ckpt"))
    assert not (run_dir / "metrics.json").exists()


@pytest.mark.parametrize(
    ("name", "content", "where", "problem"),
    [
        ("test.tsv", "index\tsentence\n0\ta fine film\n1\n", ":3:", "expected 2 tab-separated columns"),
        ("empty.txt", "\n\n", ":1:", "empty file"),
        ("latin1.txt", b"a fine film\nna\xefve and dull\n", ":2:", "not valid UTF-8"),
    ],
    ids=["missing-column", "empty", "not-utf8"],
)
def test_bad_predict_file_leaves_earlier_predictions_intact(
    name, content, where, problem, sst2_run: Path, tmp_path: Path, capfd
):
    ckpt = sst2_run / "checkpoints" / "best.ckpt"
    run_dir = tmp_path / "run"
    folder = predicted_in(run_dir, name).parent
    folder.mkdir(parents=True)
    earlier = '{"index": "0", "label": "1", "probabilities": {"0": 0.25, "1": 0.75}}\n'
    (folder / "predictions.jsonl").write_text(earlier, encoding="utf-8")  # an earlier run's output

    bad = tmp_path / name
    bad.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    capfd.readouterr()
    assert predict(ckpt, "sst2", bad, run_dir) == 2
    assert_user_error(capfd, f"{bad}{where}", problem)
    assert (folder / "predictions.jsonl").read_text(encoding="utf-8") == earlier  # untouched, not truncated
    assert not (folder / "SST-2.tsv").exists()
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_unknown_task_name_fails_cleanly(tiny_bert_dir: Path, tmp_path: Path, capfd):
    code = run_cli(
        "fit",
        "--config",
        ROOT / "configs" / "sst2.yaml",
        "--model.pretrained",
        tiny_bert_dir,
        "--data.task",
        "sst3",
        "--trainer.default_root_dir",
        tmp_path / "run",
        *FAST,
    )
    assert code == 2
    assert_user_error(capfd, "unknown task 'sst3'", "sst2")
    assert not (tmp_path / "run" / "checkpoints").exists()
