"""``python -m tasks report RUN_DIR``: real run directories from short fits (SST-2, NER, SQuAD v2.0) on
the tiny random BERT, then the report: its files, valid PNGs, a self-contained page holding the
metrics, the best epoch marked, the QA answer-length numbers recomputed by hand from predictions.json,
and bad input giving exit status 2 with one ``error:`` line."""

from __future__ import annotations

import base64
import json
import re
import shutil
import string
import struct
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

import tasks.cli  # noqa: F401  (imported at collection: Lightning's log handler binds to this sys.stderr)
from tasks import report, run_record
from tasks.data.squad import read_squad

from .conftest import FAST_TRAINER_ARGS, ROOT, run_cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

TWO_EPOCHS = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3"]
FAST = [*FAST_TRAINER_ARGS, "--trainer.log_every_n_steps", "1"]  # a point a step for the report's curves
WINDOWS = ["--data.max_seq_length", "64", "--data.max_query_length", "24", "--data.doc_stride", "24"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SQUAD_DEV = ROOT / "data" / "squad" / "dev-v2.0.json"


def fit(tmp_path_factory, name: str, config: str, pretrained: Path, *extra: str) -> Path:
    """One short fit from the project root (the configs name their data relative to it)."""
    base = tmp_path_factory.mktemp(name)
    run_dir = base / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        args = ["fit", "--config", f"configs/{config}", "--model.pretrained", pretrained, *TWO_EPOCHS, *FAST]
        code = run_cli(
            *args, "--trainer.default_root_dir", run_dir, "--data.cache_dir", base / "cache", *extra
        )
    assert code == 0, f"the {config} fit failed (exit {code})"
    return run_dir


@pytest.fixture(scope="module")
def sst2_run(tiny_bert_dir, tmp_path_factory) -> Path:
    return fit(tmp_path_factory, "sst2", "sst2.yaml", tiny_bert_dir, "--model.learning_rate", "1e-3")


@pytest.fixture(scope="module")
def ner_run(tiny_bert_dir, tmp_path_factory) -> Path:
    return fit(tmp_path_factory, "ner", "ner.yaml", tiny_bert_dir, "--data.batch_size", "8")


@pytest.fixture(scope="module")
def squad_run(tiny_bert_dir, tmp_path_factory) -> Path:
    # A huge null threshold: every question gets a span, so F1 is partial rather than all 0 or 1.
    extra = [*WINDOWS, "--data.batch_size", "8", "--model.null_score_diff_threshold", "1e9"]
    return fit(tmp_path_factory, "squad", "squad_v2.yaml", tiny_bert_dir, *extra)


def make_report(run_dir: Path, capsys, *extra: str) -> tuple[Path, str, str]:
    """Run the command in-process: (report.html, its text, stderr); stdout is the page's path."""
    capsys.readouterr()
    assert run_cli("report", run_dir, *extra) == 0
    out, err = capsys.readouterr()
    page = Path(out.strip().splitlines()[-1])
    assert page.name == "report.html" and page.is_file()
    return page, page.read_text(encoding="utf-8"), err


def assert_valid_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert 400 <= width <= 2000 and 250 <= height <= 2000, (path.name, width, height)
    from matplotlib.image import imread

    pixels = imread(path)
    assert len({tuple(p) for p in pixels.reshape(-1, pixels.shape[-1])[::97].tolist()}) > 10  # not blank


def assert_self_contained(page: str, directory: Path, pictures: list[str]) -> None:
    """Every picture inline as a data URI (equal to the PNG beside the page), nothing external."""
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) == len(pictures) == page.count("<figcaption>")
    for source, name in zip(sources, pictures):
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]) == (directory / name).read_bytes()
        assert_valid_png(directory / name)
    assert re.findall(r'\b(?:src|href)\s*=\s*"(?!data:)', page) == []
    for external in ("http://", "https://", "url(", "<link", "<script", "@import", "file:"):
        assert external not in page


def metric_cells(metrics: dict) -> list[str]:
    return [f"{value:.4f}" for value in metrics.values() if isinstance(value, int | float)]


def best_epoch(run_dir: Path) -> int:
    return torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["epoch"]


# --- the pictures of each task ------------------------------------------------------------------


def test_classification_report(sst2_run, capsys):
    page_path, page, _ = make_report(sst2_run, capsys)
    assert page_path == sst2_run / "report.html"
    pictures = ["train_loss_lr.png", "val_metrics.png", "confusion_matrix.png"]
    assert_self_contained(page, sst2_run, pictures)
    assert f"<title>{sst2_run.name}</title>" in page and f"<h1>{sst2_run.name}</h1>" in page
    metrics = json.loads((sst2_run / "metrics.json").read_text())
    assert {"val/accuracy", "val/loss"} <= set(metrics)
    for cell in metric_cells(metrics):
        assert f"<td>{cell}</td>" in page
    assert f"best.ckpt (epoch {best_epoch(sst2_run)}, by val/accuracy)" in page
    matrix = json.loads((sst2_run / "confusion_matrix.json").read_text())
    assert (
        matrix["labels"] == ["negative", "positive"] and sum(map(sum, matrix["matrix"])) == 24
    )  # the SST-2 dev sample


