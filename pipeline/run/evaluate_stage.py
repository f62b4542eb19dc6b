"""Stage 4, evaluate: measure the model with the new stack, keep or drop adapter t, decide to go on.

`baseline` measures the model before any adapter of this run; `evaluate` measures base + stack
after release t; `commit` closes the iteration (its `metrics.json` is the commit point, sealed with
the checksums of the iteration's files (`pipeline.run.chain`), and a kept stack becomes a copy in
the run's `adapter/`); `decide` names the reason to stop, or None. An adapter is dropped (and the run
stops) when it breaks the utility floor, or, with `stop.max_forget_rise`, when it leaves the forget
score worse than the best so far. An iteration that trained nothing is not measured again.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time

from pipeline.evaluation import convergence
from pipeline.files import atomic_dir, read_jsonl, write_json
from pipeline.run.chain import sealed
from pipeline.run.measure import measure
from pipeline.run.state import RunState, completed_iterations


def baseline(state: RunState) -> dict:
    path = state.files.baseline
    if path.is_file():
        return json.loads(path.read_text())
    started = time.perf_counter()
    metrics = measure(state, adapter=state.base_adapter, base_ppl=None)
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    write_json(path, metrics)
    return metrics


def evaluate(state: RunState, t: int, base: dict) -> dict:
    """Measure base + stack(kept so far + adapter t); decide whether adapter t is kept."""
    files = state.files.iteration(t)
    if files.evaluation.is_file():
        return json.loads(files.evaluation.read_text())
    if json.loads(files.release.read_text()).get("skipped"):
        metrics = {**last_measured(state, base), "kept": False, "seconds": 0.0}
        write_json(files.evaluation, metrics)
        return metrics
    started = time.perf_counter()
    metrics = measure(state, files.stack, base["utility_ppl"])
    kept = [h["forget_score"] for h in completed_iterations(state) if h["kept"]]
    metrics["kept"] = not convergence.breaks_utility_floor(
        metrics, state.config.stop
    ) and not convergence.undoes_forgetting(metrics, min([base["forget_score"], *kept]), state.config.stop)
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    write_json(files.evaluation, metrics)
    return metrics


def last_measured(state: RunState, base: dict) -> dict:
    """The measurement of the model as it stands: the last kept iteration's, or the base's.

    An iteration whose release trained nothing leaves that model unchanged, and measuring it
    again (a minute on the demo) would only repeat the same figures; `measured_in` names the
    iteration they come from (0: the baseline).
    """
    kept = [h["iteration"] for h in completed_iterations(state) if h["kept"]]
    if not kept:
        return {**base, "measured_in": 0}
    return {**json.loads(state.files.iteration(kept[-1]).evaluation.read_text()), "measured_in": kept[-1]}


def commit(state: RunState, t: int, metrics: dict, seconds: dict | None = None) -> dict:
    """Close iteration t: record its metrics (and `seconds`, each stage's wall-clock time) and, if
    kept, make its stack the run's adapter."""
    files = state.files.iteration(t)
    pulls = read_jsonl(files.instructions)
    entry = {
        "iteration": t,
        **{k: metrics[k] for k in ("forget_score", "utility_ppl", "utility_ppl_ratio", "kept")},
        **{k: metrics[k] for k in ("retain_probe_acc", "repetition", "judges") if k in metrics},
        "n_forget_samples": len(read_jsonl(files.forget)),
        "n_retain_samples": len(read_jsonl(files.retain)),
        "reward_mean": round(statistics.fmean(p["reward"] for p in pulls), 4) if pulls else None,
        "reward_max": round(max(p["reward"] for p in pulls), 4) if pulls else None,
    }
    if seconds:
        entry["seconds"] = seconds
    if metrics["kept"]:
        with atomic_dir(state.files.adapter) as tmp:
            shutil.copytree(files.stack, tmp, dirs_exist_ok=True)
    write_json(files.metrics, sealed(state.files, t, entry))  # the commit point of the iteration
    return entry


def decide(state: RunState, t: int, entry: dict, base: dict) -> str | None:
    """Why to stop after iteration t, or None to go on."""
    if not entry["kept"]:
        release_stats = json.loads(state.files.iteration(t).release.read_text())
        if release_stats.get("skipped"):
            return "no_forget_samples"
        if convergence.breaks_utility_floor(entry, state.config.stop):
            return convergence.UTILITY_FLOOR
        return convergence.FORGET_ROSE
    # A dropped adapter always ends the run, so every iteration before this one was kept.
    return convergence.stop_reason(completed_iterations(state), base, state.config.stop)
