"""``python -m tasks fit|validate|test|predict [--config X] --help``, answered without importing
Lightning (which costs seconds before anything is printed).

The options are read from the source: the ``__init__`` signatures and "Args:" docstrings of the
config's model and data classes (the registry's rows, their bases followed through ``**kwargs`` as
jsonargparse does), and of Lightning's ``Trainer``, parsed with ``ast`` and never imported. A
default shown is the config's value where the config sets one. A class outside the registry (a
user's own ``class_path``) is not described here: the caller falls back to jsonargparse's help.
"""

from __future__ import annotations

import ast
import importlib.util
import textwrap
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from . import registry
from .io import UserError
from .options import COMMAND_OPTIONS, LINKED_OPTIONS, TRAINER_DEFAULTS
from .preflight import Invocation

PACKAGE_DIR = Path(__file__).resolve().parent
# The Trainer's methods' arguments that are not options (objects the CLI passes itself).
_NOT_OPTIONS = {"self", "model", "datamodule", "dataloaders", "train_dataloaders", "val_dataloaders"}
# Options the CLI sets itself (from others): "model.task", ...
_LINKED = {target.replace(".init_args.", ".") for _, target, _ in LINKED_OPTIONS}


@dataclass(frozen=True)
class Option:
    name: str
    annotation: str
    default: Any
    doc: str


# LightningCLI's own option.
_SEED = Option(
    "seed_everything",
    "bool | int",
    True,
    "an int: seed_everything with it before the classes are made; true: a random seed.",
)


def command_help(invocation: Invocation, summary: str) -> str | None:
    """The help text of ``invocation`` (a Lightning command with ``--help``, ``--model.help X`` or
    ``--data.help X``), or None when a class it names is not one of the registry's."""
    for group in ("model", "data"):
        wanted = invocation.option(f"--{group}.help")
        if wanted is not None:
            class_path = registry.full_class_path(group, wanted)
            if class_path is None and "." not in wanted:
                known = ", ".join(_short_names(group))
                raise UserError(f"--{group}.help {wanted}: not a {group} class of this app (known: {known})")
            if class_path is None:
                return None  # a class path of the user's: jsonargparse describes it
            return _class_section(group, class_path, {}, None)
    model_path = registry.full_class_path("model", invocation.value("model.class_path"))
    data_path = registry.full_class_path("data", invocation.value("data.class_path"))
    if invocation.value("model.class_path") and model_path is None:
        return None
    if invocation.value("data.class_path") and data_path is None:
        return None
    configs = ", ".join(invocation.config_paths)
    lines = [
        f"usage: python -m tasks {invocation.command} [--config CONFIG.yaml ...] [--<group>.<name> VALUE ...]",
        "",
        f"{invocation.command}: {summary}.",
        f"Defaults shown are {configs}'s values where it sets them."
        if configs
        else "Defaults shown are the classes' own (a config sets its task's values).",
        "",
        "options:",
        _format("  -c, --config CONFIG", "a task config (YAML); later configs and options override it"),
        _format(
            "  --model.help, --data.help NAME",
            "list the options of a model or data class (its name alone is enough: SequenceClassifier)",
        ),
        _format(
            "  --print_config", "print the configuration these options make (run directory included) and exit"
        ),
    ]
    lines += [
        _entry(f"--{option.name}", option, invocation.value(option.name))
        for option in [_SEED, *_command_options(invocation.command), *_app_options()]
    ]
    lines += ["", "Trainer options (lightning.pytorch.Trainer):"]
    lines += [
        _entry(f"--trainer.{option.name}", option, invocation.value(f"trainer.{option.name}"))
        for option in _trainer_options()
    ]
    for group, class_path in (("model", model_path), ("data", data_path)):
        if class_path is None:
            short = ", ".join(_short_names(group))
            lines += [
                "",
                f"--{group}: a config chooses it (or --{group}.class_path NAME): {short}.",
                f"  'python -m tasks {invocation.command} --{group}.help NAME' lists its options.",
            ]
        else:
            lines += ["", _class_section(group, class_path, invocation.group_values(group), configs)]
    return "\n".join(lines)


def _short_names(group: str) -> list[str]:
    return [path.rsplit(".", 1)[1] for path in registry.class_paths(group)]


def _class_section(group: str, class_path: str, values: dict[str, Any], configs: str | None) -> str:
    first_line, options = class_options(class_path)
    lines = [f"{class_path} (--{group}.<name>): {first_line}"]
    lines += [
        _entry(f"--{group}.{o.name}", o, values.get(o.name))
        for o in options
        if f"{group}.{o.name}" not in _LINKED
    ]
    linked = [f"{source} -> {target}" for source, target, _ in LINKED_OPTIONS if target.startswith(group)]
    lines.append(f"  (set by the CLI, not by hand: {'; '.join(linked)})")
    return "\n".join(lines)


def _entry(flag: str, option: Option, value: Any) -> str:
    default = option.default if value is None else value
    detail = (
        f"(type: {option.annotation}, default: {_show(default)})"
        if option.annotation
        else f"(default: {_show(default)})"
    )
    return _format(f"  {flag} {option.name.upper()}", f"{option.doc} {detail}".strip())


def _format(flag: str, text: str) -> str:
    body = textwrap.fill(text, width=96, initial_indent=" " * 8, subsequent_indent=" " * 8)
    return f"{flag}\n{body}"


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


# -- reading the source -------------------------------------------------------------------------


def _command_options(command: str) -> list[Option]:
    """The Trainer method's own options (``ckpt_path``, ``verbose``, ...)."""
    trainer = _lightning_trainer_class()
    if trainer is None:
        return []
    method = _function(trainer[0], command)
    return [o for o in _signature(method, trainer[1]) if o.name not in _NOT_OPTIONS] if method else []


