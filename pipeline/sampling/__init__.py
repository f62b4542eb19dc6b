"""Samplers: the engines that draw the model's replies, chosen by `sampler.backend`."""

from __future__ import annotations

from pipeline.sampling.base import Sampler


def engine_dtype(config) -> str:
    """The dtype a vLLM engine runs in: `sampler.dtype`, else the model's."""
    return config.sampler.dtype or config.model.dtype


def make_sampler(config, model, tokenizer, model_dir: str, progress: bool = True) -> Sampler:
    """The sampler `config.sampler.backend` names, for the run's loaded `model` (found on disk at `model_dir`)."""
    backend = config.sampler.backend
    if backend == "vllm":
        from pipeline.sampling.vllm import VLLMSampler

        return VLLMSampler(
            model_dir, model, tokenizer, config.sampler, engine_dtype(config), config.seed, progress
        )
    if backend == "openai":
        from pipeline.sampling.openai import OpenAISampler

        return OpenAISampler(tokenizer, config.sampler, progress)
    from pipeline.sampling.hf import HFSampler

    return HFSampler(model, tokenizer, config.sample.generation.batch_size, progress)
