"""What a sweep runs: the grid of configurations (the BERT paper's, or a YAML file's) times the seeds,
as a list of cells, each one ordinary ``fit``. Pure: reads YAML and the classes' source, no Lightning.

A grid file maps options to a list of values (every combination is run) or to a range
(``{low, high, log, step}``) from which ``samples`` configurations are drawn::

    model.learning_rate: [5.0e-5, 3.0e-5, 2.0e-5]
    data.batch_size: [16, 32]
    model.warmup_ratio: {low: 0.0, high: 0.2}
    samples: 8
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import registry
from .io import UserError

# The BERT paper's fine-tuning grid (section A.3): the best on dev is kept.
PAPER_GRID: dict[str, list[Any]] = {
    "model.learning_rate": [5e-5, 3e-5, 2e-5],
    "data.batch_size": [16, 32],
    "trainer.max_epochs": [2, 3, 4],
}
GROUPS = ("model", "data", "trainer")
RANGE_KEYS = {"low", "high", "log", "step"}
SAMPLES_KEY = "samples"


@dataclass(frozen=True)
class Cell:
    """One configuration at one seed: one trial, one run directory."""

    index: int
    configuration: int
    options: dict[str, Any]
    seed: int

    @property
    def name(self) -> str:
        """The run directory's name: ``03-learning_rate5e-05-batch_size16-max_epochs2-seed42``."""
        parts = [f"{self.configuration:02d}"]
        parts += [f"{key.partition('.')[2]}{_short(value)}" for key, value in self.options.items()]
        return re.sub(r"[^\w.+=-]+", "_", "-".join([*parts, f"seed{self.seed}"]))

    def fit_options(self) -> list[str]:
        """The cell's options as command-line options of ``fit``."""
        options = [f"--{key}={_cli_value(value)}" for key, value in self.options.items()]
        return [*options, f"--seed_everything={self.seed}"]