def _app_options() -> list[Option]:
    return [
        Option(name, type_.__name__, default, doc) for name, (type_, default, doc) in COMMAND_OPTIONS.items()
    ]


def trainer_options() -> list[Option]:
    """Lightning's Trainer options, read from its source (none if it moved)."""
    return _trainer_options()


def _trainer_options() -> list[Option]:
    trainer = _lightning_trainer_class()
    if trainer is None:
        return []
    options = _signature(_function(trainer[0], "__init__"), trainer[1])
    return [Option(o.name, o.annotation, TRAINER_DEFAULTS.get(o.name, o.default), o.doc) for o in options]


@cache
def _lightning_trainer_class() -> tuple[ast.ClassDef, dict[str, str]] | None:
    """Lightning's Trainer class node, found without importing Lightning (None if it moved)."""
    spec = importlib.util.find_spec("lightning")  # a top-level package: located, not executed
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "pytorch" / "trainer" / "trainer.py"
    if not path.is_file():
        return None
    node = _classes(path).get("Trainer")
    return (node, {}) if node is not None else None


@cache
def _classes(path: Path) -> dict[str, ast.ClassDef]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


@cache
def _imports(path: Path) -> dict[str, str]:
    """``from .x import Name`` in one of our modules: name -> "tasks.x.Name"."""
    names = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            for alias in node.names:
                names[alias.asname or alias.name] = f"tasks.{node.module}.{alias.name}"
    return names


def _locate(class_path: str) -> tuple[ast.ClassDef, Path] | None:
    module, _, name = class_path.rpartition(".")
    if not module.startswith("tasks."):
        return None
    path = PACKAGE_DIR.joinpath(*module.split(".")[1:]).with_suffix(".py")
    node = _classes(path).get(name) if path.is_file() else None
    return (node, path) if node is not None else None


def _bases(class_path: str) -> list[str]:
    located = _locate(class_path)
    if located is None:
        return []
    node, path = located
    module = class_path.rpartition(".")[0]
    bases = []
    for base in node.bases:
        if isinstance(base, ast.Name):
            bases.append(_imports(path).get(base.id) or f"{module}.{base.id}")
    return [b for b in bases if _locate(b) is not None]


def _mro(class_path: str) -> list[str]:
    """Python's C3 linearisation, over the bases found in our own source."""
    sequences = [_mro(base) for base in _bases(class_path)] + [_bases(class_path)]
    order = [class_path]
    while any(sequences):
        for sequence in sequences:
            head = sequence[0] if sequence else None
            if head and not any(head in s[1:] for s in sequences):
                break
        else:
            break  # not linearisable: stop with what is known
        order.append(head)
        sequences = [[c for c in s if c != head] for s in sequences]
    return order


def class_options(class_path: str) -> tuple[str, list[Option]]:
    """The first line of a task class's docstring and its options, through ``**kwargs`` to its bases."""
    options: dict[str, Option] = {}
    first_line = ""
    for klass in _mro(class_path):
        node, _ = _locate(klass)
        first_line = first_line or (ast.get_docstring(node) or "").split("\n")[0]
        init = _function(node, "__init__")
        if init is None:
            continue
        docs = _arg_docs(ast.get_docstring(node) or "") | _arg_docs(ast.get_docstring(init) or "")
        for option in _signature(init, docs):
            options.setdefault(option.name, option)
        if init.args.kwarg is None:
            break  # it does not pass options on to its bases
    # documentation of an option may sit on a base class, where it is declared first
    for klass in _mro(class_path):
        node, _ = _locate(klass)
        docs = _arg_docs(ast.get_docstring(node) or "")
        for name, option in options.items():
            if not option.doc and name in docs:
                options[name] = Option(option.name, option.annotation, option.default, docs[name])
    return first_line, list(options.values())


def _function(node: ast.ClassDef, name: str) -> ast.FunctionDef | None:
    return next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == name), None)


def _signature(function: ast.FunctionDef, docs: dict[str, str]) -> list[Option]:
    docs = docs or _arg_docs(ast.get_docstring(function) or "")
    arguments = function.args
    positional = arguments.posonlyargs + arguments.args
    defaults = [None] * (len(positional) - len(arguments.defaults)) + list(arguments.defaults)
    pairs = list(zip(positional, defaults)) + list(zip(arguments.kwonlyargs, arguments.kw_defaults))
    options = []
    for argument, default in pairs:
        if argument.arg == "self":
            continue
        annotation = ast.unparse(argument.annotation) if argument.annotation is not None else ""
        options.append(Option(argument.arg, annotation, _literal(default), docs.get(argument.arg, "")))
    return options


def _literal(node: ast.expr | None) -> Any:
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except ValueError:
        return ast.unparse(node)


def _arg_docs(docstring: str) -> dict[str, str]:
    """A Google-style "Args:" section: ``name: text`` (or ``a, b: text``), continued on deeper lines."""
    docs: dict[str, str] = {}
    lines = docstring.split("\n")
    if "Args:" not in (line.strip() for line in lines):
        return docs
    start = [line.strip() for line in lines].index("Args:") + 1
    names: list[str] = []
    indent = None
    for line in lines[start:]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        if depth < indent:
            break  # the next section
        head, colon, text = line.strip().partition(":")
        if depth == indent and colon:
            names = [n.strip() for n in head.split(",")]
            for name in names:
                docs[name] = text.strip()
        else:
            for name in names:
                docs[name] = f"{docs[name]} {line.strip()}"
    return docs
