"""The command line: ``python -m tasks <command> ...``.

The Lightning commands (fit, validate, test, predict) run ``tasks.app.BertTasksCLI``; the others
are plain functions in a table. Heavy imports wait until a command needs them, so that ``--help``
and the small commands start at once.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import sys
from pathlib import Path

from .help import command_help
from .io import UserError, one_line, user_error_in
from .plain_predict import plain_predict
from .preflight import Invocation, preflight
from .rundir import release_all
from .runtime import drop_onednn_primitive_cache, keep_freed_memory, quiet_lightning

# Subcommands besides LightningCLI's: name -> ("module:function", one line of help).
EXTRA_COMMANDS = {
    "score-squad": ("tasks.metrics.squad:main", "score a SQuAD predictions file with the official EM/F1"),
    "report": ("tasks.report:main", "draw a run's curves and per-task pictures into report.html"),
    "prune": (
        "tasks.prune:main",
        "remove the least important attention heads and/or top layers of a checkpoint",
    ),
    "export": ("tasks.export:main", "export a fine-tuned checkpoint to Hugging Face format or ONNX"),
    "sweep": ("tasks.sweep:main", "fine-tune a grid of configurations over seeds as one resumable study"),
    "serve": (
        "tasks.serve:main",
        "serve a fine-tuned checkpoint over HTTP (LitServe, batched by token budget)",
    ),
}
LIGHTNING_COMMANDS = {
    "fit": "fine-tune on the train file, validating on the dev file each epoch",
    "validate": "score a checkpoint on the dev file",
    "test": "score a checkpoint on the test file",
    "predict": "predict on a file, writing predictions into the run's predict/<input>/ folder",
}


def print_help() -> None:
    print("usage: python -m tasks <command> [--config configs/<name>.yaml] [--key value ...]\n\ncommands:")
    for name, line in {**LIGHTNING_COMMANDS, **{k: v for k, (_, v) in EXTRA_COMMANDS.items()}}.items():
        print(f"  {name:<12}{line}")
    configs = _shipped_configs()
    if configs:
        print(f"\nconfigs: {' '.join(str(c) for c in configs)}")
    print("\n'python -m tasks <command> --help' lists a command's options.")


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every command, Lightning's and the others, ends here: a user error (bad
    input, options, files, a full disk, a busy run directory) prints one line and exits 2; an
    unexpected error keeps its traceback (exit 1)."""
    args = sys.argv[1:] if argv is None else argv
    failed = True
    try:
        code = _run(args)
        failed = code != 0
        return code
    except argparse.ArgumentError as err:
        print(f"error: {parse_error_message(err, args)}", file=sys.stderr)
        return 2
    except Exception as err:
        user_error = user_error_in(err)
        if user_error is None:
            raise
        print(f"error: {one_line(user_error)}", file=sys.stderr)
        return 2
    finally:
        # the run directory's lock: released with the command, also when run in-process; a failed
        # command's logs go with it from a directory that held nothing before
        release_all(failed=failed)


