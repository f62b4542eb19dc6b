"""The sampler interface: every backend turns instructions into responses the same way.

`generate(instructions, params, adapter)` returns, for each instruction, `params.n` responses
of the model with the (stacked) adapter at `adapter` applied, or of the base model when it is
None. Instructions are user messages; the backend applies the model's chat template.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 0.95
    seed: int = 0


GREEDY = SamplingParams(n=1, temperature=0.0)


class Sampler(Protocol):
    def generate(
        self, instructions: list[str], params: SamplingParams, adapter: Path | None = None
    ) -> list[list[str]]: ...
