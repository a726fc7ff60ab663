"""What a Lightning command can be refused for before Lightning is imported (seconds, on every
command): config files that are missing or not YAML, input files and checkpoints that do not exist,
a fit into a run directory that holds a run. Read from argv and the YAML configs alone.

Also the one place where a relative path in a config is resolved: against the working directory
first, then against the config file's directory (the value found there is passed on as an option
right after that config, so that later configs and the command line still override it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import registry
from .io import DataError, UserError
from .outputs import CKPT_SHORTHANDS, default_run
from .rundir import busy_run_error, run_files

# The data files each command reads.
SPLIT_FILES = {
    "fit": ("train_file", "validation_file"),
    "validate": ("validation_file",),
    "test": ("test_file",),
    "predict": ("predict_file",),
}
# Paths a config may give relative to itself: (dotted key, must exist). ``pretrained`` and a
# distillation ``teacher`` may also be a model name (the embedded encoder, a hub id): resolved
# when found next to the config, never refused here.
CONFIG_PATHS = (
    *((f"data.{name}", True) for name in ("train_file", "validation_file", "test_file", "predict_file")),
    ("data.validation_mismatched_file", False),  # MNLI's second dev set
    ("model.pretrained", False),
    ("model.teacher", False),
    ("ckpt_path", True),
)
# Lightning's names for checkpoints it finds itself, not paths.


@dataclass
class Invocation:
    """A Lightning command's argv and its config files, as read without Lightning."""

    command: str
    args: list[str]
    config_paths: list[str] = field(default_factory=list)
    configs: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, args: list[str]) -> Invocation:
        """Read (and check) the config files ``args`` name."""
        invocation = cls(args[0], list(args))
        for flag, value in zip(args, args[1:]):
            if flag in ("--config", "-c"):
                invocation.config_paths.append(value)
                invocation.configs.append(_read_config(value))
        return invocation

    def option(self, flag: str) -> str | None:
        """The last value of ``flag`` on the command line (``--flag value`` or ``--flag=value``)."""
        found = None
        for arg, following in zip(self.args, [*self.args[1:], None]):
            if arg == flag:
                found = following
            elif arg.startswith(flag + "="):
                found = arg.split("=", 1)[1]
        return found

    def value(self, key: str) -> Any:
        """The value of a dotted key (``data.train_file``, ``trainer.max_epochs``, ``ckpt_path``) this
        command runs with: the command line's, else the last config's that sets it."""
        given = self.option_value(key)
        if given is not None:
            return given
        source = self.config_source(key)
        return None if source is None else _lookup(self.configs[source], key)

    def option_value(self, key: str) -> str | None:
        group, _, name = key.partition(".")
        flags = [f"--{key}"]
        if group in ("model", "data") and name:
            flags.append(f"--{group}.init_args.{name}")
            if name == "class_path":
                flags.append(f"--{group}")
        values = [(self._last_index(f), self.option(f)) for f in flags]
        values = [(i, v) for i, v in values if i >= 0]
        return max(values)[1] if values else None

    def _last_index(self, flag: str) -> int:
        indices = [i for i, a in enumerate(self.args) if a == flag or a.startswith(flag + "=")]
        return indices[-1] if indices else -1

    def config_source(self, key: str) -> int | None:
        """The index of the last config that sets ``key`` (None: none does)."""
        found = None
        for index, config in enumerate(self.configs):
            if _lookup(config, key) is not None:
                found = index
        return found

    def group_values(self, group: str) -> dict[str, Any]:
        """``--model.*`` / ``--data.*`` values this command runs with, by option name."""
        names = set()
        for config in self.configs:
            names |= set(_init_args(config.get(group)))
        names |= {key.partition(".")[2] for key in explicit_options(self.args) if key.startswith(f"{group}.")}
        return {name: self.value(f"{group}.{name}") for name in names if name != "class_path"}

    def run_dir(self) -> Path:
        """Where the command writes: ``--trainer.default_root_dir``, else ``outputs.default_run``'s."""
        given = self.value("trainer.default_root_dir")
        if given:
            return Path(given)
        class_path = self.value("model.class_path")
        return default_run(self.command, self.value("ckpt_path"), self.config_paths, class_path)


def explicit_options(args: list[str]) -> set[str]:
    """The model and data options given on the command line, as ``model.x`` / ``data.x`` (from
    ``--model.x`` or ``--model.init_args.x``)."""
    names = set()
    for arg in args:
        key = arg.split("=", 1)[0]
        for group in ("model", "data"):
            if key.startswith(f"--{group}."):
                names.add(f"{group}." + key.removeprefix(f"--{group}.").removeprefix("init_args."))
    return names


