"""``python -m tasks predict --ckpt_path C --data.predict_file F`` without Lightning.

When nothing Lightning-specific is asked for (no Trainer option other than the quiet ones on one
CPU, only the options below, given on the command line or in a config file such as the
``config.predict.yaml`` a predict writes), predict runs through the plain predictor
(``tasks.predictor``): the same files in the same folder (``<run>/predict/<name>/``, temp file then
rename), the same records, the same errors and the same closing line, in a fraction of the time
(Lightning, ``datasets`` and the feature cache are never imported). Anything else, or
``BERT_TASKS_PREDICT=lightning`` in the environment, goes the Lightning way (``tasks.app``).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from .io import check_output_paths
from .outputs import CKPT_SHORTHANDS, checkpoint_run, evaluation_folder, now, predictions_path, summary_line
from .preflight import explicit_options

FORCE_LIGHTNING = "BERT_TASKS_PREDICT"  # =lightning: always the Lightning path
# Options this path honours, and the values it honours of those that only may be given.
OPTIONS = {
    "--ckpt_path",
    "--data.predict_file",
    "--data.predictions_file",
    "--data.eval_tokens_per_batch",
    "--data.eval_batch_size",
    "--model.runtime",
    "--model.quantize",
    "--trainer.default_root_dir",
}
NUMBERS = {"--data.eval_tokens_per_batch", "--data.eval_batch_size"}
FIXED = {
    "--return_predictions": ("false",),
    "--trainer.enable_progress_bar": ("false", "true"),
    "--trainer.enable_model_summary": ("false", "true"),
    "--trainer.accelerator": ("cpu", "auto"),
    "--trainer.devices": ("1", "auto"),
    "--trainer.logger": ("false",),
}
# Settings a config may also give (``config.predict.yaml`` does): honoured when they say what the
# checkpoint says (the task's own classes; the checkpoint itself as the model), checked in
# plain_predict. A config without the classes is Lightning's to refuse.
CONFIG_ONLY = {"--model.class_path", "--data.class_path", "--model.pretrained"}


def options(args: list[str]) -> dict[str, str] | None:
    """``args`` (after the command) as option -> value, or None when one is not this path's."""
    found: dict[str, str] = {}
    rest = list(args)
    while rest:
        flag = rest.pop(0)
        if "=" in flag and flag.startswith("--"):
            flag, value = flag.split("=", 1)
        elif rest and (flag.startswith("--") or flag == "-c"):
            value = rest.pop(0)
        else:
            return None
        # a config's settings count where the config stands: later options override them, as in jsonargparse
        pairs = config_options(value) if flag in ("--config", "-c") else [(flag, value)]
        if pairs is None:
            return None
        for option, setting in pairs:
            known = option in OPTIONS or (option in CONFIG_ONLY and flag in ("--config", "-c"))
            if not known and setting.lower() not in FIXED.get(option, ()):
                return None
            if option in NUMBERS and not setting.isdigit() and setting not in ("null", "None"):
                return None  # jsonargparse's message for a value of the wrong type
            found[option] = setting
        if flag in ("--config", "-c"):
            found["--config"] = value
    return found


def config_options(path: str) -> list[tuple[str, str]] | None:
    """A config file's settings as the command line spells them (``data: {init_args: {predict_file:
    F}}``: ``--data.predict_file F``; ``false``, ``null``), or None for a value no option spells
    (a list) or a file preflight would refuse."""
    from .io import UserError
    from .preflight import Invocation

    try:
        [config] = Invocation.read(["predict", "--config", path]).configs
    except UserError:
        return None
    pairs: list[tuple[str, str]] = []
    todo = [("", config)]
    while todo:
        prefix, section = todo.pop(0)
        for key, value in section.items():
            name = f"{prefix}.{key}" if prefix else f"--{key}"
            if isinstance(value, dict):
                todo.append((name, value))
            elif isinstance(value, list):
                return None
            else:
                pairs.append((name.replace(".init_args.", "."), _spelled(value)))
    return pairs


def _spelled(value: Any) -> str:
    if value is None or isinstance(value, bool):  # not a dict lookup: 1 == True
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


def plain_predict(args: list[str]) -> int | None:
    """Run ``predict`` without Lightning and return its exit code, or None when it must go the
    Lightning way (an option this path does not honour, a GPU to use, not a task checkpoint)."""
    if os.environ.get(FORCE_LIGHTNING, "").lower() == "lightning" or args[0] != "predict":
        return None
    given = options(args[1:])
    if given is None or "--ckpt_path" not in given or "--data.predict_file" not in given:
        return None
    ckpt_path = given["--ckpt_path"]
    if ckpt_path in CKPT_SHORTHANDS:
        return None
    from .runtime import drop_onednn_primitive_cache

    drop_onednn_primitive_cache()  # as for every predict, before torch is imported
    # OpenMP's threads sleep rather than spin between parallel regions (as serve's workers): on a
    # loaded machine a spinning thread takes the core its partner needs. Two lines' forward took
    # 0.45 s instead of 0.03 s, 1,500 SST-2 sentences 7.5-9 s instead of 5.6 s (2 cores, load 3).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .source import Source

    source = Source(ckpt_path)
    if not source.is_task_model:
        return None
    from .predictor_tasks import TASK_ADAPTERS

    row = source.task_kind()
    if "--config" in given and not _configured_as(given, row, ckpt_path):
        return None
    adapter = TASK_ADAPTERS.get(row.saves_as or row.key)
    if adapter is None or not adapter.handles_file(given["--data.predict_file"]):
        return None  # a task or file format the plain predictor does not read
    import torch

    if torch.cuda.is_available() and given.get("--trainer.accelerator") != "cpu":
        return None  # Lightning runs on the GPU (and its precision options)
    return _run(given, args)


