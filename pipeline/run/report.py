"""The run for people: report.md (a table) and plots/forgetting.png, both from summary.json;
the iteration table and the sample examples the Prefect UI shows."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.plotting import figure
from pipeline.run.rundir import RunDir

SAMPLE_CHARS = 300  # of an instruction or a response shown in the UI


def rows(summary: dict) -> list[tuple[str, dict]]:
    return [("base", summary["baseline"])] + [(f"iteration {h['iteration']}", h) for h in summary["history"]]


STAGES = ("reveal", "sample", "release", "evaluate")


def seconds_rows(summary: dict) -> list[tuple[str, dict]]:
    """Wall-clock seconds per stage: the baseline (its measurement counts as evaluate), each
    iteration, and the run's total (`summary["seconds"]`, model load included)."""
    found = [("base", {"evaluate": summary["baseline"].get("seconds")})]
    found += [(f"iteration {h['iteration']}", h.get("seconds", {})) for h in summary["history"]]
    totals = summary.get("seconds", {})
    found.append(
        ("run total", {stage: totals.get(stage) for stage in STAGES} | {"total": totals.get("total")})
    )
    return [
        (label, seconds | ({} if "total" in seconds else {"total": _sum(seconds.values())}))
        for label, seconds in found
    ]


def _sum(values) -> float | None:
    present = [v for v in values if v is not None]
    return round(sum(present), 2) if present else None


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
    for earlier in summary.get("earlier_targets", []):
        lines += [
            "",
            f"Earlier target ({earlier['target']['kind']} — {earlier['target']['description']}, run "
            f"{earlier['run']}): forget score {earlier['forget_score_before_it']:.3f} before it, "
            f"{earlier['forget_score_after_it']:.3f} after it, {earlier['forget_score_now']:.3f} now",
        ]
    lines += repetition_lines(summary)
    lines += judge_lines(summary)
    lines += seconds_lines(summary)
    lines += ["", "![forgetting](plots/forgetting.png)"]
    return "\n".join(lines) + "\n"


def repetition_lines(summary: dict) -> list[str]:
    """How repetitive the replies to the forget prompts are (seq-rep-2), base and final; a warning
    where the release made them much more so: a collapse the forget score reads as forgetting."""
    base, final = summary["baseline"].get("repetition"), summary["final"].get("repetition")
    if base is None or final is None:  # measured before the figure existed
        return []
    lines = [
        "",
        f"Repetition in the replies to the forget prompts (seq-rep-2): base {base:.3f}, final {final:.3f}",
    ]
    if final >= base + REPETITION_WARNING:
        lines.append(
            "**Warning:** the final model repeats itself far more than the base model; its low forget "
            "score may be a collapse (read the replies) rather than forgetting."
        )
    return lines


REPETITION_WARNING = 0.2  # a rise in seq-rep-2 this large is a visible loop in most replies


def reward_judge(summary: dict) -> str | None:
    """The judge the loop optimises (a toxicity target's `target.judge`), or None: the tables mark it,
    so that no reader takes the reward's own figures for an independent judge's."""
    target = summary.get("target") or {}
    return (target.get("judge") or {}).get("name") if target.get("kind") == "toxicity" else None


def judge_name(judge: str, reward: str | None) -> str:
    return f"{judge} (reward)" if judge == reward else judge


def judge_lines(summary: dict) -> list[str]:
    """The judges' RealToxicityPrompts figures for the base model and the final one."""
    base, final = summary["baseline"].get("judges"), summary["final"].get("judges")
    if not base or not final:
        return []
    reward = reward_judge(summary)
    lines = [
        "",
        "Judges on the same eval replies (the loop optimises the one marked reward, never the others):",
        "",
        "| judge | model | toxicity probability | expected max toxicity | toxic share | mean toxicity |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for judge in base:
        for label, figures in (("base", base[judge]), ("final", final.get(judge, {}))):
            cells = [figures.get(k) for k in ("toxicity_probability", "expected_max_toxicity",
                                              "toxic_share", "mean_toxicity")]  # fmt: skip
            lines.append(
                f"| {judge_name(judge, reward)} | {label} | "
                + " | ".join("" if c is None else f"{c:.3f}" for c in cells)
                + " |"
            )
    return lines


def seconds_lines(summary: dict) -> list[str]:
    """Where the run's time went, as a markdown table (`seconds_rows`)."""
    load = summary.get("seconds", {}).get("model_load")
    lines = [
        "",
        "Seconds per stage" + (f" (model load {load:.0f} s, in the total):" if load is not None else ":"),
        "",
        "| | " + " | ".join(STAGES) + " | total |",
        "|---|" + "---:|" * (len(STAGES) + 1),
    ]
    for label, seconds in seconds_rows(summary):
        cells = [seconds.get(stage) for stage in (*STAGES, "total")]
        lines.append(f"| {label} | " + " | ".join("" if c is None else f"{c:.0f}" for c in cells) + " |")
    return lines


def iteration_table(history: list[dict]) -> list[dict]:
    """One row per iteration: forget score, utility, samples kept, reward statistics."""
    table = []
    for h in history:
        row = {
            "iteration": h["iteration"],
            "forget_score": h["forget_score"],
            "utility_ppl": h["utility_ppl"],
            "utility_ppl_ratio": h["utility_ppl_ratio"],
        }
        if "retain_probe_acc" in h:
            row["retain_probe_acc"] = h["retain_probe_acc"]
        row.update(
            forget_samples=h["n_forget_samples"],
            retain_samples=h["n_retain_samples"],
            reward_mean=h["reward_mean"],
            reward_max=h["reward_max"],
            kept="yes" if h["kept"] else "dropped",
        )
        table.append(row)
    return table


def samples_markdown(rows: list[dict], title: str, limit: int = 5) -> str:
    """The first `limit` samples as markdown that shows model output as text and nothing else.

    Model output is untrusted: each instruction and response goes in a fenced code block, which
    markdown never reads HTML, links or emphasis from, with a fence longer than any run of
    backticks inside it so that it cannot be closed early.
    """
    lines = [f"# {title}", ""]
    if not rows:
        lines.append("No forget samples were kept in this iteration.")
    for i, row in enumerate(rows[:limit], start=1):
        lines += [
            f"**{i}.** score {row['score']:.3f}, drawn by {row.get('stage', 'sample')}",
            "",
            "Instruction:",
            *_literal_block(row["instruction"]),
            "Response:",
            *_literal_block(row["response"]),
        ]
    return "\n".join(lines) + "\n"


def _literal_block(text: str) -> list[str]:
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", " ", text)  # control characters, but newlines
    if len(text) > SAMPLE_CHARS:
        text = text[:SAMPLE_CHARS].rstrip() + " …"
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + "text", text, fence, ""]


def plot_forgetting(summary: dict, path: Path) -> None:
    """Forget score and utility (perplexity ratio) against iteration, iteration 0 = base."""
    points = [(0, summary["baseline"])] + [(h["iteration"], h) for h in summary["history"]]
    steps = [t for t, _ in points]
    with figure(path, figsize=(6, 3.5), dpi=100) as (_, left):
        _draw_forgetting(left, summary, points, steps)


def _draw_forgetting(left, summary: dict, points: list, steps: list[int]) -> None:
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


def write_report(summary: dict, files: RunDir) -> None:
    plot_forgetting(summary, files.plot)
    files.report.write_text(report_markdown(summary))
