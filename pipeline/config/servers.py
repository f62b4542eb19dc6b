"""The config sections that reach an engine or a server: the sampler, and the reveal stage's rewriter."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pipeline.config.base import (
    MAX_NEW_TOKENS,
    MAX_RANK,
    MAX_RETRIES,
    MAX_SECONDS,
    MAX_SEQUENCE_TOKENS,
    MAX_WORKERS,
    Section,
)


class RewriterConfig(Section):
    """Another model that rewrites the reveal stage's best instructions: any OpenAI-compatible chat
    server (vLLM's, `rr sampler serve` with another `model.path`, or a hosted API)."""

    base_url: str = Field(..., description="the server's /v1 URL")
    served_model: str = Field("", description="model name on the server; default: the first it lists")
    api_key_env: str = Field(
        "", description="name of the environment variable holding the API key (never the key)"
    )
    temperature: float = Field(0.7, ge=0, le=2)
    max_new_tokens: int = Field(64, ge=1, le=MAX_NEW_TOKENS)
    max_concurrency: int = Field(8, ge=1, le=MAX_WORKERS, description="requests in flight at once")
    timeout_s: float = Field(120.0, gt=0, le=MAX_SECONDS, description="per request")
    max_retries: int = Field(
        4, ge=0, le=MAX_RETRIES, description="retries with backoff on 429, 5xx, timeouts"
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_url(value)


def http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"expected an http(s) URL ending in /v1, got {value!r}")
    return value.rstrip("/")


class SamplerConfig(Section):
    """Which engine draws the samples: the model is the run's model in every case."""

    backend: str = Field(
        "hf",
        description="a key of SAMPLERS (pipeline/sampling/__init__.py): hf: transformers generate in-process | "
        "vllm: an in-process vllm.LLM (vllm installed) | openai: an OpenAI-compatible server (e.g. `rr sampler serve`)",
    )
    # vllm and rr sampler serve
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None,
        description="vllm, openai via rr sampler serve: the engine's dtype; default model.dtype. bfloat16 "
        "samples faster on CPUs with avx512_bf16 and GPUs, but is no longer token for token hf's float32",
    )
    merge_above_rank: int = Field(
        0,
        ge=0,
        le=MAX_RANK,
        description="vllm: a stack of larger rank is merged into the weights and the engine reloaded; up to "
        "it, served as a LoRA. 0 (always merge): on a CPU vLLM's LoRA path is slower than merged weights "
        "at every rank (rr bench sampling), while a merge and reload takes about a second",
    )
    gpu_memory_utilization: float = Field(
        0.5,
        gt=0,
        le=1,
        description="vllm: share of the device (on CPU: of NUMA node 0's memory) for the engine",
    )
    kv_cache_gib: float | None = Field(
        None,
        gt=0,
        description="vllm: KV cache size; default 2 GiB on a CPU (else vLLM reserves gpu_memory_utilization "
        "of the machine's memory), gpu_memory_utilization's share on a GPU",
    )
    max_model_len: int | None = Field(
        None,
        ge=16,
        le=MAX_SEQUENCE_TOKENS,
        description="vllm: longest prompt + reply in tokens; default: the model's limit",
    )
    # openai
    base_url: str = Field("http://127.0.0.1:8000/v1", description="openai: the server's /v1 URL")
    served_model: str = Field("", description="openai: model name on the server; default: the first it lists")
    api_key_env: str = Field(
        "", description="openai: name of the environment variable holding the API key (never the key)"
    )
    max_concurrency: int = Field(32, ge=1, le=MAX_WORKERS, description="openai: requests in flight at once")
    timeout_s: float = Field(120.0, gt=0, le=MAX_SECONDS, description="openai: per request")
    max_retries: int = Field(
        4, ge=0, le=MAX_RETRIES, description="openai: retries with backoff on 429, 5xx, timeouts"
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_url(value)
