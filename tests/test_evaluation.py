"""The evaluation interface: outputs collected by example, and the one prediction writer."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from tasks.evaluation import Collector, Evaluation, OutputFile
from tasks.io import UserError
from tasks.writers import PredictionWriter


def test_collector_hands_out_whole_examples_in_order_and_counts_repeats_once():
    # example 0: two windows, 1: none (an empty line), 2: one window, 3: two windows
    collector = Collector([2, 0, 1, 2])
    collector.add([(0, 0, "a0"), (2, 2, "c0")])
    assert list(collector.ready()) == []  # example 0 still misses a window
    collector.add([(0, 1, "a1"), (0, 1, "a1")])  # a repeat (a distributed sampler's padding)
    assert list(collector.ready()) == [(0, ["a0", "a1"]), (1, []), (2, ["c0"])]
    assert collector.pending == 1
    collector.add([(3, 4, "d1"), (3, 3, "d0")])  # out of order: handed out in feature order
    assert list(collector.ready()) == [(3, ["d0", "d1"])]
    assert collector.pending == 0 and collector.parts == {}


def test_collector_complete_skips_examples_cut_short():
    collector = Collector([1, 2, 1])
    collector.add([(0, 0, "a"), (1, 1, "b0"), (2, 3, "c")])
    assert list(collector.complete()) == [(0, ["a"]), (2, ["c"])]


def make_writer_run(tmp_path: Path, pending: int = 0):
    outputs = [
        OutputFile(tmp_path / "out.jsonl", lambda i, p: [f"{i}:{p}"]),
        OutputFile(
            tmp_path / "sub" / "out.tsv",
            lambda i, p: [f"{i}\t{p}"],
            header=["index\tprediction"],
            footer=lambda: ["# end"],
        ),
    ]
    evaluation = Evaluation("predict", "in.txt", windows=[1, 1, 1], outputs=outputs)
    module = SimpleNamespace(
        evaluations={"predict": [evaluation]},
        prediction_pending=lambda: pending,
        finish_prediction=lambda: [],
    )
    trainer = SimpleNamespace(is_global_zero=True)
    return PredictionWriter(), trainer, module


def test_writer_streams_batches_and_renames_only_when_complete(tmp_path):
    writer, trainer, module = make_writer_run(tmp_path)
    writer.on_predict_epoch_start(trainer, module)
    writer.write_on_batch_end(trainer, module, [(0, "x"), (1, "y")], None, None, 0, 0)
    assert not (tmp_path / "out.jsonl").exists()  # only a temp file while the run goes on
    assert any(name.startswith(".out.jsonl.") for name in os.listdir(tmp_path))
    writer.write_on_batch_end(trainer, module, [(2, "z")], None, None, 1, 0)
    writer.on_predict_epoch_end(trainer, module)
    assert (tmp_path / "out.jsonl").read_text() == "0:x\n1:y\n2:z\n"
    assert (tmp_path / "sub" / "out.tsv").read_text() == "index\tprediction\n0\tx\n1\ty\n2\tz\n# end\n"
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl", "sub"]  # no temp file left


def test_writer_leaves_nothing_when_examples_are_missing_or_the_run_fails(tmp_path):
    (tmp_path / "out.jsonl").write_text("an earlier run's predictions\n")
    writer, trainer, module = make_writer_run(tmp_path, pending=1)
    writer.on_predict_epoch_start(trainer, module)
    writer.write_on_batch_end(trainer, module, [(0, "x")], None, None, 0, 0)
    with pytest.raises(UserError, match=r"1 example\(s\) of in.txt were not predicted"):
        writer.on_predict_epoch_end(trainer, module)
    assert (tmp_path / "out.jsonl").read_text() == "an earlier run's predictions\n"
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl", "sub"] and os.listdir(tmp_path / "sub") == []

    writer, trainer, module = make_writer_run(tmp_path)
    writer.on_predict_epoch_start(trainer, module)
    writer.on_exception(trainer, module, RuntimeError("killed"))
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl", "sub"] and os.listdir(tmp_path / "sub") == []
