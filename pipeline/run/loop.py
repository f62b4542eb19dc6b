"""The loop: baseline, then reveal -> sample -> release -> evaluate until a stop rule fires.

Each stage is a plain function of the run state and the iteration number (`STAGES`). It writes its
output under `runs/<name>/iter_<t>/` atomically and, when that output is already there (a resumed
run), reads it back instead of computing it again. Randomness is seeded per (run seed, iteration,
stage), so a resumed run makes the same choices as an uninterrupted one. A resumed run first
checks the checksum chain of its iterations (`pipeline.run.chain`) and computes again from the
first that is not whole.

    state = RunState(config)
    run_loop(state)       # baseline; for t = 1..: reveal, sample, release, evaluate, commit; finish

`flows/unlearn.py` passes the same stage functions wrapped as Prefect tasks.
"""

from __future__ import annotations

import time

from pipeline.config import ConfigError
from pipeline.files import DISK_FULL, write_json, write_text
from pipeline.interrupts import raise_if_requested
from pipeline.run.chain import discard_untrusted, read_summary, summary_problem, walk
from pipeline.run.evaluate_stage import baseline, commit, decide, evaluate
from pipeline.run.lock import run_lock
from pipeline.run.measure import earlier_targets
from pipeline.run.preflight import existing_run
from pipeline.run.release_stage import release
from pipeline.run.report import write_report
from pipeline.run.reveal_stage import reveal
from pipeline.run.rundir import relative_to_run, resolve_in_run
from pipeline.run.sample_stage import sample
from pipeline.run.state import RunState, completed_iterations

# The stages in the order the loop runs them; `flows/unlearn.py` makes one Prefect task of each.
STAGES = {"baseline": baseline, "reveal": reveal, "sample": sample, "release": release, "evaluate": evaluate}


def prepare_run_dir(state: RunState) -> dict | None:
    """Create or re-open runs/<name>. Returns the finished summary if the run already ended.

    Called after the config and model path are validated, so bad input leaves nothing behind.
    """
    finished = existing_run(state.config)
    saved = state.files.config
    if finished is None and not saved.is_file():
        try:
            write_text(saved, state.config.to_yaml())  # whole: a kill leaves no half config
        except OSError as exc:
            if exc.errno in DISK_FULL:
                raise  # not the user's input: `rr` says the disk is full (exit 5)
            raise ConfigError(f"cannot write {saved}: {exc.strerror}; choose another --out") from None
    return finished


def resume(state: RunState, log=print) -> list[dict]:
    """Trust the run's iterations up to the first that is not whole; the rest is computed again.

    Called for an unfinished run, under its lock. Returns the trusted iterations' metrics.
    """
    files = state.files
    found = walk(files)
    summary = read_summary(files, f"delete it, or the run folder {files.root}")
    why = found.problem or (summary_problem(files, summary, found) if summary is not None else None)
    moved = discard_untrusted(files, found)
    if why is not None or moved is not None:
        start = f"iteration {found.next_t}" if found.link else "the baseline"
        log(
            f"{files.root}: {why or 'files that no trusted iteration made'}; computing again from {start}"
            + (f" (what was there is in {moved})" if moved else "")
        )
    return found.history


def run_loop(
    state: RunState,
    *,
    baseline=baseline,
    reveal=reveal,
    sample=sample,
    release=release,
    evaluate=evaluate,
    on_iteration=None,
    log=print,
) -> dict:
    """Baseline, then reveal -> sample -> release -> evaluate until a stop rule fires; the summary.

    The stage functions are parameters so that `flows/unlearn.py` can pass the same functions
    wrapped as Prefect tasks; the benchmarks call this as it is. `on_iteration(state, t, history)`
    hears of every completed iteration (the flow publishes artifacts). A run directory with
    completed iterations resumes after the last of them; one process at a time works in it.
    """
    with run_lock(state.files.root):
        return _run_loop(state, baseline, reveal, sample, release, evaluate, on_iteration, log)


