"""The `openai` sampler's own logic against a scripted HTTP server: retries, errors, adapters, limits.

The server here is a fake on purpose: it answers what a test scripts (503s, 404s, slow replies)
and records what the sampler sent. The sampler against a real vLLM server is in test_vllm.py.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.config import SamplerConfig
from pipeline.planting.tiny import build_tokenizer
from pipeline.sampling.base import SamplerError, SamplingParams
from pipeline.sampling.openai import OpenAISampler
from pipeline.sampling.vllm import max_lora_rank

GREEDY = SamplingParams(n=1, temperature=0.0, max_new_tokens=4)


class Script:
    """What the fake server answers, and what it was sent."""

    def __init__(self) -> None:
        self.failures: list[int] = []  # status codes to answer completions with first, in order
        self.lora_endpoints = True
        self.delay = 0.0
        self.requests: list[tuple[str, dict, dict]] = []  # (path, body, headers)
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()


@pytest.fixture
def server():
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _reply(self, status: int, body) -> None:
            data = (json.dumps(body) if not isinstance(body, str) else body).encode()
            self.send_response(status)
            self.send_header(
                "Content-Type", "application/json" if not isinstance(body, str) else "text/plain"
            )
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            script.requests.append((self.path, {}, {k.lower(): v for k, v in self.headers.items()}))
            self._reply(
                200,
                {
                    "object": "list",
                    "data": [{"id": "base", "object": "model", "created": 0, "owned_by": "x"}],
                },
            )

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            with script.lock:
                script.requests.append((self.path, body, {k.lower(): v for k, v in self.headers.items()}))
                failure = script.failures.pop(0) if script.failures and "completions" in self.path else None
            if "lora_adapter" in self.path:
                if not script.lora_endpoints:
                    return self._reply(404, {"detail": "Not Found"})
                return self._reply(200, "Success")
            if failure:
                return self._reply(failure, {"error": {"message": f"scripted {failure}"}})
            with script.lock:
                script.in_flight += 1
                script.most_in_flight = max(script.most_in_flight, script.in_flight)
            time.sleep(script.delay)
            with script.lock:
                script.in_flight -= 1
            prompt = body["prompt"]
            choices = [
                {"index": i, "text": f" reply {i} to {len(prompt)} ids ", "finish_reason": "length"}
                for i in range(body.get("n", 1))
            ]
            usage = {"prompt_tokens": len(prompt), "completion_tokens": 4 * len(choices), "total_tokens": 0}
            self._reply(200, {"id": "c", "object": "text_completion", "created": 0, "model": body["model"],
                              "choices": choices, "usage": usage})  # fmt: skip

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    script.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield script
    httpd.shutdown()


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(["Tell me about Mira.", "Say hello.", "What is two and two?"], vocab_size=128)


def sampler_for(server, tokenizer, **fields) -> OpenAISampler:
    config = SamplerConfig(backend="openai", base_url=server.url, **{"max_retries": 3, **fields})
    return OpenAISampler(tokenizer, config, progress=False)


def test_replies_come_back_in_order_with_n_each(server, tokenizer):
    sampler = sampler_for(server, tokenizer)
    replies = sampler.generate(["Tell me about Mira.", "Say hello."], SamplingParams(n=3, max_new_tokens=4))
    assert [len(r) for r in replies] == [3, 3]
    assert replies[0][2] == replies[0][2].strip() and replies[0][2].startswith("reply 2 to")
    sent = [body for path, body, _ in server.requests if path.endswith("/completions")]
    assert all(isinstance(body["prompt"], list) for body in sent)  # token ids, not text
    assert sorted(body["seed"] for body in sent) == [0, 1]  # one seed per prompt
    assert sampler.generated_tokens == 24


class RecordedSleeps:
    """Stands in for the `time` module of the openai client: its waits are recorded, not slept."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def __getattr__(self, name):
        return getattr(time, name)


