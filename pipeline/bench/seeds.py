"""Seeds of a whole benchmark: each method runs once per seed; figures are mean ± sd over the seeds.

A benchmark measured with one seed cannot tell an effect from the luck of its draws, so every
figure is reported as the mean and the sample standard deviation over `--seeds N` runs of the
whole pipeline (reveal, sampling, release and the measurement's own draws all take the seed), and a
difference to the reference is called real only when a paired t-test across the seeds says so.
"""

from __future__ import annotations

import math
import statistics

SD = "_sd"  # metrics[key + SD] is the spread of metrics[key] over the seeds


def seed_list(first: int, n: int) -> list[int]:
    if n < 1:
        raise ValueError(f"--seeds: need at least one seed, got {n}")
    return [first + i for i in range(n)]


def flatten(metrics: dict, prefix: str = "") -> dict:
    """{"judges": {"a": {"x": 1}}} -> {"judges.a.x": 1}: nested figures as dotted keys."""
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def aggregate(runs: list[dict]) -> dict:
    """Mean (under the key) and sample sd (under key + "_sd") of every number all `runs` have.

    Keys that are not numbers in every run (a stop reason, a missing figure) are left out, so the
    table shows n/a rather than a mean of some seeds only.
    """
    if not runs:
        raise ValueError("aggregate: no runs")
    flats = [flatten(run) for run in runs]
    result: dict = {"seeds": len(runs)}
    for key in flats[0]:
        values = [flat.get(key) for flat in flats]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            continue
        if not all(math.isfinite(v) for v in values):
            result[key] = float("nan") if len(values) > 1 else values[0]
            continue
        # Six significant digits, not decimals: forget quality's p-values reach 1e-8 and below.
        result[key] = float(f"{statistics.fmean(values):.6g}")
        result[key + SD] = float(f"{statistics.stdev(values):.6g}") if len(values) > 1 else 0.0
    return result


def compare_to(values: list[float], reference: list[float]) -> tuple[float, float | None]:
    """(mean difference, p-value) of two figures measured on the same seeds, in the same order.

    Seed s of both shares the measurement's draws, so the test is paired: a t-test on the per-seed
    differences d_s = value_s - reference_s (scipy's ttest_rel). p is None under two seeds; when
    every d_s is the same there is no spread to test, and p is None too (`spread_note` says which).
    """
    if len(values) != len(reference):
        raise ValueError("compare_to: both figures need one value per seed")
    differences = [v - r for v, r in zip(values, reference)]
    difference = statistics.fmean(differences)
    if len(values) < 2:
        return difference, None
    if max(differences) - min(differences) <= 1e-9:  # equal up to rounding: nothing to test
        return difference, None
    from scipy.stats import ttest_rel  # here: scipy.stats takes ~1 s to import

    return difference, float(ttest_rel(values, reference).pvalue)


def spread_note(label: str, values: list[float], reference: list[float], ref_label: str) -> str:
    """One sentence: the difference to the reference, and whether it is inside the seed spread."""
    difference, p = compare_to(values, reference)
    if p is None and len(values) < 2:
        verdict = "one seed: no spread to judge it by"
    elif p is None:
        verdict = "the same on every seed" if difference else "no difference on any seed"
    elif p < 0.05:
        verdict = f"beyond the seed spread (paired t-test p = {p:.3g})"
    else:
        verdict = f"inside the seed spread (paired t-test p = {p:.2g})"
    return f"{label} vs {ref_label}: {difference:+.3f}, {verdict}"