def _run_loop(state, baseline, reveal, sample, release, evaluate, on_iteration, log) -> dict:
    finished = prepare_run_dir(state)
    if finished is not None:
        log(f"run {state.files.root} already finished ({finished['stop_reason']})")
        return finished
    history = resume(state, log)
    base = baseline(state)  # its own seconds are in it (`baseline.json`), measured when computed
    raise_if_requested()
    log(f"baseline: forget score {base['forget_score']:.3f}, utility ppl {base['utility_ppl']:.2f}")
    t = len(history)
    reason = decide(state, t, history[-1], base) if history else None
    if history:
        log(f"resuming {state.files.root} after iteration {t}")
    while reason is None:
        t += 1
        raise_if_requested()  # between stages: a Ctrl-C that something swallowed still stops the run
        seconds: dict[str, float] = {}
        instructions = _timed(seconds, "reveal", reveal, state, t)
        raise_if_requested()
        _timed(seconds, "sample", sample, state, t, instructions)
        raise_if_requested()
        _timed(seconds, "release", release, state, t)
        raise_if_requested()
        entry = commit(state, t, _timed(seconds, "evaluate", evaluate, state, t, base), seconds)
        reason = decide(state, t, entry, base)
        if on_iteration is not None:
            on_iteration(state, t, completed_iterations(state))
        log(
            f"iteration {t}: forget score {entry['forget_score']:.3f}, utility ppl ratio "
            f"{entry['utility_ppl_ratio']:.3f}, {entry['n_forget_samples']} forget samples"
            + ("" if entry["kept"] else " (adapter dropped)")
        )
    return finish(state, base, reason)


def _timed(seconds: dict, name: str, stage, *args):
    """`stage(*args)`, its wall-clock seconds recorded as `seconds[name]`.

    An iteration is computed whole by one process (a resumed run computes again from the first
    iteration that is not whole), so these are the seconds the iteration's stages really took.
    """
    started = time.perf_counter()
    result = stage(*args)
    seconds[name] = round(time.perf_counter() - started, 2)
    return result


def stage_seconds(model_info: dict, base: dict, history: list[dict]) -> dict:
    """Where a run's time went: model load, baseline, and each stage summed over the iterations.

    Iterations written before stage times were recorded count as none; `total` is the sum.
    """
    seconds = {"model_load": model_info.get("load_seconds"), "baseline": base.get("seconds")}
    for stage in ("reveal", "sample", "release", "evaluate"):
        seconds[stage] = round(sum(h.get("seconds", {}).get(stage, 0.0) for h in history), 2)
    seconds["total"] = round(sum(v for v in seconds.values() if v is not None), 2)
    return seconds


FINAL_KEYS = ("forget_score", "utility_ppl", "utility_ppl_ratio", "retain_probe_acc", "repetition", "judges")


def finish(state: RunState, base: dict, stop_reason: str) -> dict:
    """Write summary.json and report.md: baseline, every iteration, the final kept model, the reason."""
    history = completed_iterations(state)
    kept = [h for h in history if h["kept"]]
    final = kept[-1] if kept else base
    adapter = state.files.adapter if kept else state.base_adapter
    summary = {
        "name": state.config.name,
        "target": state.config.target.model_dump(),
        "model": state.model_info.get("name_or_path"),
        "stop_reason": stop_reason,
        "iterations": len(history),
        "baseline": base,
        "final": {k: final[k] for k in FINAL_KEYS if k in final},
        "history": history,
        "seconds": stage_seconds(state.model_info, base, history),
        # Relative to the run directory, so that a run moved elsewhere still names its adapter.
        "adapter": relative_to_run(adapter, state.files.root) if adapter else None,
    }
    if state.base_runs:
        summary["base_run"] = str(state.config.base_run)
        summary["earlier_targets"] = earlier_targets(state)
    write_report(summary, state.files)
    write_json(state.files.summary, summary)  # last: a run with a summary is finished, report and all
    if adapter:
        summary["adapter"] = str(resolve_in_run(summary["adapter"], state.files.root))
    return summary
