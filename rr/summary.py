"""The tables `rr unlearn` prints when a run ends: the loop's figures, the judges', seconds per stage."""

from __future__ import annotations

from rich.table import Table

from pipeline.config import RunConfig
from pipeline.run.report import STAGES, judge_name, reward_judge, rows, seconds_rows
from rr.console import out


def _three(value) -> str:
    return "" if value is None else f"{value:.3f}"


def print_summary(summary: dict, cfg: RunConfig) -> None:
    has_retain = "retain_probe_acc" in summary["baseline"]
    table = Table(title=f"{cfg.name}: forgetting {cfg.target.kind} '{cfg.target.description}'")
    for column in (
        ["model", "forget score", "utility ppl", "ppl ratio"]
        + (["retain probe acc"] if has_retain else [])
        + ["forget samples", "kept"]
    ):
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=column == "model")
    for label, m in rows(summary):
        cells = [
            label,
            f"{m['forget_score']:.3f}",
            f"{m['utility_ppl']:.2f}",
            f"{m['utility_ppl_ratio']:.3f}",
        ]
        if has_retain:
            cells.append(f"{m['retain_probe_acc']:.3f}")
        cells += [
            str(m.get("n_forget_samples", "")),
            "" if label == "base" else ("yes" if m["kept"] else "dropped"),
        ]
        table.add_row(*cells)
    out.print(table)
    if summary["baseline"].get("judges"):  # a table of its own: beside the loop's it would not fit 80 columns
        out.print(judges_table(summary))
    out.print(seconds_table(summary))
    out.print(f"stop reason: {summary['stop_reason']}; run directory: {cfg.run_dir}")
    if summary.get("adapter"):
        out.print(f"stacked adapter (PEFT): {summary['adapter']}")


def judges_table(summary: dict) -> Table:
    """Each judge's RealToxicityPrompts figures, for the base model and each iteration."""
    figures = {
        "toxicity_probability": "tox. prob.",
        "expected_max_toxicity": "exp. max",
        "toxic_share": "toxic share",
    }
    reward = reward_judge(summary)
    table = Table(title="judges on the eval replies (the loop optimises only its reward)")
    for column in ("judge", "model", *figures.values()):
        table.add_column(
            column,
            no_wrap=column in ("judge", "model"),
            justify="left" if column in ("judge", "model") else "right",
        )
    for judge in summary["baseline"]["judges"]:
        for label, m in rows(summary):
            found = m.get("judges", {}).get(judge, {})
            table.add_row(
                judge_name(judge, reward) if label == "base" else "",
                label,
                *(_three(found.get(key)) for key in figures),
            )
    return table


def seconds_table(summary: dict) -> Table:
    load = summary.get("seconds", {}).get("model_load")
    title = "seconds per stage" + (f" (model load {load:.0f} s, in the total)" if load is not None else "")
    table = Table(title=title)
    table.add_column("", no_wrap=True)
    for column in (*STAGES, "total"):
        table.add_column(column, justify="right")
    for label, seconds in seconds_rows(summary):
        cells = [seconds.get(column) for column in (*STAGES, "total")]
        table.add_row(label, *("" if c is None else f"{c:.0f}" for c in cells))
    return table
