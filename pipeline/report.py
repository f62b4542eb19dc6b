"""The run for people: report.md (a table) and plots/forgetting.png, both from summary.json."""

from __future__ import annotations

from pathlib import Path


def rows(summary: dict) -> list[tuple[str, dict]]:
    return [("base", summary["baseline"])] + [(f"iteration {h['iteration']}", h) for h in summary["history"]]


def report_markdown(summary: dict) -> str:
    has_retain = "retain_probe_acc" in summary["baseline"]
    head = "| model | forget score | utility ppl | ppl ratio |" + (
        " retain probe acc |" if has_retain else ""
    )
    lines = [
        f"# Run {summary['name']}",
        "",
        f"Target: {summary['target']['kind']} — {summary['target']['description']}  ",
        f"Model: {summary['model']}  ",
        f"Stopped: {summary['stop_reason']} after {summary['iterations']} iteration(s)",
        "",
        head,
        "|---|---|---|---|" + ("---|" if has_retain else ""),
    ]
    for label, m in rows(summary):
        dropped = "" if m.get("kept", True) else " (dropped)"
        line = f"| {label}{dropped} | {m['forget_score']:.3f} | {m['utility_ppl']:.2f} | {m['utility_ppl_ratio']:.3f} |"
        lines.append(line + (f" {m['retain_probe_acc']:.3f} |" if has_retain else ""))
    lines += ["", "![forgetting](plots/forgetting.png)"]
    return "\n".join(lines) + "\n"


def plot_forgetting(summary: dict, path: Path) -> None:
    """Forget score and utility (perplexity ratio) against iteration, iteration 0 = base."""
    import matplotlib  # here, so that `rr` answers bad input without loading matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    points = [(0, summary["baseline"])] + [(h["iteration"], h) for h in summary["history"]]
    steps = [t for t, _ in points]
    fig, left = plt.subplots(figsize=(6, 3.5), dpi=100)
    left.plot(steps, [m["forget_score"] for _, m in points], "o-", color="tab:red", label="forget score")
    if "retain_probe_acc" in summary["baseline"]:
        left.plot(
            steps,
            [m["retain_probe_acc"] for _, m in points],
            "s-",
            color="tab:green",
            label="retain probe acc",
        )
    left.set_xlabel("iteration (0 = base model)")
    left.set_ylabel("score")
    left.set_xticks(steps)
    right = left.twinx()
    right.plot(
        steps, [m["utility_ppl_ratio"] for _, m in points], "^--", color="tab:blue", label="utility ppl ratio"
    )
    right.set_ylabel("perplexity / base")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(handles=handles, loc="best", fontsize=8)
    left.set_title(f"{summary['name']}: {summary['target']['description']}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def write_report(summary: dict, run_dir: Path) -> None:
    plot_forgetting(summary, run_dir / "plots" / "forgetting.png")
    (run_dir / "report.md").write_text(report_markdown(summary))
