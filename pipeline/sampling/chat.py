"""Replies of another model, asked in plain chat: the reveal stage's rewriter (`reveal.rewriter`).

The run's own samplers send token ids from the run's tokenizer; a rewriter is a different model
with a tokenizer of its own, so it gets chat messages (`/v1/chat/completions`) and applies its own
chat template. It never sees the run's adapters: it only writes instructions.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from pipeline.sampling.base import SamplerError
from pipeline.sampling.openai import api_key, server_call

FIELD = "reveal.rewriter"


class ChatClient:
    """One reply per request from `config.served_model` on an OpenAI-compatible chat server."""

    def __init__(self, config) -> None:  # config: RewriterConfig
        import openai

        self.openai, self.config, self.url = openai, config, config.base_url
        self.client = openai.OpenAI(
            base_url=self.url,
            api_key=api_key(config.api_key_env, FIELD),
            timeout=config.timeout_s,
            max_retries=config.max_retries,
        )
        # Asked now, so that a server that is down or serves nothing fails the run before it starts.
        models = self._call("list the served models", lambda: self.client.models.list().data)
        served = [m.id for m in models]
        if config.served_model and config.served_model not in served:
            raise SamplerError(
                f"{FIELD}.served_model: {config.served_model!r} is not served at {self.url} "
                f"(it serves: {', '.join(served) or 'nothing'})"
            )
        if not served:
            raise SamplerError(f"{FIELD}.base_url: the server at {self.url} serves no model")
        self.model = config.served_model or served[0]

    def _call(self, what: str, request):
        return server_call(self.openai, FIELD, self.url, what, request)

    def reply(self, requests: list[str], seed: int) -> list[str]:
        """The model's reply to each request, in order (request i sampled with seed `seed + i`)."""

        def ask(i: int) -> str:
            response = self._call(
                "reply",
                lambda: self.client.chat.completions.create(
                    model=self.model,
                    messages=[{"role": "user", "content": requests[i]}],
                    max_tokens=self.config.max_new_tokens,
                    temperature=self.config.temperature,
                    seed=seed + i,
                    n=1,
                ),
            )
            content = response.choices[0].message.content if response.choices else None
            return (content or "").strip()

        with ThreadPoolExecutor(self.config.max_concurrency) as pool:
            return list(pool.map(ask, range(len(requests))))
