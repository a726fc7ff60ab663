"""A sweep's results from its study: ``sweep.json`` (one entry per configuration and seed), the
table (per-seed metric, mean +- sd, wall time per configuration) and the best configuration's
``best.ckpt`` linked as ``<sweep dir>/best.ckpt``. Written by every worker after each trial: the
files always say where the whole study stands, whoever ran what."""

from __future__ import annotations

import os
import shutil
import statistics
from pathlib import Path
from typing import Any

from .io import atomic_open, write_json
from .sweep_grid import cell_of, describe

SWEEP_FILE = "sweep.json"
BEST_LINK = "best.ckpt"
PLOT_FILE = "sweep.png"
# Which of a cell's trials speaks for it (a completed one first; then the newest).
_RANK = {"COMPLETE": 4, "RUNNING": 3, "PRUNED": 2, "FAIL": 1, "WAITING": 0}


def summarize(sweep, study, show: bool = True) -> dict[str, Any]:
    """Write sweep.json (and the best link); print the table when ``show``."""
    chosen: dict[int, Any] = {}
    for trial in study.get_trials(deepcopy=False):
        cell = cell_of(trial, len(sweep.cells))
        if cell is None or trial.user_attrs.get("unused"):
            continue
        best = chosen.get(cell)
        if best is None or (_RANK[trial.state.name], trial.number) > (_RANK[best.state.name], best.number):
            chosen[cell] = trial
    entries = [_entry(sweep, cell, chosen.get(cell.index)) for cell in sweep.cells]
    configurations = _configurations(sweep, entries)
    best = _best(configurations, sweep.direction)
    summary = {
        "config": sweep.config,
        "study": sweep.study_name,
        "storage": sweep.storage_url,
        "grid": sweep.grid.source,
        "options": sweep.passthrough,
        "seeds": sweep.seeds,
        "metric": sweep.metric,
        "direction": sweep.direction,
        "trials": entries,
        "configurations": configurations,
        "best": best,
    }
    if best is not None:
        summary["best"]["checkpoint"] = str(link_best(sweep.directory, Path(best["run_dir"])))
    write_json(sweep.directory / SWEEP_FILE, summary)
    if show:
        print(table(summary))
    return summary


def _entry(sweep, cell, trial) -> dict[str, Any]:
    state = trial.state.name if trial is not None else "WAITING"
    metric = trial.value if state == "COMPLETE" else None
    if state == "PRUNED" and trial.intermediate_values:
        metric = trial.intermediate_values[max(trial.intermediate_values)]  # where it was stopped
    return {
        "configuration": cell.configuration,
        "options": cell.options,
        "seed": cell.seed,
        "state": state,
        "metric": metric,
        "run_dir": str(sweep.directory / cell.name),
        "trial": trial.number if trial is not None else None,
        "wall_s": trial.user_attrs.get("wall_s") if trial is not None else None,
    }


