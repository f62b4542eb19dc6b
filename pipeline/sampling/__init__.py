"""Samplers: the engines that draw the model's replies, chosen by `sampler.backend`."""

from __future__ import annotations

from pipeline.sampling.base import Sampler


def make_sampler(config, model, tokenizer, model_dir: str, progress: bool = True) -> Sampler:
    """The sampler `config.sampler.backend` names, for the run's loaded `model` (found on disk at `model_dir`)."""
    backend = config.sampler.backend
    if backend == "vllm":
        from pipeline.sampling.vllm import VLLMSampler

        return VLLMSampler(
            model_dir, model, tokenizer, config.sampler, config.model.dtype, config.seed, progress
        )
    if backend == "openai":
        from pipeline.sampling.openai import OpenAISampler

        return OpenAISampler(tokenizer, config.sampler, progress)
    from pipeline.sampling.hf import HFSampler

    return HFSampler(model, tokenizer, config.sample.generation.batch_size, progress)
