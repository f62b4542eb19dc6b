"""The methods each benchmark compares, checked before a model is loaded."""

from __future__ import annotations

from pipeline.config import ConfigError
from pipeline.release.objectives import OBJECTIVES

# rr, then every objective as an oracle that is handed the real forget data; `--methods` picks some.
PLANTED_METHODS = ("rr", *OBJECTIVES)
PLANTED_DEFAULT = ("rr", "ga", "graddiff", "npo", "undial")
TOXICITY_METHODS = ("base", "rr", "rr_fixed", "random")
REVEAL_METHODS = ("neuralucb", "random", "best_seed")
CODE_METHODS = ("base", "rr", "rr_fixed", "random")
ENTITY_METHODS = ("base", "rr", "rr_fixed", "random")


def parse_methods(text: str | list[str], known: tuple[str, ...]) -> list[str]:
    """`rr,ga` -> ["rr", "ga"]; ConfigError naming --methods for an unknown, empty or repeated choice."""
    methods = [m.strip() for m in text.split(",")] if isinstance(text, str) else list(text)
    if not all(methods):
        raise ConfigError(f"--methods: an empty name in {text!r}; choose from {', '.join(known)}")
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ConfigError(f"--methods: unknown {unknown}; choose from {', '.join(known)}")
    if len(set(methods)) < len(methods):
        raise ConfigError(f"--methods: {text!r} names a method twice")
    return methods


def require_target(kind: str, wanted: str) -> None:
    """ConfigError unless the config's target is of the kind the `wanted` benchmark forgets."""
    if kind != wanted:
        article = "an" if wanted[0] in "aeiou" else "a"
        raise ConfigError(f"target.kind: the {wanted} benchmark needs {article} {wanted} target")


def require_toxicity_target(kind: str) -> None:
    require_target(kind, "toxicity")
