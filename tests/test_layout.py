"""The house rules of the code base: no import cycles, pure rooms without Lightning, short files."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE_ROOMS = ("tasks/data", "tasks/features", "tasks/decoding", "tasks/metrics")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, at the top or inside functions."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            if node.module is None:  # from . import x: x is a module
                targets |= {f"{module}.{alias.name}" for alias in node.names}
            else:
                targets.add(module)
    return targets


def package_graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (package __init__ files are not layers)."""
    files = {module_name(p): p for p in (ROOT / package).rglob("*.py")}
    modules = {name for name, path in files.items() if path.name != "__init__.py"}
    return {
        name: {target for target in imported_modules(files[name]) if target in modules} - {name}
        for name in modules
    }


@pytest.mark.parametrize("package", ["tasks", "bert_core"])
def test_no_import_cycles(package):
    graph = package_graph(package)
    assert len(graph) > 5
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle


def test_pure_rooms_never_import_lightning():
    for room in PURE_ROOMS:
        for path in (ROOT / room).rglob("*.py"):
            lightning = {
                m for m in imported_modules(path) if m.split(".")[0] in ("lightning", "pytorch_lightning")
            }
            assert not lightning, f"{path.relative_to(ROOT)} imports {lightning}"
    # and not through what they import either
    modules = sorted(module_name(p) for room in PURE_ROOMS for p in (ROOT / room).rglob("*.py"))
    code = (
        f"import sys\nfor m in {modules!r}: __import__(m)\nassert 'lightning' not in sys.modules, 'lightning'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_files_stay_short():
    for package in ("tasks", "bert_core"):
        for path in (ROOT / package).rglob("*.py"):
            relative = str(path.relative_to(ROOT))
            lines = len(path.read_text(encoding="utf-8").splitlines())
            assert lines <= 500, f"{relative}: {lines} lines"


def test_module_and_data_module_meet_only_through_the_evaluation_interface():
    """Nothing reaches into a data module's internals from a module or callback: the base module
    asks for the evaluations (and whether a dev set exists), the resume callback tells it where to
    resume, class weights ask for the training label counts, metrics.json for the input lengths;
    those public methods are the whole
    interface, used directly (``trainer.datamodule.x(``) or through a local name for it."""
    import re

    allowed = {"evaluations", "has_split", "resume_training_at", "train_label_counts", "input_lengths"}
    for path in (ROOT / "tasks").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        names = set(re.findall(r"(\w+) = self\.trainer\.datamodule\b", text))
        users = "|".join(["trainer\\.datamodule", *(rf"(?<![.\w]){re.escape(n)}" for n in names)])
        for attribute in re.findall(rf"(?:{users})\.(\w+)", text):
            assert attribute in allowed, (
                f"{path.relative_to(ROOT)}: reaches into the data module's {attribute!r}"
            )