def _configured_as(given: dict[str, str], row: Any, ckpt_path: str) -> bool:
    """A config's model and data classes are the checkpoint's task's (what predict adds without a
    config), and its model, if named, is the checkpoint."""
    from .registry import full_class_path

    for group, expected in (("model", row.module), ("data", row.data_module)):
        named = given.get(f"--{group}.class_path")
        if named is None or (full_class_path(group, named) or named) != expected:
            return False
    pretrained = given.get("--model.pretrained")
    return pretrained is None or Path(pretrained).resolve() == Path(ckpt_path).resolve()


def _run(given: dict[str, str], args: list[str]) -> int:
    from .inference import check_inference_options
    from .predictor import Predictor
    from .record_files import RecordFiles
    from .rundir import lock_run_directory

    started = now()
    ckpt_path, predict_file = given["--ckpt_path"], given["--data.predict_file"]
    runtime, quantize = given.get("--model.runtime", "torch"), given.get("--model.quantize")
    quantize = None if quantize in (None, "null", "None") else quantize
    check_inference_options(ckpt_path, quantize, "auto", runtime)
    batching = _batching(given)
    run_dir = Path(given.get("--trainer.default_root_dir") or checkpoint_run(ckpt_path))
    model_args = {"runtime": runtime, "quantize": quantize}
    explicit = explicit_options(args)
    folder = run_dir / evaluation_folder(
        "predict", {"predict_file": predict_file}, model_args, explicit, ckpt_path
    )
    explicit_file = given.get("--data.predictions_file")
    inputs = [predict_file, ckpt_path]
    predictions = predictions_path(explicit_file, folder, "predictions.jsonl")
    if explicit_file is None:  # an explicit predictions file is all that predict writes
        lock_run_directory(folder, "predict")  # first, as the Lightning path: its errors come first
    check_output_paths([predictions], inputs)
    predictor = Predictor.load(ckpt_path, runtime=runtime, quantize=quantize, map_weights=True)
    for note in predictor.notes:
        print(note, file=sys.stderr)
    adapter = predictor.adapter
    outputs = adapter.output_files(predict_file, predictions, explicit_file is None)
    check_output_paths([o.path for o in outputs], inputs)
    files = RecordFiles(outputs)
    files.start()
    clock = time.monotonic()
    try:
        lengths: list[int] = []
        for index, prediction in predictor.predict(adapter.read(predict_file), lengths=lengths, **batching):
            files.write([(index, prediction)])
        if not lengths and (error := adapter.no_features(predict_file)) is not None:
            raise error
        files.commit()
    except BaseException:
        files.discard()
        raise
    from .feature_cache import InputLengths

    measured = InputLengths(predictor.max_seq_length).add(lengths)
    print(measured.line(str(predict_file), adapter.long_inputs), file=sys.stderr)
    print(f"predict: done in {timedelta(seconds=round(time.monotonic() - clock))}", file=sys.stderr)
    if explicit_file is None:
        _write_config(folder, given, predictor)
    print(summary_line("predict", folder, started, [Path(o.path) for o in outputs]), file=sys.stderr)
    return 0


def _batching(given: dict[str, str]) -> dict[str, Any]:
    from .options import check_at_least

    tokens = int(given.get("--data.eval_tokens_per_batch", 4096))
    check_at_least("eval_tokens_per_batch", tokens, 8)
    size = given.get("--data.eval_batch_size")
    if size in (None, "null", "None"):
        return {"max_batch_tokens": tokens}
    check_at_least("eval_batch_size", int(size), 1)
    return {"batch_size": int(size)}


def _write_config(folder: Path, given: dict[str, str], predictor: Any) -> None:
    """``config.predict.yaml``: what this predict ran with, a config that runs it again."""
    import yaml

    from .io import atomic_open
    from .registry import TASKS

    row = TASKS[predictor.task]
    config = {
        "model": {
            "class_path": row.module,
            "init_args": {
                "pretrained": given["--ckpt_path"],
                "runtime": predictor.runtime,
                "quantize": predictor.quantize,
            },
        },
        "data": {
            "class_path": row.data_module,
            "init_args": {
                "predict_file": given["--data.predict_file"],
                "eval_tokens_per_batch": int(given.get("--data.eval_tokens_per_batch", 4096)),
                "eval_batch_size": _int_or_none(given.get("--data.eval_batch_size")),
            },
        },
        "ckpt_path": given["--ckpt_path"],
        "return_predictions": False,
    }
    with atomic_open(folder / "config.predict.yaml", "w") as handle:
        handle.write("# predict without Lightning (tasks.plain_predict)\n")
        yaml.safe_dump(config, handle, sort_keys=False)


def _int_or_none(value: str | None) -> int | None:
    return None if value in (None, "null", "None") else int(value)