def _configurations(sweep, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and (sample) sd over the seeds each configuration completed."""
    grouped: dict[int, list[dict[str, Any]]] = {}
    for entry in entries:
        grouped.setdefault(entry["configuration"], []).append(entry)
    rows = []
    for index, group in grouped.items():
        done = [e for e in group if e["state"] == "COMPLETE"]
        values = [e["metric"] for e in done]
        rows.append(
            {
                "configuration": index,
                "options": group[0]["options"],
                "metrics": {str(e["seed"]): e["metric"] for e in group},
                "complete": len(done),
                "mean": statistics.fmean(values) if values else None,
                "sd": statistics.stdev(values) if len(values) > 1 else None,
                "wall_s": round(sum(e["wall_s"] or 0 for e in group), 1),
                "_best_run": max(
                    done, key=lambda e: e["metric"] * (1 if sweep.direction == "maximize" else -1)
                )["run_dir"]
                if done
                else None,
            }
        )
    return rows


def _best(configurations: list[dict[str, Any]], direction: str) -> dict[str, Any] | None:
    """The best mean among configurations done at every seed (else among those done at some)."""
    sign = 1 if direction == "maximize" else -1
    seeds = max((len(c["metrics"]) for c in configurations), default=0)
    for pool in (
        [c for c in configurations if c["complete"] == seeds],
        [c for c in configurations if c["complete"]],
    ):
        if pool:
            winner = max(pool, key=lambda c: (sign * c["mean"], -c["configuration"]))
            best = {k: winner[k] for k in ("configuration", "options", "mean", "sd", "complete")}
            best["run_dir"] = winner["_best_run"]  # its best seed's run
            break
    else:
        best = None
    for row in configurations:
        row.pop("_best_run")
    return best


def link_best(sweep_dir: Path, run_dir: Path) -> Path:
    """``<sweep dir>/best.ckpt`` -> the run's ``checkpoints/best.ckpt``: a relative symlink, or a copy
    where links are not allowed; replaced atomically (a temp name, then a rename)."""
    target = run_dir / "checkpoints" / "best.ckpt"
    link = sweep_dir / BEST_LINK
    if link.is_symlink() and os.readlink(link) == os.path.relpath(target, sweep_dir):
        return link
    temp = sweep_dir / f".{BEST_LINK}.{os.getpid()}.tmp"
    try:
        temp.unlink(missing_ok=True)
        os.symlink(os.path.relpath(target, sweep_dir), temp)
        os.replace(temp, link)
    except OSError:  # a filesystem without symlinks: a copy
        temp.unlink(missing_ok=True)
        with atomic_open(link, "wb", encoding=None) as handle, open(target, "rb") as source:
            shutil.copyfileobj(source, handle)
    return link


def table(summary: dict[str, Any]) -> str:
    """Configuration, per-seed metric, mean +- sd, wall time; the best one named below."""
    seeds = summary["seeds"]
    names = [describe(c["options"]) for c in summary["configurations"]]
    width = max([len("configuration"), *map(len, names)])
    short = {"RUNNING": "running", "PRUNED": "pruned", "FAIL": "failed", "WAITING": "-"}
    states = {(e["configuration"], str(e["seed"])): e["state"] for e in summary["trials"]}
    head = f"{'#':>3}  {'configuration':<{width}}" + "".join(f"  {'seed ' + str(s):>9}" for s in seeds)
    lines = [
        f"sweep {summary['study']}: {summary['metric']} on validation, {_count(len(names), 'configuration')} x "
        f"{_count(len(seeds), 'seed')} ({sum(e['state'] == 'COMPLETE' for e in summary['trials'])} of "
        f"{len(summary['trials'])} trials complete)",
        head + f"  {'mean +- sd':>17}  {'wall':>8}",
    ]
    for row, name in zip(summary["configurations"], names):
        cells = []
        for seed in seeds:
            state = states[(row["configuration"], str(seed))]
            value = row["metrics"].get(str(seed))
            cells.append(f"{value:9.4f}" if state == "COMPLETE" else f"{short[state]:>9}")
        mean = (
            "-"
            if row["mean"] is None
            else f"{row['mean']:.4f}" + ("" if row["sd"] is None else f" +- {row['sd']:.4f}")
        )
        lines.append(
            f"{row['configuration']:>3}  {name:<{width}}"
            + "".join(f"  {c}" for c in cells)
            + f"  {mean:>17}  {_clock(row['wall_s']):>8}"
        )
    best = summary["best"]
    if best is not None:
        sd = "" if best["sd"] is None else f" +- {best['sd']:.4f}"
        lines.append(
            f"best: #{best['configuration']} {describe(best['options'])}: {summary['metric']} {best['mean']:.4f}{sd} "
            f"over {_count(best['complete'], 'seed')}; {best['checkpoint']} -> {best['run_dir']}/checkpoints/best.ckpt"
        )
    return "\n".join(lines)


def _clock(seconds: float | None) -> str:
    seconds = int(seconds or 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def plot(summary: dict[str, Any], path: Path) -> Path | None:
    """Each configuration's seeds (grey) and mean +- sd (an error bar): ``sweep.png``; None when
    nothing is complete yet."""
    from .report import new_figure

    rows = [c for c in summary["configurations"] if c["complete"]]
    if not rows:
        return None
    figure, (ax,) = new_figure(max(5.0, 0.45 * len(rows) + 2.5), 4.0)
    for x, row in enumerate(rows):
        done = [
            e["metric"]
            for e in summary["trials"]
            if e["configuration"] == row["configuration"] and e["state"] == "COMPLETE"
        ]
        ax.scatter([x] * len(done), done, s=12, color="0.65", zorder=1)
    means = [r["mean"] for r in rows]
    ax.errorbar(range(len(rows)), means, yerr=[r["sd"] or 0.0 for r in rows], fmt="o", capsize=4, zorder=2)
    ax.set_xticks(
        range(len(rows)), [describe(r["options"]) for r in rows], rotation=60, ha="right", fontsize=7
    )
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.set_ylabel(f"{summary['metric']} (validation)")
    ax.set_title(f"sweep {summary['study']}: mean ± sd over seeds", fontsize=9)
    with atomic_open(path, "wb", encoding=None) as handle:
        figure.savefig(handle, format="png")
    return path


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