def preflight(args: list[str]) -> list[str]:
    """Check a Lightning command before Lightning is imported; the arguments to run it with (config-
    relative paths resolved). Help is answered elsewhere: nothing is checked for it."""
    invocation = Invocation.read(args)
    flags = {arg.split("=", 1)[0] for arg in args}
    if flags & {"--help", "-h", "--model.help", "--data.help"}:
        return args
    printing = "--print_config" in flags  # shows the values the command would run with, checks nothing
    args = _with_full_class_paths(_resolve_config_paths(invocation, refuse=not printing))
    invocation = Invocation(invocation.command, args, invocation.config_paths, invocation.configs)
    if printing:
        return _with_run_dir_shown(invocation)
    for name in SPLIT_FILES.get(invocation.command, ()):
        path = invocation.value(f"data.{name}")
        if path is not None and not Path(str(path)).is_file():
            raise DataError(path, "file not found")
    ckpt_path = invocation.value("ckpt_path")
    if ckpt_path and str(ckpt_path) not in CKPT_SHORTHANDS and not Path(str(ckpt_path)).exists():
        raise UserError(f"--ckpt_path {ckpt_path}: checkpoint not found")
    if invocation.command == "fit" and not ckpt_path and not _is_true(invocation.value("overwrite")):
        run_dir = invocation.run_dir()
        existing = run_files(run_dir)
        if existing:
            raise busy_run_error(run_dir, existing)
    return args


def _with_full_class_paths(args: list[str]) -> list[str]:
    """``--model.class_path SequenceClassifier``: the registry's class named in full, which
    jsonargparse knows only once the class is imported."""
    flags = {"--model": "model", "--model.class_path": "model", "--data": "data", "--data.class_path": "data"}
    expanded = list(args)
    for index, (flag, value) in enumerate(zip(args, args[1:])):
        if flag in flags and "." not in value:
            expanded[index + 1] = registry.full_class_path(flags[flag], value) or value
    return expanded


def _with_run_dir_shown(invocation: Invocation) -> list[str]:
    """``--print_config`` shows the run directory the command would write into, not null."""
    if invocation.value("trainer.default_root_dir") is not None:
        return invocation.args
    return [*invocation.args, "--trainer.default_root_dir", str(invocation.run_dir())]


def _resolve_config_paths(invocation: Invocation, refuse: bool = True) -> list[str]:
    """Relative paths a config gives that are not found from the working directory but are next
    to the config: passed on resolved, right after that config. One not found anywhere that the
    command reads: a UserError naming the config, the key and both places tried."""
    args = list(invocation.args)
    reads = {f"data.{name}" for name in SPLIT_FILES.get(invocation.command, ())} | {"ckpt_path"}
    insertions: dict[int, list[str]] = {}
    for key, must_exist in CONFIG_PATHS:
        source = invocation.config_source(key)
        if source is None or invocation.option_value(key) is not None:
            continue  # not from a config (a command-line path is the working directory's)
        value = str(_lookup(invocation.configs[source], key))
        config_path = invocation.config_paths[source]
        if Path(value).is_absolute() or Path(value).exists() or value in CKPT_SHORTHANDS:
            continue
        beside = Path(config_path).parent / value
        if beside.exists():
            insertions.setdefault(source, []).extend([f"--{key}", str(beside)])
        elif refuse and must_exist and key in reads:
            tried = Path(".") / value
            raise UserError(
                f"{config_path}: {key} '{value}' not found (tried ./{tried} and {beside})"
                if beside != tried
                else f"{config_path}: {key} '{value}' not found (tried ./{tried})"
            )
    # after each config's own pair, later ones first so that the indices stay right
    positions = [i for i, a in enumerate(args) if a in ("--config", "-c")]
    for source in sorted(insertions, reverse=True):
        at = positions[source] + 2
        args[at:at] = insertions[source]
    return args


def _read_config(path: str) -> dict[str, Any]:
    """A config file as a dict; a UserError for a missing file or one that is not YAML (naming the line)."""
    import yaml

    if not Path(path).is_file():
        raise UserError(f"--config {path}: file not found")
    try:
        content = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserError(f"{where}: not valid YAML ({problem})") from None
    return content if isinstance(content, dict) else {}


def _init_args(group: Any) -> dict[str, Any]:
    """A config's ``model:`` / ``data:`` options, with or without ``init_args:``."""
    if not isinstance(group, dict):
        return {}
    inner = group.get("init_args")
    return {
        **{k: v for k, v in group.items() if k != "init_args"},
        **(inner if isinstance(inner, dict) else {}),
    }


def _lookup(config: dict[str, Any], key: str) -> Any:
    group, _, name = key.partition(".")
    if not name:
        return config.get(group)
    if group in ("model", "data"):
        section = config.get(group)
        if name == "class_path":
            return section if isinstance(section, str) else _init_args(section).get("class_path")
        return _init_args(section).get(name)
    section = config.get(group)
    return section.get(name) if isinstance(section, dict) else None


def _is_true(value: Any) -> bool:
    return value is True or str(value).lower() == "true"
