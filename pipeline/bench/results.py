"""The three files every benchmark writes: results.json, report.md (a table) and plot.png (a trade-off).

`results` is `{"planted": {...}, "retain_only": {...}, "methods": {name: {...}}, ...}`: every
top-level entry whose value is a dict of metrics with the plotted keys becomes a row, references
first, then the methods.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from pipeline.config import ConfigError, RunConfig
from pipeline.config.run import not_as_saved
from pipeline.files import write_json, write_text
from pipeline.plotting import figure

REFERENCES = ("base", "planted", "retain_only")


def claim_out_dir(out: Path, config: RunConfig, extra: dict | None = None) -> None:
    """Tie `out` to one benchmark setup, so a rerun with other settings never reuses its parts."""
    path = out / "bench.yaml"
    text = config.to_yaml() + (yaml.safe_dump(extra) if extra else "")
    differences = config.differences(path.read_text(), extra) if path.is_file() else []
    if differences != []:
        which = not_as_saved(differences)
        raise ConfigError(
            f"{out} holds a benchmark with other settings{which}: choose another --out or delete it"
        )
    write_text(path, text)  # whole: a half-written one would refuse the same command next time


def table_rows(results: dict) -> list[tuple[str, dict]]:
    """(label, metrics) for the reference models that are present, then every method."""
    rows = [(name, results[name]) for name in REFERENCES if isinstance(results.get(name), dict)]
    return rows + list(results["methods"].items())


def cell(value, fmt: str, sd: float | None = None) -> str:
    """A figure as the table shows it; with `sd` (its spread over seeds) as "mean ± sd"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = format(int(round(value)), fmt) if fmt == "d" else format(value, fmt)
    if sd:
        text += " ± " + (format(int(round(sd)), fmt) if fmt == "d" else format(sd, fmt.replace("+", "")))
    return text


def metric_cell(metrics: dict, key: str, fmt: str) -> str:
    """`cell` of metrics[key], with its seed spread metrics[key + "_sd"] when there is one."""
    if key not in metrics:
        return ""
    return cell(metrics[key], fmt, metrics.get(key + "_sd"))


def report_markdown(results: dict, columns: list[tuple[str, str, str]], title: str, notes: list[str]) -> str:
    lines = [f"# {title}", "", "| model | " + " | ".join(c[1] for c in columns) + " |"]
    lines.append("|---|" + "---:|" * len(columns))
    for label, metrics in table_rows(results):
        cells = [metric_cell(metrics, key, fmt) for key, _, fmt in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    measured_on = [f"Measured on {results['device']}."] if results.get("device") else []
    lines += ["", *[f"- {note}" for note in measured_on + notes], "", "![trade-off](plot.png)"]
    return "\n".join(lines) + "\n"


OURS = ("rr", "neuralucb")  # drawn in red: the loop's own methods


def plot_tradeoff(
    results: dict, x: tuple[str, str], y: tuple[str, str], title: str, path: Path, x_cap: float | None = 5.0
) -> None:
    """One point per model: y (what should fall) against x (the utility cost)."""
    with figure(path, figsize=(6, 4), dpi=100) as (_, ax):
        _draw_tradeoff(ax, results, x, y, title, x_cap)


def _draw_tradeoff(ax, results: dict, x: tuple[str, str], y: tuple[str, str], title: str, x_cap) -> None:
    # Past x_cap (a utility ratio) a model is broken (GA can reach 1e50): drawn at the edge, value in its label.
    cap = x_cap if x_cap is not None else float("inf")
    for label, metrics in table_rows(results):
        if metrics.get(x[0]) is None or metrics.get(y[0]) is None:
            continue
        reference, off_scale = label in REFERENCES, metrics[x[0]] > cap
        point = (min(metrics[x[0]], cap), metrics[y[0]])
        ax.errorbar(
            *point, xerr=None if off_scale else metrics.get(x[0] + "_sd"), yerr=metrics.get(y[0] + "_sd"),
            fmt=">" if off_scale else ("s" if reference else "o"), capsize=3,
            color="grey" if reference else ("tab:red" if label.startswith(OURS) else "tab:blue"),
        )  # fmt: skip
        text = f"{label} ({metrics[x[0]]:.2g})" if off_scale else label
        ax.annotate(
            text, point, textcoords="offset points", xytext=(-5 if off_scale else 5, 4), fontsize=8,
            ha="right" if off_scale else "left",
        )  # fmt: skip
    ax.set_xlabel(x[1])
    ax.set_ylabel(y[1])
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)


def plot_bars(results: dict, bars: list[tuple[str, str]], title: str, path: Path) -> None:
    """One panel per figure in `bars` ((key, label)), one bar per model, the seed sd as error bars."""
    columns = min(3, len(bars))
    lines = math.ceil(len(bars) / columns)
    size = (4 * columns, 2.8 * lines)
    with figure(path, nrows=lines, ncols=columns, figsize=size, dpi=100, squeeze=False) as (fig, axes):
        _draw_bars(fig, axes, table_rows(results), bars, title)


def _draw_bars(fig, axes, rows: list, bars: list[tuple[str, str]], title: str) -> None:
    for ax, (key, label) in zip(axes.flat, bars):
        found = [(name, m) for name, m in rows if isinstance(m.get(key), (int, float))]
        heights = [m[key] for _, m in found]
        ax.bar(
            range(len(found)), heights, yerr=[m.get(key + "_sd", 0.0) for _, m in found], capsize=3,
            color=["grey" if n in REFERENCES else ("tab:red" if n.startswith(OURS) else "tab:blue")
                   for n, _ in found],
        )  # fmt: skip
        ax.set_xticks(range(len(found)), [name for name, _ in found], rotation=30, ha="right", fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(bars) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)


def write_results(
    out: Path,
    results: dict,
    columns: list[tuple[str, str, str]],
    title: str,
    notes: list[str],
    x: tuple[str, str] | None = None,
    y: tuple[str, str] | None = None,
    x_cap: float | None = 5.0,
    bars: list[tuple[str, str]] | None = None,
) -> None:
    """plot.png: `y` against `x` (a trade-off), or with `bars` one bar panel per figure (mean ± sd)."""
    out.mkdir(parents=True, exist_ok=True)
    if bars:
        plot_bars(results, bars, title, out / "plot.png")
    else:
        plot_tradeoff(results, x, y, title, out / "plot.png", x_cap)
    (out / "report.md").write_text(report_markdown(results, columns, title, notes))
    write_json(out / "results.json", results)  # last: its presence means the benchmark finished
