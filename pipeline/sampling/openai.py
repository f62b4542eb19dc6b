"""The `openai` sampler: any OpenAI-compatible completions server, adapters loaded at run time.

Made for vLLM's server (`rr sampler serve` starts one): the stacked adapter is loaded with
`POST /v1/load_lora_adapter` under a new name whenever it changes, the old one unloaded, and
requests name the adapter as their model. The server must see the adapter's path (same machine
or shared storage). Prompts are sent as token ids from the run's own tokenizer, so the server
generates from exactly what the other samplers do.

Retries with backoff on 429, 5xx, timeouts and connection errors, and the timeouts themselves,
are the `openai` client's own; requests run `sampler.max_concurrency` at a time.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from pipeline.progress import progress_bar
from pipeline.sampling.base import (
    SamplerError,
    SamplingParams,
    TransientSamplerError,
    adapter_key,
    prompt_token_ids,
)


class OpenAISampler:
    def __init__(self, tokenizer, config, progress: bool = True) -> None:  # config: SamplerConfig
        import openai

        self.openai = openai
        self.tokenizer, self.progress = tokenizer, progress
        self.url = config.base_url
        self.max_concurrency = config.max_concurrency
        self.client = openai.OpenAI(
            base_url=self.url,
            api_key=api_key(config.api_key_env, "sampler"),
            timeout=config.timeout_s,
            max_retries=config.max_retries,
        )
        self.base_model = config.served_model or self._first_model()
        self.adapter_name, self.adapter_key_now, self.versions = None, None, 0
        self.generated_tokens = 0
        self.first_reply_seconds = 0.0  # of the last `generate`: until its first reply came back

    def _first_model(self) -> str:
        models = self._call("list the served models", lambda: self.client.models.list().data)
        if not models:
            raise SamplerError(f"sampler.base_url: the server at {self.url} serves no model")
        return models[0].id

    def _call(self, what: str, request):
        return server_call(self.openai, "sampler", self.url, what, request)

    # ------------------------------------------------------------------ adapters

    def _model_for(self, adapter: Path | None) -> str:
        """The model name to request: the base model, or the current adapter loaded at run time."""
        if adapter is None:
            return self.base_model
        key = adapter_key(adapter)
        if key != self.adapter_key_now:
            # A new name per version: vLLM would reuse cached prompt blocks of a reloaded name.
            self.versions += 1
            name = f"rr-stack-{os.getpid()}-{self.versions}"
            self._post("load_lora_adapter", {"lora_name": name, "lora_path": str(Path(adapter).resolve())})
            if self.adapter_name is not None:
                self._post("unload_lora_adapter", {"lora_name": self.adapter_name})
            self.adapter_name, self.adapter_key_now = name, key
        return self.adapter_name

    def _post(self, endpoint: str, body: dict) -> None:
        try:
            self._call(endpoint, lambda: self.client.post(f"/{endpoint}", body=body, cast_to=str))
        except SamplerError as exc:
            if "HTTP 404" in str(exc) or "HTTP 405" in str(exc):
                raise SamplerError(
                    f"sampler: the server at {self.url} does not load adapters at run time (no /v1/{endpoint}); "
                    "start vLLM with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, as "
                    "`rr sampler serve` does"
                ) from None
            raise

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
        model = self._model_for(adapter)
        prompts = prompt_token_ids(self.tokenizer, instructions, prefills)
        greedy = params.temperature <= 0
        n_tokens = 0

        def complete(i: int):
            return self._call(
                "complete",
                lambda: self.client.completions.create(
                    model=model,
                    prompt=prompts[i],
                    n=params.n,
                    max_tokens=params.max_new_tokens,
                    temperature=0.0 if greedy else params.temperature,
                    top_p=1.0 if greedy else params.top_p,
                    seed=params.seed + i,  # one stream per prompt, as the other samplers
                    # vLLM's extension; only sent when asked for, so other servers never see it.
                    extra_body={"min_tokens": params.min_new_tokens} if params.min_new_tokens else None,
                ),
            )

        outputs: list[list[str]] = [[] for _ in prompts]
        with (
            progress_bar(label, len(prompts) * params.n, self.progress, info="0 tok/s") as bar,
            ThreadPoolExecutor(self.max_concurrency) as pool,
        ):
            started = time.perf_counter()
            futures = {pool.submit(complete, i): i for i in range(len(prompts))}
            for done, future in enumerate(as_completed(futures)):
                if future.exception() is not None:
                    for waiting in futures:  # one failure (after its retries) fails the call: stop the rest
                        waiting.cancel()
                    raise future.exception()
                i, response = futures[future], future.result()
                if done == 0:
                    self.first_reply_seconds = time.perf_counter() - started
                choices = sorted(response.choices, key=lambda c: c.index)
                outputs[i] = [choice.text.strip() for choice in choices]
                n_tokens += response.usage.completion_tokens if response.usage else 0
                rate = n_tokens / max(time.perf_counter() - started, 1e-9)
                bar.advance(params.n, info=f"{rate:.0f} tok/s")
        self.generated_tokens += n_tokens
        return outputs


def api_key(env_name: str, field: str) -> str:
    """The key in environment variable `env_name` (`field`.api_key_env names it), or vLLM's any-key."""
    if not env_name:
        return "EMPTY"  # vLLM accepts any key unless started with one
    key = os.environ.get(env_name, "")
    if not key:
        raise SamplerError(f"{field}.api_key_env: the environment variable {env_name} is not set")
    return key


def server_call(openai, field: str, url: str, what: str, request):
    """`request()`, with the client's retries; a failure becomes one line naming the server and the
    config section (`field`) that points at it: transient (Prefect retries the stage) or not."""
    try:
        return request()
    except openai.APIConnectionError as exc:  # timeouts included
        raise TransientSamplerError(
            f"{field}.base_url: no answer from {url} ({what}: {exc}); is the server running? "
            "`rr sampler serve CONFIG` starts one"
        ) from None
    except openai.APIStatusError as exc:
        error = TransientSamplerError if exc.status_code == 429 or exc.status_code >= 500 else SamplerError
        raise error(
            f"{field}: the server at {url} refused to {what}: HTTP {exc.status_code} {_detail(exc)}"
        ) from None


def _detail(exc) -> str:
    """The server's own message, short: vLLM puts it in the body, others in `error.message`."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error")
    message = body.get("message") or (error.get("message") if isinstance(error, dict) else error)
    return str(message or exc.message)[:300]
