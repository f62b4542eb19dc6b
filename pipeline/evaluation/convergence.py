"""When to stop the loop, and why. The reason is recorded in summary.json."""

from __future__ import annotations

from pipeline.config import StopConfig

FORGOTTEN = "forget_threshold_reached"
PLATEAU = "no_improvement"
MAX_ITERATIONS = "max_iterations"
UTILITY_FLOOR = "utility_floor_broken"
FORGET_ROSE = "forget_score_rose"


def breaks_utility_floor(metrics: dict, stop: StopConfig) -> bool:
    return metrics["utility_ppl_ratio"] > stop.utility_floor


def undoes_forgetting(metrics: dict, best_forget_score: float, stop: StopConfig) -> bool:
    """Whether an iteration left the forget score above the best so far by more than
    `stop.max_forget_rise`. An adapter trained on what the model says once it has forgotten (its
    own wrong guesses) can push those down and let the right answer back up."""
    rise = stop.max_forget_rise
    return rise is not None and metrics["forget_score"] > best_forget_score + rise


def stop_reason(history: list[dict], baseline: dict, stop: StopConfig) -> str | None:
    """None to go on; else why to stop after the last entry of `history` (kept iterations).

    `stop.max_iterations` is the most a run does, `stop.min_iterations` included: a config's
    min_iterations of 2 does not make `--set stop.max_iterations=1` run two.
    """
    if len(history) < min(stop.min_iterations, stop.max_iterations):
        return None
    if history and history[-1]["forget_score"] <= stop.forget_threshold:
        return FORGOTTEN
    if len(history) >= stop.patience:
        scores = [baseline["forget_score"]] + [h["forget_score"] for h in history]
        best_before = min(scores[: -stop.patience])
        best_recent = min(scores[-stop.patience :])
        if best_before - best_recent < stop.min_delta:
            return PLATEAU
    if len(history) >= stop.max_iterations:
        return MAX_ITERATIONS
    return None