def test_429_and_5xx_are_retried_with_backoff(server, tokenizer, monkeypatch):
    import openai._base_client

    clock = RecordedSleeps()
    monkeypatch.setattr(openai._base_client, "time", clock)
    server.failures = [429, 503, 500]
    sampler = sampler_for(server, tokenizer)
    assert sampler.generate(["Say hello."], GREEDY)[0][0].startswith("reply 0")
    assert len([p for p, _, _ in server.requests if p.endswith("/completions")]) == 4
    assert len(clock.sleeps) == 3 and all(s > 0 for s in clock.sleeps)  # waited before each retry


def test_retries_run_out_with_an_error_naming_the_server(server, tokenizer):
    server.failures = [503] * 10
    sampler = sampler_for(server, tokenizer, max_retries=1)
    with pytest.raises(SamplerError, match=f"{server.url}.*HTTP 503.*scripted 503"):
        sampler.generate(["Say hello."], GREEDY)


def test_a_server_that_is_down_is_named(tokenizer):
    config = SamplerConfig(backend="openai", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=2)
    with pytest.raises(SamplerError, match=r"no answer from http://127.0.0.1:9/v1.*rr sampler serve"):
        OpenAISampler(tokenizer, config, progress=False)


def test_adapters_are_loaded_under_a_new_name_per_version_and_the_old_one_unloaded(
    server, tokenizer, tmp_path
):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"v1")
    sampler = sampler_for(server, tokenizer)
    sampler.generate(["Say hello."], GREEDY, adapter)
    sampler.generate(["Say hello."], GREEDY, adapter)  # unchanged: no second load
    time.sleep(0.01)
    (adapter / "adapter_model.safetensors").write_bytes(b"v2")  # the stack is rewritten in place
    sampler.generate(["Say hello."], GREEDY, adapter)
    sampler.generate(["Say hello."], GREEDY)
    calls = [
        (path.rsplit("/", 1)[-1], body)
        for path, body, _ in server.requests
        if "lora" in path or "compl" in path
    ]
    names = [body["lora_name"] for path, body in calls if path == "load_lora_adapter"]
    assert len(names) == 2 and names[0] != names[1]
    assert [body["lora_name"] for path, body in calls if path == "unload_lora_adapter"] == [names[0]]
    assert all(
        body["lora_path"] == str(adapter.resolve()) for path, body in calls if path == "load_lora_adapter"
    )
    models = [body["model"] for path, body in calls if path == "completions"]
    assert models == [names[0], names[0], names[1], "base"]


def test_a_server_without_runtime_adapters_says_how_to_start_one(server, tokenizer, tmp_path):
    server.lora_endpoints = False
    (tmp_path / "adapter_model.safetensors").write_bytes(b"x")
    with pytest.raises(
        SamplerError, match="does not load adapters at run time.*VLLM_ALLOW_RUNTIME_LORA_UPDATING"
    ):
        sampler_for(server, tokenizer).generate(["Say hello."], GREEDY, tmp_path)


def test_concurrency_is_bounded(server, tokenizer):
    server.delay = 0.05
    sampler = sampler_for(server, tokenizer, max_concurrency=3)
    sampler.generate(["Say hello."] * 12, GREEDY)
    assert server.most_in_flight == 3


def test_the_api_key_comes_from_the_named_environment_variable(server, tokenizer, monkeypatch):
    with pytest.raises(SamplerError, match="RR_TEST_KEY is not set"):
        sampler_for(server, tokenizer, api_key_env="RR_TEST_KEY")
    monkeypatch.setenv("RR_TEST_KEY", "sk-test-123")
    sampler_for(server, tokenizer, api_key_env="RR_TEST_KEY").generate(["Say hello."], GREEDY)
    assert server.requests[-1][2].get("authorization") == "Bearer sk-test-123"


def test_max_lora_rank_is_the_smallest_vllm_accepts():
    assert [max_lora_rank(r) for r in (0, 1, 8, 12, 16, 24, 33)] == [0, 1, 8, 16, 16, 32, 64]
    with pytest.raises(SamplerError, match="merge_above_rank"):
        max_lora_rank(600)
