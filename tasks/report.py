"""``python -m tasks report RUN_DIR [--output DIR]``: a run's curves and per-task pictures in one page,
report.html (self-contained: PNGs as data URIs, inline CSS), with the PNGs beside it. matplotlib (a
dependency) is imported only here and draws on the Agg canvas, without pyplot. The run is read by
``tasks.run_record``."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections import namedtuple
from pathlib import Path
from statistics import fmean
from typing import Any

from .data.squad import read_squad
from .io import CommandParser, UserError, atomic_open
from .metrics.squad import evaluate, read_predictions
from .run_record import (
    Run,
    epoch_ends,
    latest_evaluation,
    load_run,
    main_metric,
    resolve_data_file,
    total_steps,
)
from .rundir import lock_run_directory

# Gold answer length in words (of the first gold answer): label, shortest, longest.
LENGTH_BINS = (("1", 1, 1), ("2", 2, 2), ("3", 3, 3), ("4-5", 4, 5), ("6-10", 6, 10), (">10", 11, math.inf))
NER_SCORES = ("precision", "recall", "f1")
PER_TYPE = re.compile(r"^(val|test)/(precision|recall|f1)_(.+)$")  # NER's per-entity-type metrics
NOT_SCORES = re.compile(r"loss|_thresh$|_examples|^val/(precision|recall|f1)_")  # not 0-1 scores: not drawn
COLOURS = ("#4c72b0", "#dd8452", "#55a868")  # bars; curves use the C0-C9 cycle, C3 (red) marks best.ckpt
LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.01, 1), "fontsize": "small", "borderaxespad": 0}
Rows = list[tuple[str, int, float, float]]  # (group, questions, EM, F1)
# A PNG's file name, its one-line caption, the matplotlib figure, and HTML shown under it (the numbers).
Picture = namedtuple("Picture", "name caption figure table", defaults=("",))


def new_figure(width: float, height: float, rows: int = 1, sharex: bool = True):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # the Agg backend, without pyplot's global state
    return figure, list(figure.subplots(rows, 1, sharex=sharex, squeeze=False)[:, 0])


def column(rows: list[dict], key: str, x: str = "step") -> tuple[list[float], list[float]]:
    pairs = [(r[x], r[key]) for r in rows if r.get(key) is not None and r.get(x) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def training_picture(run: Run) -> Picture | None:
    steps, loss = column(run.log, "train/loss")
    if not steps:
        run.warn(f"{run.log_path}: no train/loss values: no training curve")
        return None
    lr_steps, lr = column(run.log, "train/lr")
    figure, axes = new_figure(8, 5.5 if lr else 3.5, 2 if lr else 1)
    many = len(loss) >= 30
    style = {"alpha": 0.4} if many else {"marker": "o", "ms": 3}  # few points: each one visible
    axes[0].plot(steps, loss, color=COLOURS[0], lw=1, label="train/loss", **style)
    if many:  # a centred moving average over a 20th of the run
        half = max(2, len(loss) // 40)
        smooth = [fmean(loss[max(0, i - half) : i + half + 1]) for i in range(len(loss))]
        axes[0].plot(steps, smooth, color=COLOURS[0], lw=2, label=f"moving average ({2 * half + 1} steps)")
    ends = epoch_ends(run.log)
    for k, ax in enumerate(axes):
        for i, end in enumerate(ends if len(ends) < 30 else []):
            ax.axvline(end, color="0.6", lw=0.8, ls=":", label="end of epoch" if i + k == 0 else None)
        ax.grid(alpha=0.3)
    readable_limits(axes[0], steps, loss)
    axes[0].set_ylabel("training loss")
    axes[0].legend(fontsize="small")
    if lr:
        axes[1].plot(lr_steps, lr, color=COLOURS[1], lw=1.5)
        axes[1].set_ylabel("learning rate")
        axes[1].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    axes[-1].set_xlabel("step")
    axes[-1].xaxis.get_major_locator().set_params(integer=True)
    figure.suptitle(f"{run.directory.name}: training loss and learning rate by step")
    source = run.log_path.relative_to(run.directory)
    total, points = total_steps(run.log), "one point" if len(steps) == 1 else f"{len(steps)} points"
    caption = f"Training loss and learning rate by optimizer step: {total} steps, the loss logged at {points}"
    caption += f" (from {source})" + (
        f"; dotted lines end epochs, at steps {list_steps(ends)}." if ends else "."
    )
    return Picture("train_loss_lr.png", caption, figure)


def list_steps(steps: list[int], shown: int = 6) -> str:
    """``8, 16, 24`` or, for many, ``8, 16, 24, 32, 40, ..., 392 (49 ends)``."""
    if len(steps) <= shown:
        return ", ".join(map(str, steps))
    return f"{', '.join(map(str, steps[: shown - 1]))}, ..., {steps[-1]} ({len(steps)} ends)"


def validation_picture(run: Run) -> Picture | None:
    main = main_metric(run)
    rows = [r for r in run.log if any(v is not None for k, v in r.items() if k.startswith("val/"))]
    if not rows:
        run.warn(f"{run.log_path}: no validation rows: no validation curve")
        return None
    by_step = len({r.get("epoch") for r in rows}) < len(rows)  # several validations an epoch
    x = "step" if by_step else "epoch"
    logged = sorted({k for r in rows for k, v in r.items() if k.startswith("val/") and v is not None})
    ranges = {k: (min(v), max(v)) for k in logged if (v := column(rows, k, x)[1])}
    in_unit = [k for k, (low, high) in ranges.items() if low >= 0 and high <= 1 + 1e-6]
    scores = [k for k in logged if not NOT_SCORES.search(k) and (k == main or k in in_unit)]
    losses = [k for k in logged if k.startswith("val/loss") or k == main and main not in scores]
    panels = [(name, keys) for name, keys in (("score (0-1)", scores), ("loss", losses)) if keys]
    figure, axes = new_figure(9, 2 + 2 * len(panels), len(panels))
    for ax, (name, keys) in zip(axes, panels):
        keys = sorted(keys, key=lambda k: k != main)  # the main metric first, in bold
        for i, key in enumerate(keys):  # styles vary so that equal curves stay visible
            style = {"marker": "osD^v<>p"[i % 8], "ls": ("-", "--", "-.", ":")[i % 4], "ms": 4, "lw": 1.2}
            style["color"] = f"C{(0, 1, 2, 4, 5, 6, 7, 8, 9)[i % 9]}"  # red (C3) marks best.ckpt
            if key == main:
                style.update(marker="o", ls="-", lw=2.6, zorder=3, label=f"{key} (main)")
            ax.plot(*column(rows, key, x), **{"label": key, **style})
        values = [v for key in keys for v in column(rows, key, x)[1]]
        means = epoch_means(run.log, "train/loss") if name == "loss" and not by_step else {}
        if means:  # what the model fitted, beside what it validated
            counts = sorted(n for _, n in means.values())
            of = f"{counts[0]}" if counts[0] == counts[-1] else f"{counts[0]}-{counts[-1]}"
            label = f"train/loss (mean of its {of} logged step{'s' * (counts[-1] > 1)} an epoch)"
            ax.plot(list(means), [m for m, _ in means.values()], "s--", ms=3, color="0.5", label=label)
            values += [m for m, _ in means.values()]
        readable_limits(ax, [r[x] for r in rows], values, unit=name != "loss")
        ax.set_ylabel(name)
    caption = f"Validation metrics by {x} (the main metric, {main}, in bold; losses below where logged)."
    if run.best is not None and run.best["epoch"] is not None:
        best = run.best["epoch"] if not by_step else run.best["global_step"]
        label = f"best.ckpt (epoch {run.best['epoch']}, step {run.best['global_step']})"
        for k, ax in enumerate(axes):
            ax.axvline(best, color="C3", ls="--", lw=1.5, label=None if k else label, zorder=1)
        xs, ys = column(rows, main, x)
        if best in xs:
            ax = axes[next(i for i, (_, keys) in enumerate(panels) if main in keys)]
            ax.plot([best], [ys[xs.index(best)]], "*", ms=16, color="C3", zorder=4)
        caption += f" The dashed red line and the star mark best.ckpt (epoch {run.best['epoch']}, by {main})."
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(**LEGEND)
    axes[-1].set_xlabel(x if x == "epoch" else "step (optimizer steps completed)")
    axes[-1].xaxis.get_major_locator().set_params(integer=True)
    figure.suptitle(f"{run.directory.name}: validation metrics by {x}")
    return Picture("val_metrics.png", caption, figure)


def epoch_means(rows: list[dict], key: str) -> dict[int, tuple[float, int]]:
    """{epoch: (mean of ``key``'s logged values in it, how many)}: the mean of what was logged (every
    log_every_n_steps-th step), not of every step."""
    values: dict[int, list[float]] = {}
    for epoch, value in zip(*column(rows, key, "epoch")):
        values.setdefault(int(epoch), []).append(value)
    return {epoch: (fmean(v), len(v)) for epoch, v in values.items()}


def readable_limits(ax, xs: list[float], ys: list[float], unit: bool = False) -> None:
    """Axis limits a reader can use when a series is one point or flat: matplotlib would centre it
    on a +-0.04 axis (or an offset of 1e-4 around a loss of 10.4). Scores (``unit``) then get the
    whole 0-1 range, other values 0 to a quarter above their largest; x gets one step either side."""
    if len(set(xs)) == 1:
        ax.set_xlim(xs[0] - 1, xs[0] + 1)
    else:
        ax.margins(x=0.05)
    low, high = min(ys, default=0.0), max(ys, default=0.0)
    if high - low <= 1e-3 * max(abs(low), abs(high), 1e-12) or len(ys) == 1:
        if unit:
            ax.set_ylim(-0.02, 1.05)
        elif low >= 0:
            ax.set_ylim(0, high * 1.25 or 1)
        else:
            ax.set_ylim(low * 1.25, high + abs(low) * 0.25)
    else:
        ax.margins(y=0.1)
    ax.ticklabel_format(axis="y", useOffset=False)


def confusion_pictures(run: Run) -> list[Picture]:
    pictures = []
    for suffix in ("", "_mm"):
        path = run.directory / f"confusion_matrix{suffix}.json"
        if not path.is_file():
            if not suffix:
                run.warn(f"{path} not found (regression tasks have none): no confusion matrix")
            continue
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            labels, matrix = [str(x) for x in document["labels"]], document["matrix"]
            if len(matrix) != len(labels) or any(len(row) != len(labels) for row in matrix):
                raise ValueError("the matrix is not labels x labels")
        except (ValueError, KeyError, TypeError) as err:
            run.warn(f"{path}: not a confusion matrix ({err}): skipped")
            continue
        command, config, data_file = latest_evaluation(run, path)
        data_file = run.init_args("data", config).get("validation_mismatched_file") if suffix else data_file
        caption = f"Confusion matrix of the latest evaluation ({command} on {data_file}): rows gold, columns predicted."
        pictures.append(Picture(path.stem + ".png", caption, confusion_figure(labels, matrix, run, path)))
    return pictures


def confusion_figure(labels: list[str], matrix: list[list[int]], run: Run, path: Path):
    n, longest = len(labels), max(len(x) for x in labels)
    side = min(12.0, max(4.5, 1.5 + 0.55 * n + 0.07 * longest))
    figure, (ax,) = new_figure(side + 1.3, side)
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    top, size = max(max(row) for row in matrix) or 1, max(5, min(13, 110 / n))
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            colour = "white" if count > top / 2 else "black"
            ax.text(j, i, str(count), ha="center", va="center", fontsize=size, color=colour)
    rotate = n > 3 and longest > 4 or longest > 12
    ax.set_xticks(range(n), labels, rotation=40 if rotate else 0, ha="right" if rotate else "center")
    ax.set_yticks(range(n), labels)
    ax.set(xlabel="predicted", ylabel="gold")
    total = sum(map(sum, matrix))
    accuracy = f"{sum(matrix[i][i] for i in range(n)) / total:.3f}" if total else "-"
    title = f"{run.directory.name}: {path.name}\n{total} examples, accuracy {accuracy}"
    ax.set_title(title, fontsize="medium")
    figure.colorbar(image, ax=ax, shrink=0.8, label="count")
    return figure


def grouped_bars(ax, groups: list[str], series: dict[str, list[float]]) -> None:
    """Bars per group, one colour per series, each labelled with its value (so 0 stays visible)."""
    width, small = 0.8 / len(series), len(groups) * len(series) > 24
    for k, (name, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        bars = ax.bar(xs, [0 if math.isnan(v) else v for v in values], width, label=name, color=COLOURS[k])
        labels = ["" if math.isnan(v) else f"{v:.2f}" for v in values]
        ax.bar_label(bars, labels, fontsize=6.5 if small else 8, padding=1, rotation=90 if small else 0)
    rotate = len(groups) > 8 and max(map(len, groups)) > 6  # long names side by side would overlap
    ax.set_xticks(
        range(len(groups)), groups, rotation=30 if rotate else 0, ha="right" if rotate else "center"
    )
    ax.set(ylim=(0, 1.15), ylabel="score (0-1)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(**LEGEND)


def ner_picture(run: Run) -> Picture | None:
    splits: dict[str, set[str]] = {}
    for key in run.metrics:
        if match := PER_TYPE.match(key):
            splits.setdefault(match.group(1), set()).add(match.group(3))
    if not splits:
        run.warn("metrics.json has no val/precision_<TYPE>, val/recall_<TYPE>, val/f1_<TYPE>: no NER bars")
        return None
    width = max(8.0, 2.0 + 0.9 * (max(map(len, splits.values())) + 1))
    figure, axes = new_figure(width, 3.8 * len(splits), len(splits), sharex=False)
    value = {k: math.nan if v is None else v for k, v in run.metrics.items()}
    for ax, split in zip(axes, sorted(splits, key=lambda s: s != "val")):
        types = sorted(splits[split])
        suffixes = [*(f"_{t}" for t in types), ""]  # "": the micro average
        series = {m: [value.get(f"{split}/{m}{t}", math.nan) for t in suffixes] for m in NER_SCORES}
        grouped_bars(ax, [*types, "all (micro)"], series)
        ax.axvline(len(types) - 0.5, color="0.6", lw=0.8)
        ax.set_title(f"{split}: entity-level scores per type", fontsize="medium")
    figure.suptitle(f"{run.directory.name}: NER precision / recall / F1 by entity type")
    caption = "Entity-level precision, recall and F1 (seqeval) per entity type, from metrics.json; the last "
    caption += "group is the micro average over all types."
    return Picture("ner_per_type.png", caption, figure)


def answer_length_scores(examples, predictions: dict[str, str], version_2: bool) -> Rows:
    """(bin, questions, EM, F1) by gold answer length (words of the first gold answer), answerable
    questions only, scored 0-1 by the official scorer (``tasks.metrics.squad.evaluate``)."""
    groups: dict[str, dict[str, list[str]]] = {label: {} for label, _, _ in LENGTH_BINS}
    for example in examples:
        if example.answers:
            words = max(1, len(example.answers[0].text.split()))
            label = next(label for label, low, high in LENGTH_BINS if low <= words <= high)
            groups[label][example.id] = [answer.text for answer in example.answers]
    return group_scores(groups, predictions, version_2)


def group_scores(groups: dict[str, dict], predictions: dict[str, str], version_2: bool) -> Rows:
    """(group, questions, EM, F1) of each group of {question id: gold answers}, 0-1, NaN when empty."""
    rows = []
    for label, gold in groups.items():
        scores = evaluate(gold, predictions, version_2) if gold else {"exact": math.nan, "f1": math.nan}
        exact = scores.get("exact", scores.get("exact_match"))  # v2.0's key, v1.1's
        rows.append((label, len(gold), exact / 100, scores["f1"] / 100))
    return rows


def scores_picture(name: str, rows: Rows, title: str, caption: str, first: str) -> Picture:
    """EM and F1 bars per group of questions, with the numbers as a table under the picture."""
    figure, (ax,) = new_figure(8.5 if len(rows) > 3 else 7, 4)
    groups = [f"{label}\n(n={n})" for label, n, _, _ in rows]
    grouped_bars(ax, groups, {"EM": [r[2] for r in rows], "F1": [r[3] for r in rows]})
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel(first)
    table = f"<tr><th>{first}</th><th>n</th><th>EM</th><th>F1</th></tr>"
    for group, n, em, f1 in rows:
        cells = f"<td>{html.escape(group)}</td><td>{n}</td><td>{fmt(em)}</td><td>{fmt(f1)}</td>"
        table += f'<tr data-group="{html.escape(group)}">{cells}</tr>'
    return Picture(name, caption, figure, f'<table class="numbers">{table}</table>')


def qa_pictures(run: Run) -> list[Picture]:
    path = run.directory / "predictions.json"
    try:
        predictions = read_predictions(path)  # a missing file is a DataError too
    except UserError as err:
        run.warn(f"{err} (validate and test write it): no QA pictures")
        return []
    command, config, data_file = latest_evaluation(run, path)
    fit_files = [run.init_args("data").get(key) for key in ("validation_file", "test_file")]
    names = dict.fromkeys(filter(None, [data_file, *fit_files]))
    for name in names:  # the evaluation's own file first; it must hold the predicted questions
        found = resolve_data_file(name, run)
        try:
            data = read_squad(found, check_answer_starts=False) if found else None
        except UserError as err:
            run.warn(str(err))
            data = None
        if data and data.has_answers and {e.id for e in data.examples} == set(predictions):
            break
    else:
        tried = ", ".join(map(str, names)) or "no data file in config.yaml"
        run.warn(f"no SQuAD file with the questions of {path} found (tried {tried}): no QA pictures")
        return []
    version = "2.0" if data.version_2_with_negative else "1.1"
    rows = answer_length_scores(data.examples, predictions, data.version_2_with_negative)
    caption = "Exact match and F1 by gold answer length, answerable questions only (official SQuAD"
    caption += f" v{version} scoring of predictions.json, written by {command}, against {name})."
    title = f"{run.directory.name}: EM / F1 by gold answer length ({command}, {len(predictions)} questions)"
    pictures = [scores_picture("qa_answer_length.png", rows, title, caption, "gold answer words")]
    if data.version_2_with_negative:
        gold = data.gold_answers()
        has = {"HasAns": {q: g for q, g in gold.items() if g}}
        has["NoAns"] = {q: g for q, g in gold.items() if not g}
        split = group_scores({"all": gold, **has}, predictions, True)  # = evaluate's HasAns_*, NoAns_*
        threshold = run.init_args("model", config).get("null_score_diff_threshold")
        caption = "SQuAD v2.0: EM and F1 on answerable (HasAns) and unanswerable (NoAns) questions, with the "
        caption += f"null answers of predictions.json (null_score_diff_threshold {threshold})."
        title = f"{run.directory.name}: answerable (HasAns) vs unanswerable (NoAns) questions"
        pictures.append(scores_picture("qa_has_no_answer.png", split, title, caption, "questions"))
    return pictures


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;padding:0 1em;color:#222}
.meta{color:#555}table{border-collapse:collapse;margin:.5em 0 1.5em}th{background:#f3f3f3}figure{margin:2em 0}
th,td{border:1px solid #ccc;padding:.2em .7em;text-align:right}th:first-child,td:first-child{text-align:left}
img{max-width:100%}figcaption{color:#444;margin:.3em 0}.note{background:#fff8e6;padding:.3em .6em}"""


def fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not math.isnan(value) else "–"


def metrics_table(metrics: dict[str, Any]) -> str:
    """metrics.json as one row per metric, one column per split (val, test)."""
    splits = sorted({k.split("/", 1)[0] for k in metrics if "/" in k}, key=lambda s: (s != "val", s))
    rows = f"<tr><th>metric</th>{''.join(f'<th>{html.escape(s)}</th>' for s in splits)}</tr>"
    for name in dict.fromkeys(k.split("/", 1)[1] for k in metrics if "/" in k):
        cells = "".join(f"<td>{fmt(metrics.get(f'{split}/{name}'))}</td>" for split in splits)
        rows += f"<tr><td>{html.escape(name)}</td>{cells}</tr>"
    return f'<table class="metrics">{rows}</table>'


def render_page(run: Run, pictures: list[tuple[Picture, bytes]]) -> str:
    title = html.escape(run.directory.name)
    meta = f"task: {run.task or 'unknown'} ({(run.config.get('model') or {}).get('class_path')})"
    if run.best:
        meta += f" · best.ckpt: epoch {run.best['epoch']}, step {run.best['global_step']}"
        meta += f", by {main_metric(run)}"
    head = f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
    parts = [f"{head}<style>{CSS}</style></head><body>\n<h1>{title}</h1>"]
    parts.append(f'<p class="meta">{html.escape(meta)}</p>')
    if run.metrics:
        parts += ["<h2>metrics.json</h2>", metrics_table(run.metrics)]
    for picture, png in pictures:
        image = f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" alt="{picture.name}">'
        caption = f"<figcaption>{html.escape(picture.caption)}</figcaption>"
        parts.append(f"<figure>{image}{caption}{picture.table}</figure>")
    parts += [f'<p class="note">warning: {html.escape(note)}</p>' for note in run.notes]
    return "\n".join(parts) + "\n</body></html>\n"


def write_report(run: Run, output: Path) -> Path:
    pictures = [training_picture(run), validation_picture(run)]
    if run.task == "classification":
        pictures += confusion_pictures(run)
    elif run.task == "ner":
        pictures.append(ner_picture(run))
    elif run.task == "qa":
        pictures += qa_pictures(run)
    output.mkdir(parents=True, exist_ok=True)
    rendered = []
    for picture in filter(None, pictures):
        buffer = io.BytesIO()
        picture.figure.savefig(buffer, format="png")
        rendered.append((picture, buffer.getvalue()))
        with atomic_open(output / picture.name, "wb") as handle:
            handle.write(buffer.getvalue())
    with atomic_open(output / "report.html") as handle:
        handle.write(render_page(run, rendered))
    return output / "report.html"


def main(argv: list[str] | None = None) -> int:
    description = "Draw a run's training curves and per-task pictures into a self-contained report.html."
    parser = CommandParser(prog="python -m tasks report", description=description)
    parser.add_argument("run_dir", help="a run directory written by python -m tasks fit, e.g. outputs/sst2")
    parser.add_argument("--output", metavar="DIR", help="where to write the report (default: RUN_DIR)")
    args = parser.parse_args(argv)
    try:
        import matplotlib.backends.backend_agg  # noqa: F401  (imports matplotlib.figure too)
    except ImportError:
        raise UserError(
            "the report needs matplotlib (a dependency of bert-tasks): pip install matplotlib"
        ) from None
    run = load_run(Path(args.run_dir))  # errors: one line through the CLI's one handler
    output = Path(args.output) if args.output else run.directory
    if run.directory.resolve() in (output.resolve(), *output.resolve().parents):
        lock_run_directory(run.directory, "report")  # a fit writing there now: refused, naming it
    path = write_report(run, output)
    print(path)
    return 0