@dataclass(frozen=True)
class Grid:
    lists: dict[str, list[Any]]  # every combination of these
    ranges: dict[str, dict[str, Any]]  # sampled: {"low", "high", "log", "step"}
    samples: int  # configurations drawn from the ranges (with the lists' values drawn too)
    source: str  # "paper" or the file

    def configurations(self) -> list[dict[str, Any]]:
        """The configurations, the same list in every worker (draws are seeded)."""
        if not self.ranges:
            keys = list(self.lists)
            return [dict(zip(keys, values)) for values in itertools.product(*self.lists.values())]
        import optuna

        # Drawn once, at random with a fixed seed: every worker computes the same configurations.
        draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        distributions = self.distributions()
        configurations = []
        for _ in range(self.samples):
            trial = draw.ask(distributions)
            configurations.append({key: trial.params[key] for key in distributions})
            draw.tell(trial, 0.0)
        return configurations

    def distributions(self) -> dict[str, Any]:
        """Optuna's distributions of the options (what the study records as each trial's params)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        found: dict[str, Any] = {key: CategoricalDistribution(values) for key, values in self.lists.items()}
        for key, spec in self.ranges.items():
            integer = all(isinstance(spec.get(k), int) for k in ("low", "high", "step") if k in spec)
            kind = IntDistribution if integer else FloatDistribution
            step = spec.get("step", 1 if integer else None)
            found[key] = kind(spec["low"], spec["high"], log=bool(spec.get("log")), step=step)
        return found


def cells(configurations: list[dict[str, Any]], seeds: list[int]) -> list[Cell]:
    """Every configuration at every seed, configuration by configuration."""
    pairs = itertools.product(enumerate(configurations), seeds)
    return [Cell(i, c, options, seed) for i, ((c, options), seed) in enumerate(pairs)]


def cell_of(trial, n_cells: int) -> int | None:
    """The cell a trial runs: trial n < n_cells runs cell n; a later trial says which in its attrs."""
    return trial.user_attrs.get("cell", trial.number if trial.number < n_cells else None)


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--seeds {text}: not a comma-separated list of integers (e.g. 42,43,44)") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {text}: give one or more different seeds (e.g. 42,43,44)")
    return seeds


def read_grid(spec: str) -> Grid:
    """``paper`` or a grid file, checked for its keys and values (one-line errors naming the line)."""
    if spec == "paper":
        return Grid(dict(PAPER_GRID), {}, 0, "paper")
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"--grid {spec}: not 'paper' and no such grid file")
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
        content = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
        raise UserError(f"{where}: not valid YAML ({getattr(err, 'problem', None) or err})") from None
    if not isinstance(content, dict) or not content:
        raise UserError(
            f"{path}: a grid file maps options to lists of values (model.learning_rate: [3.0e-5, 5.0e-5])"
        )
    lines = {str(k.value): k.start_mark.line + 1 for k, _ in root.value} if root is not None else {}
    lists: dict[str, list[Any]] = {}
    ranges: dict[str, dict[str, Any]] = {}
    samples = content.pop(SAMPLES_KEY, None)
    for key, value in content.items():
        where = f"{path}, line {lines.get(str(key), '?')}"
        group, _, name = str(key).partition(".")
        if group not in GROUPS or not name or "." in name:
            raise UserError(
                f"{where}: unknown grid key {key!r} (keys are model.NAME, data.NAME, trainer.NAME, or {SAMPLES_KEY})"
            )
        if name == "default_root_dir" or str(key) == "seed_everything":
            raise UserError(f"{where}: {key} is the sweep's to choose (seeds: --seeds)")
        if isinstance(value, dict):
            unknown = set(value) - RANGE_KEYS
            if unknown or not {"low", "high"} <= set(value):
                raise UserError(
                    f"{where}: unknown grid key {sorted(unknown)[0]!r} in the range of {key}"
                    if unknown
                    else f"{where}: the range of {key} needs low and high"
                )
            if (
                not all(isinstance(value[k], (int, float)) for k in ("low", "high"))
                or value["low"] > value["high"]
            ):
                raise UserError(f"{where}: the range of {key}: low and high are numbers, low <= high")
            if value.get("log") and value.get("step") is not None:
                raise UserError(f"{where}: the range of {key}: log and step do not go together")
            ranges[str(key)] = value
        else:
            values = value if isinstance(value, list) else [value]
            if not values or not all(v is None or isinstance(v, (str, int, float, bool)) for v in values):
                raise UserError(f"{where}: {key}: a list of plain values (numbers, strings, true/false)")
            lists[str(key)] = values
    if ranges and not (isinstance(samples, int) and samples > 0):
        raise UserError(f"{path}: ranges are sampled: give '{SAMPLES_KEY}: N', the number of configurations")
    if samples is not None and not ranges:
        raise UserError(
            f"{path}, line {lines.get(SAMPLES_KEY, '?')}: {SAMPLES_KEY} needs a range to draw from"
        )
    return Grid(lists, ranges, samples or 0, str(path))


def check_options_exist(grid: Grid, model_class: str | None, data_class: str | None, config: str) -> None:
    """Every option the grid names is one of the config's model, data or Trainer classes' (read from
    the source, as ``--help`` does); a class outside the registry is not checked."""
    from .help import class_options, trainer_options

    known = {"trainer": {o.name for o in trainer_options()}}
    for group, name in (("model", model_class), ("data", data_class)):
        class_path = registry.full_class_path(group, name)
        known[group] = {o.name for o in class_options(class_path)[1]} if class_path else None
    for key in [*grid.lists, *grid.ranges]:
        group, _, name = key.partition(".")
        if known[group] is not None and name not in known[group]:
            owner = (
                "lightning's Trainer"
                if group == "trainer"
                else f"{config}'s {group} ({model_class if group == 'model' else data_class})"
            )
            raise UserError(f"{grid.source}: {key}: not an option of {owner}")


def describe(options: dict[str, Any]) -> str:
    """``learning_rate=5e-05 batch_size=16``: a configuration, for the table."""
    return " ".join(f"{key.partition('.')[2]}={_short(value)}" for key, value in options.items())


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _cli_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
