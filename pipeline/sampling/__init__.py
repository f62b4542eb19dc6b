"""Samplers: the engines that draw the model's replies, chosen by name (`sampler.backend`).

`SAMPLERS` maps each name to a function that builds the sampler for a run's loaded model; a backend
is imported only when chosen (vLLM lives in its own environment). To add one: a module with a class
that has `generate` (`base.Sampler`), and one row here.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.config import ConfigError
from pipeline.sampling.base import Sampler


def engine_dtype(config) -> str:
    """The dtype a vLLM engine runs in: `sampler.dtype`, else the model's."""
    # Imported here: it imports transformers (a second), which a config that fails its checks
    # (pipeline.run.preflight imports this table) never needs.
    from pipeline.models import dtype_name

    return config.sampler.dtype or dtype_name(config.model)


def _hf(config, model, tokenizer, model_dir: str, progress: bool) -> Sampler:
    from pipeline.sampling.hf import HFSampler

    return HFSampler(model, tokenizer, config.sample.generation.batch_size, progress)


def _vllm(config, model, tokenizer, model_dir: str, progress: bool) -> Sampler:
    from pipeline.sampling.vllm import VLLMSampler

    return VLLMSampler(
        model_dir, model, tokenizer, config.sampler, engine_dtype(config), config.seed, progress
    )


def _openai(config, model, tokenizer, model_dir: str, progress: bool) -> Sampler:
    from pipeline.sampling.openai import OpenAISampler

    return OpenAISampler(tokenizer, config.sampler, progress)


# name -> (run config, loaded model, tokenizer, the model's folder on disk, progress) -> Sampler
SAMPLERS: dict[str, Callable[..., Sampler]] = {"hf": _hf, "vllm": _vllm, "openai": _openai}


def check_backend(name: str) -> None:
    """ConfigError unless `sampler.backend` names a row of SAMPLERS."""
    if name not in SAMPLERS:
        raise ConfigError(f"sampler.backend: {name!r} is not a sampler; choose from {', '.join(SAMPLERS)}")


def make_sampler(config, model, tokenizer, model_dir: str, progress: bool = True) -> Sampler:
    """The sampler `config.sampler.backend` names, for the run's loaded `model` (found on disk at `model_dir`)."""
    check_backend(config.sampler.backend)
    return SAMPLERS[config.sampler.backend](config, model, tokenizer, model_dir, progress)
