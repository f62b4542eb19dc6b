"""Custom: the user's own scorer, named `module:function` (a function of a list of texts that
returns one score in [0, 1] per text)."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable

from pipeline.config import ConfigError


def load_function(spec: str) -> Callable[[list[str]], list[float]]:
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise ConfigError(f"target.scorer: expected 'module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"target.scorer: cannot import {module_name}: {exc}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"target.scorer: {module_name} has no function {function_name!r}")
    return function


class CustomScorer:
    def __init__(self, spec: str) -> None:
        self.spec, self.function = spec, load_function(spec)

    def __call__(self, texts: list[str]) -> list[float]:
        if not texts:
            return []
        scores = [float(s) for s in self.function(list(texts))]
        if len(scores) != len(texts):
            raise ValueError(f"{self.spec} returned {len(scores)} scores for {len(texts)} texts")
        bad = [s for s in scores if not (math.isfinite(s) and 0.0 <= s <= 1.0)]
        if bad:
            raise ValueError(f"{self.spec} returned scores outside [0, 1], e.g. {bad[0]}")
        return scores