def _run(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print_help()
        return 0
    if args[0] in EXTRA_COMMANDS:
        module_name, function = EXTRA_COMMANDS[args[0]][0].split(":")
        return getattr(importlib.import_module(module_name), function)(args[1:])
    args = _prepare_args(args)
    if args[0] in LIGHTNING_COMMANDS and _wants_help(args):
        # Read from the source, without Lightning (None: a class of the user's, which jsonargparse describes).
        text = command_help(Invocation.read(args), LIGHTNING_COMMANDS[args[0]])
        if text is not None:
            print(text)
            return 0
    if args[0] in LIGHTNING_COMMANDS:
        args = preflight(args)  # refusals that need no Lightning come before it is imported
    if args[0] == "predict" and (code := plain_predict(args)) is not None:
        return code  # nothing Lightning-specific asked for: the plain predictor (tasks.plain_predict)
    if args[0] in ("validate", "test", "predict"):
        drop_onednn_primitive_cache()
        args = with_checkpoint_classes(args)
    if args[0] in LIGHTNING_COMMANDS and not _has_option(
        args, "--config", "-c", "--model", "--data", "--help", "-h", "--print_config"
    ):
        raise UserError(
            f"choose a task config: python -m tasks {args[0]} --config configs/<name>.yaml; "
            f"configs: {' '.join(str(c) for c in _shipped_configs()) or '(none found under configs/)'}"
        )
    quiet_lightning()
    if args[0] == "fit":
        keep_freed_memory()
    from .app import BertTasksCLI

    BertTasksCLI(args=args)
    return 0


def _wants_help(args: list[str]) -> bool:
    """``--help`` / ``-h``, or ``--model.help NAME`` / ``--data.help NAME``."""
    return any(arg.split("=", 1)[0] in ("--help", "-h", "--model.help", "--data.help") for arg in args)


def with_checkpoint_classes(args: list[str]) -> list[str]:
    """``predict --ckpt_path CKPT`` without a config: the model and data classes of the task kind
    the checkpoint (or ONNX export) names, as if given with --model.class_path / --data.class_path.
    The classes come from the registry: a class path read from a file is never imported."""
    ckpt_path = _option_value(args, "--ckpt_path")
    if ckpt_path is None or _has_option(args, "--config", "-c", "--model.class_path", "--help", "-h"):
        return args
    from .source import Source

    source = Source(ckpt_path)
    if not source.is_task_model:
        if Path(ckpt_path).is_dir():
            raise UserError(
                f"--ckpt_path {ckpt_path}: a directory, not a checkpoint (nor an ONNX export directory)"
            )
        return args
    kind = source.task_kind()
    extra = ["--model.class_path", kind.module]
    if not _has_option(args, "--data.class_path"):
        extra += ["--data.class_path", kind.data_module]
    return [args[0], *extra, *args[1:]]


def _option_value(args: list[str], name: str) -> str | None:
    for flag, value in zip(args, [*args[1:], None]):
        if flag == name:
            return value
        if flag.startswith(name + "="):
            return flag.split("=", 1)[1]
    return None


def _prepare_args(args: list[str]) -> list[str]:
    """``--key -3e-5`` -> ``--key=-3e-5`` (argparse takes a negative number in exponent form for an
    option). Config files are checked (as YAML, and against the paths they name) by ``preflight``."""
    prepared: list[str] = []
    for arg in args:
        if (
            prepared
            and prepared[-1].startswith("--")
            and "=" not in prepared[-1]
            and _is_negative_number(arg)
        ):
            prepared[-1] = f"{prepared[-1]}={arg}"
        else:
            prepared.append(arg)
    return prepared


def _is_negative_number(text: str) -> bool:
    try:
        return text.startswith("-") and float(text) <= 0
    except ValueError:
        return False


def parse_error_message(err: argparse.ArgumentError, args: list[str]) -> str:
    """jsonargparse's error (a nest of 'Parser key' lines and union subtypes) in one or two lines:
    the option, the problem, and the config file when the option came from one."""
    message = str(err)
    keys = re.findall(r'Parser key "([^"]+)"', message)
    rejected = re.search(r"Option '([^']+)' is not accepted", message) or re.search(
        r'No action for key "([^"]+)"', message
    )
    expected = re.search(r"(Expected a .*?Got value: .*)", message)
    if rejected:
        keys.append(rejected.group(1))
    option = "--" + ".".join(dict.fromkeys(keys)) if keys else None
    if rejected:
        problem = "no such option" + _did_you_mean(message, rejected.group(1))
    elif expected:
        problem = expected.group(1).replace("<class '", "").replace("'>", "")
    else:
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        problem = lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"
    given_on_command_line = option is not None and any(a.split("=", 1)[0] == option for a in args)
    configs = [value for flag, value in zip(args, args[1:]) if flag in ("--config", "-c")]
    source = f" (in {', '.join(configs)})" if configs and option and not given_on_command_line else ""
    return f"{option}{source}: {problem}" if option else problem


def _did_you_mean(message: str, name: str) -> str:
    """The closest option of the class the error names, as a hint."""
    class_path = re.search(r"class_path '([\w.]+)'", message)
    if class_path is None:
        return ""
    import inspect

    module_name, _, class_name = class_path.group(1).rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    names = {
        p
        for klass in getattr(cls, "__mro__", ())
        if "__init__" in vars(klass)
        for p in inspect.signature(klass.__init__).parameters
        if p not in ("self", "args", "kwargs")
    }
    close = difflib.get_close_matches(name, sorted(names), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _shipped_configs() -> list[Path]:
    return sorted(Path("configs").glob("*.yaml"))


def _has_option(args: list[str], *names: str) -> bool:
    """Whether one of ``names`` (or an option under it: ``--model`` covers ``--model.class_path``) is given."""
    keys = [arg.split("=", 1)[0] for arg in args]
    return any(key == name or key.startswith(name + ".") for key in keys for name in names)


def __getattr__(name: str):
    if name == "BertTasksCLI":  # the Lightning application, imported on first use
        from .app import BertTasksCLI

        return BertTasksCLI
    raise AttributeError(name)
