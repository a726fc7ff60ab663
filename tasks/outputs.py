"""Where a command writes: a run directory belongs to one model.

``fit`` writes the run's record at the top of its run directory (checkpoints, ``metrics.json``,
``config.yaml``, logs). ``validate`` and ``test`` of a model write into ``<run>/eval/<name>/`` and
``predict`` into ``<run>/predict/<name>/`` (``<name>``: the split or the input file's stem, then the
options that change the answers, e.g. ``validation-int8``), never over the fit's record. ``<run>``
is ``--trainer.default_root_dir`` when given, else the checkpoint's own run (``<run>/checkpoints/
X.ckpt``), else ``outputs/<name of the checkpoint or export>`` for one outside a run directory, else
the config's run (``outputs/<config name>``). ``--data.predictions_file`` given explicitly is the
only file ``predict`` writes.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path

EVAL_FOLDER = "eval"  # validate and test: <run>/eval/<name>/
PREDICT_FOLDER = "predict"  # predict: <run>/predict/<name>/
EVALUATION_FOLDERS = (EVAL_FOLDER, PREDICT_FOLDER)
CKPT_SHORTHANDS = ("best", "last", "hpc", "registry")  # Lightning's names for checkpoints it finds itself

# The model options that change an evaluation's answers without being the checkpoint's: each makes
# its own folder. Values at their defaults name nothing.
_OPTION_DEFAULTS = {"quantize": None, "quantize_backend": "auto", "runtime": "torch"}
# Never part of a folder's name: what the model is, not how it is run.
_NOT_OPTIONS = ("pretrained", "class_path", "task", "label_names")


def checkpoint_run(ckpt_path: str | Path) -> Path:
    """The run directory a checkpoint belongs to: ``<run>`` for ``<run>/checkpoints/X.ckpt``; for a
    checkpoint or export outside a run directory (``pruned.ckpt``, ``exported/sst2-onnx``), a run of
    its own under ``outputs/``, named after it."""
    path = Path(ckpt_path)
    if path.parent.name == "checkpoints" and not path.is_dir():
        return path.parent.parent
    return Path("outputs") / (path.name if path.is_dir() else path.stem)


def default_run(command: str, ckpt_path: str | None, config_paths: list, class_path: str | None) -> Path:
    """A command's run directory when ``--trainer.default_root_dir`` is not given: an evaluation's
    is its checkpoint's run; otherwise ``outputs/<last config's name>`` (or the model class's)."""
    if command in ("validate", "test", "predict") and ckpt_path and str(ckpt_path) not in CKPT_SHORTHANDS:
        return checkpoint_run(ckpt_path)
    if config_paths:
        return Path("outputs") / Path(str(config_paths[-1])).stem
    return Path("outputs") / str(class_path or "run").rsplit(".", 1)[-1].lower()


def evaluation_folder(
    command: str, data_args, model_args, explicit: Iterable[str], ckpt_path: str | None = None
) -> Path:
    """``eval/<split>[-<file>][-<checkpoint>][-<options>]`` for validate and test,
    ``predict/<input stem>[-<checkpoint>][-<options>]`` for predict. The file is named when given on
    the command line (``--data.validation_file``); the checkpoint when it is a run's other than
    ``best.ckpt`` (``last``); the options when they differ from the checkpoint's way of running
    (int8, onnx, an explicit ``--model.*``)."""
    explicit = set(explicit)
    if command == "predict":
        source = data_args.get("predict_file") if data_args is not None else None
        parts = [Path(str(source)).stem if source else "predict"]
    else:
        split = "validation" if command == "validate" else "test"
        parts = [split]
        source = data_args.get(f"{split}_file") if data_args is not None else None
        if source and f"data.{split}_file" in explicit:
            parts.append(Path(str(source)).stem)
    if ckpt_path and Path(ckpt_path).parent.name == "checkpoints" and Path(ckpt_path).stem != "best":
        parts.append(Path(ckpt_path).stem)
    for name, default in _OPTION_DEFAULTS.items():
        value = model_args.get(name, default)
        if value != default:
            parts.append(str(value))
    for key in sorted(explicit):
        group, _, name = key.partition(".")
        if group == "model" and name not in _OPTION_DEFAULTS and name not in _NOT_OPTIONS:
            parts.append(f"{name}-{model_args.get(name)}")
    name = "-".join(re.sub(r"[^\w.+=-]+", "_", part) for part in parts)
    return Path(PREDICT_FOLDER if command == "predict" else EVAL_FOLDER) / name


def written_since(directory: Path, started: float, skip: Iterable[str] = ()) -> list[str]:
    """The files under ``directory`` written since ``started`` (a ``time.time()``), as short names:
    ``metrics.json``, ``checkpoints/best.ckpt``, and a deeper folder as one ``logs/``. Top-level
    folders named in ``skip`` are left out."""
    names: dict[str, None] = {}
    if not directory.is_dir():
        return []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if relative.parts[0] in skip or relative.name.startswith(".") or not path.is_file():
            continue
        if path.stat().st_mtime < started:
            continue
        deep = len(relative.parts) > 2 or relative.parts[0] == "logs"
        names[f"{relative.parts[0]}/" if deep else relative.as_posix()] = None
    return list(names)


def summary_line(command: str, folder: Path, started: float, predictions: list[Path]) -> str:
    """The one line a Lightning command ends with: where its files went, extras named."""
    skip = EVALUATION_FOLDERS if command == "fit" else ()
    written = written_since(folder, started, skip)
    if command != "predict" or not predictions:
        return f"wrote {folder}/ ({', '.join(written) or 'nothing'})"
    first, home = predictions[0], predictions[0].parent
    shown, extras = {first.resolve()}, []
    for path in [*predictions[1:], *(folder / name for name in written)]:
        if path.resolve() not in shown:
            shown.add(path.resolve())
            extras.append(path.name if path.parent.resolve() == home.resolve() else str(path))
    return f"predictions: {first}" + (f" (also {', '.join(extras)})" if extras else "")


def now() -> float:
    """The start of a command, for ``written_since`` (a second early: filesystems with coarse
    timestamps round a file's time down)."""
    return time.time() - 1.0


# Extensions that name a format (the key) as well as its own.
_SAME_FORMAT = {
    ".conll": {".conll", ".txt", ".tsv", ".iob", ".bio"},
    ".jsonl": {".jsonl", ".ndjson"},
}
_noted: set[Path] = set()  # predictions files already noted for their extension


def predictions_path(predictions_file: str | None, folder: Path, default_name: str) -> Path:
    """``--data.predictions_file``, else ``default_name`` (whose extension is the content's format)
    in the command's folder. A file whose extension says another format gets a note, once."""
    if not predictions_file:
        return folder / default_name
    path = Path(predictions_file)
    written_as = Path(default_name).suffix
    if path.suffix.lower() not in _SAME_FORMAT.get(written_as, {written_as}) and path not in _noted:
        _noted.add(path)
        print(f"note: {path}: written as {written_as[1:]} (its extension says otherwise)", file=sys.stderr)
    return path
