"""The sampler interface: every backend turns instructions into responses the same way.

`generate(instructions, params, adapter)` returns, for each instruction, `params.n` responses
of the model with the (stacked) adapter at `adapter` applied, or of the base model when it is
None. Instructions are user messages (or whole conversations ending with the user's turn,
as `format_prompt` takes them); the backend applies the model's chat template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pipeline.textdata import format_prompt


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 0.95
    seed: int = 0
    min_new_tokens: int = 0  # EOS is ignored before this many: benchmarks give every backend equal work

    @classmethod
    def from_generation(cls, generation, n: int = 1, seed: int = 0) -> SamplingParams:
        """`n` replies under a config's `sample.generation` settings (a GenerationConfig)."""
        return cls(
            n=n,
            max_new_tokens=generation.max_new_tokens,
            temperature=generation.temperature,
            top_p=generation.top_p,
            seed=seed,
        )


GREEDY = SamplingParams(n=1, temperature=0.0)


class Sampler(Protocol):
    generated_tokens: int  # over the sampler's life: what a run spent on generation

    def generate(
        self,
        instructions: list[str] | list[list[dict]],
        params: SamplingParams,
        adapter: Path | None = None,
        label: str = "sampling",
        prefills: list[str] | None = None,
    ) -> list[list[str]]: ...


class SamplerError(RuntimeError):
    """A sampler cannot work: its engine is missing, or its server is down or unsuitable."""


class TransientSamplerError(SamplerError):
    """The sampler's server timed out, dropped the connection or was overloaded (429, 5xx) after
    the client's own retries: trying the stage again later may work (Prefect does)."""


def prompt_token_ids(
    tokenizer, instructions: list[str] | list[list[dict]], prefills: list[str] | None = None
) -> list[list[int]]:
    """The token ids each backend generates from: the chat template, then the prefill if any.

    Every backend gets ids, not text, so that none adds a BOS token or tokenises differently.
    """
    prompts = [format_prompt(tokenizer, text) for text in instructions]
    if prefills is not None:
        prompts = [prompt + prefill for prompt, prefill in zip(prompts, prefills, strict=True)]
    return [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]


def eos_ids(generation_config, tokenizer) -> list[int]:
    """Generation stops at any of these: the model's own end tokens and the tokenizer's, as vLLM does."""
    ids = getattr(generation_config, "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    return sorted({*ids, tokenizer.eos_token_id} - {None})


def adapter_key(adapter: Path) -> tuple[str, int]:
    """Identifies one version of an adapter folder: the stack is rewritten in place each iteration."""
    weights = Path(adapter) / "adapter_model.safetensors"
    return str(Path(adapter).resolve()), weights.stat().st_mtime_ns if weights.exists() else 0


def adapter_rank(adapter: Path) -> int:
    """The LoRA rank of a PEFT adapter folder (the largest, if modules differ)."""
    config = json.loads((Path(adapter) / "adapter_config.json").read_text())
    return max([int(config["r"]), *map(int, (config.get("rank_pattern") or {}).values())])
