"""User and model text is never parsed as markup in plots (issue 20): a `$` in a target's
description or a method's name starts matplotlib's mathtext by default, and an unbalanced one
failed the plot after summary.json was written, so report.md was never written."""

from pipeline.bench.results import plot_bars
from pipeline.run.report import plot_forgetting

TEXT = r"insults worth $5, $\frac{$"  # mathtext that matplotlib cannot parse


def test_the_forgetting_plot_prints_a_description_with_dollars_as_it_is(tmp_path):
    entry = {"forget_score": 0.2, "utility_ppl_ratio": 1.1}
    summary = {
        "name": "run $1", "target": {"description": TEXT},
        "baseline": {"forget_score": 0.5, "utility_ppl_ratio": 1.0}, "history": [{"iteration": 1, **entry}],
    }  # fmt: skip
    path = tmp_path / "plots" / "forgetting.png"
    plot_forgetting(summary, path)
    assert path.stat().st_size > 0


def test_benchmark_bars_print_names_with_dollars_as_they_are(tmp_path):
    results = {"methods": {TEXT: {"forget_probe_acc": 0.1, "forget_probe_acc_sd": 0.01}}}
    path = tmp_path / "plot.png"
    plot_bars(results, [("forget_probe_acc", "acc $"), ("forget_probe_acc", TEXT)], TEXT, path)
    assert path.stat().st_size > 0
