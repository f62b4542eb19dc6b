"""What every config section shares: the bounds on counts and sizes, and `Section`.

Every number is finite (`.inf` and `.nan` are errors), and every count and size has an upper
bound, one of the MAX_ constants: far above any real run, so that a slip (three zeros too many) is
refused before anything starts rather than running for a year or failing hours in.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

PROJECT_ROOT = Path(__file__).resolve().parents[2]

MAX_NEW_TOKENS = 4096  # tokens generated for one reply
MAX_SEQUENCE_TOKENS = 1 << 20  # tokens of prompt and reply read at once (the longest contexts models have)
MAX_STEPS = 1_000_000  # optimiser steps of one training (planting, release)
MAX_REPEATS = 10_000  # repeats of the loop: iterations, bandit rounds, patience
MAX_TEXTS = 100_000  # instructions, samples or texts a stage draws, keeps or scores
MAX_BATCH = 65_536  # texts in one batch
MAX_RANK = 4096  # a LoRA's rank
MAX_WIDTH = 65_536  # layers, heads, hidden units of the tiny model or the bandit's network
MAX_WORKERS = 1024  # CPU threads, requests in flight
MAX_RETRIES = 20  # retries of one call; with each delay double the last, more would wait for months
MAX_SECONDS = 86_400.0  # a timeout or a delay: one day
MAX_LR = 1.0  # AdamW moves each weight by about lr a step: above 1 every step overshoots
MAX_SEED = 2**32 - 1  # numpy's limit (vLLM seeds numpy with it)


def is_number(annotation) -> bool:
    """Whether a field holds an int or a float (or None)."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    kinds = [a for a in typing.get_args(annotation) if a is not type(None)] if union else [annotation]
    return bool(kinds) and all(kind in (int, float) for kind in kinds)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value, info: ValidationInfo):
        """A yes/no is not a number (pydantic would take `steps: true` as 1 step), and a number in
        exponent form is one (YAML 1.1, PyYAML's, reads `1e9` as text)."""
        if not is_number(cls.model_fields[info.field_name].annotation):
            return value
        if isinstance(value, bool):
            raise ValueError(f"{str(value).lower()} is a yes/no, not a number")
        if isinstance(value, str):
            try:
                return float(value)  # an integral one passes an int field; too large fails its bound
            except ValueError:
                return value  # pydantic names what is wrong with it
        return value
