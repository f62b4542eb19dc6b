"""The stop rules."""

from pipeline.config import StopConfig
from pipeline.evaluation.convergence import (
    FORGOTTEN,
    MAX_ITERATIONS,
    PLATEAU,
    breaks_utility_floor,
    stop_reason,
    undoes_forgetting,
)

BASE = {"forget_score": 0.8}


def h(*scores):
    return [{"forget_score": s} for s in scores]


def test_threshold_reached():
    assert stop_reason(h(0.5, 0.04), BASE, StopConfig(forget_threshold=0.05)) == FORGOTTEN


def test_goes_on_while_improving():
    assert stop_reason(h(0.6), BASE, StopConfig(max_iterations=5, patience=2)) is None
    assert stop_reason(h(0.6, 0.4), BASE, StopConfig(max_iterations=5, patience=2)) is None


def test_plateau_after_patience():
    cfg = StopConfig(max_iterations=9, patience=2, min_delta=0.05)
    assert stop_reason(h(0.4, 0.39, 0.41), BASE, cfg) == PLATEAU
    assert stop_reason(h(0.4, 0.30, 0.41), BASE, cfg) is None


def test_max_iterations():
    assert stop_reason(h(0.7, 0.5, 0.3), BASE, StopConfig(max_iterations=3, patience=3)) == MAX_ITERATIONS


def test_max_iterations_caps_min_iterations():
    cfg = StopConfig(max_iterations=1, min_iterations=2, forget_threshold=0.0)
    assert stop_reason(h(0.7), BASE, cfg) == MAX_ITERATIONS
    assert stop_reason(h(0.7), BASE, cfg.model_copy(update={"max_iterations": 3})) is None


def test_utility_floor():
    assert breaks_utility_floor({"utility_ppl_ratio": 1.6}, StopConfig(utility_floor=1.5))
    assert not breaks_utility_floor({"utility_ppl_ratio": 1.2}, StopConfig(utility_floor=1.5))


def test_a_rise_of_the_forget_score_past_the_best_so_far():
    rise = StopConfig(max_forget_rise=0.05)
    assert undoes_forgetting({"forget_score": 0.31}, 0.25, rise)
    assert not undoes_forgetting({"forget_score": 0.29}, 0.25, rise)
    assert not undoes_forgetting({"forget_score": 0.9}, 0.25, StopConfig())  # off by default
    assert undoes_forgetting({"forget_score": 0.26}, 0.25, StopConfig(max_forget_rise=0.0))