def test_ner_report_into_another_directory(ner_run, tmp_path, capsys):
    out = tmp_path / "elsewhere"
    page_path, page, _ = make_report(ner_run, capsys, "--output", out)
    assert page_path == out / "report.html" and not (ner_run / "report.html").exists()
    assert_self_contained(page, out, ["train_loss_lr.png", "val_metrics.png", "ner_per_type.png"])
    metrics = json.loads((ner_run / "metrics.json").read_text())
    assert {f"val/{m}_{t}" for m in ("precision", "recall", "f1") for t in ("PER", "ORG", "LOC")} <= set(
        metrics
    )
    for cell in metric_cells(metrics):
        assert f"<td>{cell}</td>" in page
    assert f"best.ckpt (epoch {best_epoch(ner_run)}, by val/f1)" in page


# --- SQuAD: EM/F1 by gold answer length, recomputed by hand -------------------------------------


def normalize(text: str) -> str:
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def f1_v2(prediction: str, gold: str) -> float:
    p, g = normalize(prediction).split(), normalize(gold).split()
    if not p or not g:
        return float(p == g)
    same = sum((Counter(p) & Counter(g)).values())
    return 0.0 if same == 0 else 2 * same / (len(p) + len(g))  # = 2PR / (P + R)


def by_hand(gold_file: Path, predictions: dict[str, str]) -> dict[str, tuple[int, float, float]]:
    """{group: (questions, EM, F1)} for the length bins and all/HasAns/NoAns, straight from the JSON."""
    groups: dict[str, list[tuple[float, float]]] = {}
    for article in json.loads(gold_file.read_text(encoding="utf-8"))["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                golds = [a["text"] for a in qa["answers"] if normalize(a["text"])] or [""]
                prediction = predictions[qa["id"]]
                score = (
                    max(float(normalize(prediction) == normalize(g)) for g in golds),
                    max(f1_v2(prediction, g) for g in golds),
                )
                words = len(qa["answers"][0]["text"].split()) if qa["answers"] else 0
                length = {1: "1", 2: "2", 3: "3", 4: "4-5", 5: "4-5"}.get(
                    words, "6-10" if words <= 10 else ">10"
                )
                for group in ("all", "HasAns" if qa["answers"] else "NoAns", *([length] if words else [])):
                    groups.setdefault(group, []).append(score)
    return {
        g: (len(s), sum(e for e, _ in s) / len(s), sum(f for _, f in s) / len(s)) for g, s in groups.items()
    }


def page_table(page: str) -> dict[str, tuple[int, float, float]]:
    rows = re.findall(
        r'<tr data-group="([^"]+)"><td>[^<]*</td><td>(\d+)</td><td>([^<]+)</td><td>([^<]+)</td></tr>', page
    )
    return {g.replace("&gt;", ">"): (int(n), float(em), float(f1)) for g, n, em, f1 in rows if em != "–"}


def assert_matches_hand(page: str, expected: dict[str, tuple[int, float, float]]) -> None:
    shown = page_table(page)
    assert set(shown) == set(expected)  # every non-empty bin (>10 has no question in the sample)
    for group, (n, em, f1) in expected.items():
        assert shown[group][0] == n, group
        assert shown[group][1:] == pytest.approx((em, f1), abs=5e-5), group  # the page prints 4 decimals


def test_squad_report_scores_by_answer_length(squad_run, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # config.yaml names data/squad/dev-v2.0.json relative to the project root
    _, page, _ = make_report(squad_run, capsys)
    pictures = ["train_loss_lr.png", "val_metrics.png", "qa_answer_length.png", "qa_has_no_answer.png"]
    assert_self_contained(page, squad_run, pictures)
    metrics = json.loads((squad_run / "metrics.json").read_text())
    for cell in metric_cells(metrics):
        assert f"<td>{cell}</td>" in page
    predictions = json.loads((squad_run / "predictions.json").read_text())
    assert all(predictions.values())  # the huge null threshold: a span for every question
    expected = by_hand(SQUAD_DEV, predictions)
    assert_matches_hand(page, expected)
    # the HasAns/NoAns split is what validation logged (the same predictions, the official scorer)
    for prefix in ("HasAns", "NoAns"):
        assert expected[prefix][1:] == pytest.approx(
            (metrics[f"val/{prefix}_exact"], metrics[f"val/{prefix}_f1"]), abs=1e-6
        )
    assert f"best.ckpt (epoch {best_epoch(squad_run)}, by val/f1)" in page


def test_squad_numbers_on_mixed_predictions_and_data_found_above_the_run(
    squad_run, tmp_path, monkeypatch, capsys
):
    """Exact, article-only, partial, wrong and empty answers; the SQuAD file found in a parent
    directory of the run (config.yaml's relative path), the command run from somewhere else."""
    run_dir = tmp_path / "project" / "outputs" / "squad"
    shutil.copytree(squad_run, run_dir)
    (tmp_path / "project" / "data" / "squad").mkdir(parents=True)
    shutil.copy(SQUAD_DEV, tmp_path / "project" / "data" / "squad" / SQUAD_DEV.name)
    predictions = {}
    for k, example in enumerate(read_squad(SQUAD_DEV).examples):
        gold = example.answers[0].text if example.answers else "the lake"
        predictions[example.id] = [gold, f"The {gold}!", gold.split()[-1], "zzz", ""][k % 5]
    (run_dir / "predictions.json").write_text(json.dumps(predictions), encoding="utf-8")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    _, page, err = make_report(run_dir, capsys)
    assert "warning" not in err
    expected = by_hand(SQUAD_DEV, predictions)
    assert 0 < expected["all"][2] < 1 and 0 < expected["NoAns"][1] < 1  # a real mixture
    assert_matches_hand(page, expected)
    rows = report.answer_length_scores(read_squad(SQUAD_DEV).examples, predictions, True)
    for label, n, em, f1 in rows:
        if n:
            assert (n, em, f1) == pytest.approx(expected[label], abs=1e-12)


def test_missing_gold_file_skips_the_qa_pictures(squad_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # neither here nor above the run is there a data/squad/dev-v2.0.json
    for name in ("qa_answer_length.png", "qa_has_no_answer.png"):
        (squad_run / name).unlink(missing_ok=True)
    _, page, err = make_report(squad_run, capsys)
    warning = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1 and "data/squad/dev-v2.0.json" in warning[0] and "no QA pictures" in warning[0]
    assert_self_contained(page, squad_run, ["train_loss_lr.png", "val_metrics.png"])
    assert not (squad_run / "qa_answer_length.png").exists()


def test_older_runs_log_under_version_n(sst2_run, tmp_path, capsys):
    run_dir = tmp_path / "old"
    shutil.copytree(sst2_run, run_dir)
    (run_dir / "logs" / "csv" / "fit").rename(run_dir / "logs" / "csv" / "version_0")
    (run_dir / "logs" / "csv" / "version_1").mkdir()  # a later validate: no train/loss column
    (run_dir / "logs" / "csv" / "version_1" / "metrics.csv").write_text("epoch,step,val/accuracy\n0,0,0.5\n")
    _, page, _ = make_report(run_dir, capsys)
    assert "from logs/csv/version_0/metrics.csv" in page


# --- bad input ----------------------------------------------------------------------------------


def one_error_line(capfd) -> str:
    out, err = capfd.readouterr()
    assert "Traceback" not in err and out == ""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and len(err.strip().splitlines()) == 1, err
    return errors[0]


@pytest.mark.parametrize("case", ["missing", "a-file", "empty-dir", "no-logs", "bad-log"])
def test_bad_input_fails_cleanly(case, sst2_run, tmp_path, capfd):
    path = tmp_path / "run"
    if case == "a-file":
        path.write_text("not a run\n")
    elif case != "missing":
        path.mkdir()
    if case in ("no-logs", "bad-log"):
        shutil.copy(sst2_run / "config.yaml", path / "config.yaml")
    if case == "bad-log":
        (path / "logs" / "csv" / "fit").mkdir(parents=True)
        (path / "logs" / "csv" / "fit" / "metrics.csv").write_text("epoch,step,train/loss\n0,0,oops\n")
    capfd.readouterr()
    assert run_cli("report", path) == 2
    message = one_error_line(capfd)
    assert str(path) in message
    expected = {
        "missing": "is not a run directory: no such directory",
        "a-file": "is not a run directory: it is a file",
        "empty-dir": "is not a run directory: no config.yaml",
        "no-logs": "no training log",
        "bad-log": "metrics.csv:2:",
    }[case]
    assert expected in message
    assert not (tmp_path / "run" / "report.html").exists()


def test_without_matplotlib(sst2_run, monkeypatch, capfd):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # import matplotlib... now raises ImportError
    capfd.readouterr()
    assert run_cli("report", sst2_run) == 2
    assert (
        one_error_line(capfd)
        == "error: the report needs matplotlib (a dependency of bert-tasks): pip install matplotlib"
    )


def test_help_names_the_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("report", "--help")
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python -m tasks report")


# --- step counts, epoch ends, one-point series: from synthetic CSV logs -------------------------


def write_log(path: Path, epoch_steps: int, epochs: int, every: int, validate: bool = True) -> Path:
    """A CSV log as Lightning writes it: train rows at the 0-based index of every ``every``-th
    step, a validation row at each epoch's last step."""
    lines = ["epoch,step,train/loss,val/accuracy,val/loss"]
    for step in range(epoch_steps * epochs):
        epoch = step // epoch_steps
        if (step + 1) % every == 0:
            lines.append(f"{epoch},{step},{1 / (step + 1)},,")
        if validate and (step + 1) % epoch_steps == 0:
            lines.append(f"{epoch},{step},,0.5,0.7")
    path.write_text("\n".join(lines) + "\n")
    return path


def synthetic_run(tmp_path: Path, log: Path) -> run_record.Run:
    config = {"model": {"class_path": "tasks.classification.SequenceClassifier"}}
    return run_record.Run(tmp_path, config, log, run_record.read_log(log))


@pytest.mark.parametrize(
    ("epoch_steps", "epochs", "every", "validate", "ends"),
    [
        (8, 5, 10, True, [8, 16, 24, 32]),  # a 40-step run logged every 10: not 8.5, 18.5, ...
        (8, 3, 1, False, [8, 16]),  # every step logged: the boundary is in the log
        (8, 4, 3, False, [8, 16, 24]),  # no validation: the one length that fits every bound
        (5, 1, 2, True, []),  # one epoch: no boundary
    ],
)
def test_epoch_ends_and_step_count_from_the_log(tmp_path, epoch_steps, epochs, every, validate, ends):
    rows = run_record.read_log(write_log(tmp_path / "metrics.csv", epoch_steps, epochs, every, validate))
    assert run_record.epoch_ends(rows) == ends
    last_logged = max(s for s in range(1, epoch_steps * epochs + 1) if s % every == 0 or validate)
    assert run_record.total_steps(rows) == last_logged


def test_training_caption_counts_steps_not_logged_points(tmp_path):
    run = synthetic_run(tmp_path, write_log(tmp_path / "metrics.csv", 8, 5, 10))
    caption = report.training_picture(run).caption
    assert "40 steps, the loss logged at 4 points" in caption
    assert "dotted lines end epochs, at steps 8, 16, 24, 32." in caption


def test_epoch_mean_is_the_mean_of_the_epochs_logged_values(tmp_path):
    rows = run_record.read_log(write_log(tmp_path / "metrics.csv", 8, 2, 3))  # logged at 3, 6 | 9, 12, 15
    means = report.epoch_means(rows, "train/loss")
    assert means == {
        0: (pytest.approx((1 / 3 + 1 / 6) / 2), 2),
        1: (pytest.approx((1 / 9 + 1 / 12 + 1 / 15) / 3), 3),
    }


def test_one_point_series_get_a_readable_axis(tmp_path):
    """One epoch, one logged step: a marker, the loss axis from 0, the score axis 0-1, x one step wide."""
    run = synthetic_run(tmp_path, write_log(tmp_path / "metrics.csv", 4, 1, 4))
    training = report.training_picture(run)
    (line,) = [ln for ln in training.figure.axes[0].get_lines() if ln.get_label() == "train/loss"]
    assert line.get_marker() == "o"
    assert training.figure.axes[0].get_ylim() == pytest.approx((0, 0.25 * 1.25))
    figure = report.validation_picture(run).figure
    scores, losses = figure.axes[:2]
    assert scores.get_ylim() == pytest.approx((-0.02, 1.05)) and scores.get_xlim() == pytest.approx((-1, 1))
    low, high = losses.get_ylim()  # val/loss 0.7 and the epoch's train/loss mean 0.25, both inside
    assert low < 0.25 and 0.7 < high < 1


@pytest.mark.parametrize(
    ("class_path", "task", "main"),
    [
        ("tasks.pretraining.PreTrainingModule", None, "val/mlm_loss"),
        ("tasks.distillation.DistilledTagger", "ner", "val/f1"),
        ("tasks.extraction.FeatureExtractor", None, "val/loss"),
        ("QAModule", "qa", "val/f1"),
    ],
)
def test_every_task_kind_is_known(tmp_path, capsys, class_path, task, main):
    (tmp_path / "config.yaml").write_text(f"model:\n  class_path: {class_path}\n")
    (tmp_path / "logs" / "csv" / "fit").mkdir(parents=True)
    write_log(tmp_path / "logs" / "csv" / "fit" / "metrics.csv", 4, 1, 1)
    run = run_record.load_run(tmp_path)
    assert "unknown model.class_path" not in capsys.readouterr().err
    assert (run.task, run_record.main_metric(run)) == (task, main)
