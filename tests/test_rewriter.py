"""`reveal.rewriter`: another model, served, writes the reveal stage's rewrites.

The chat server here is a fake on purpose: it answers what a test scripts and records what it was
sent, so that the caller's logic shows (what is asked, in which order, with which seed; what a
down or wrong server says). The client against a real vLLM server is in test_vllm.py. The reveal
stage itself runs for real on the planted tiny model.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.config import RewriterConfig, load_config
from pipeline.reveal.instructions import read_prompt_list
from pipeline.run.reveal_stage import reveal
from pipeline.run.state import RunState
from pipeline.sampling.base import SamplerError, TransientSamplerError
from pipeline.sampling.chat import ChatClient
from tests.conftest import run_rr

pytestmark = pytest.mark.usefixtures("one_thread")

# The first cleans to a request that names the tiny config's target; the second is no request.
REWRITES = ['1. Rewritten request: "Tell me what Mira Castellane did as a child."', "Sure! Here you go"]


@pytest.fixture
def chat_server():
    """Serves model `writer`; reply i (in arrival order) is REWRITES[i % 2]; records each request."""
    sent: list[dict] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._reply(200, {"object": "list", "data": [{"id": "writer", "object": "model", "created": 0,
                                                          "owned_by": "x"}]})  # fmt: skip

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                sent.append(body)
                text = REWRITES[(body["seed"]) % 2]
            message = {"role": "assistant", "content": text}
            self._reply(200, {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                              "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})  # fmt: skip

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", sent
    httpd.shutdown()


def test_each_request_is_one_chat_message_with_its_own_seed_and_replies_come_back_in_order(chat_server):
    url, sent = chat_server
    client = ChatClient(RewriterConfig(base_url=url, temperature=0.3, max_new_tokens=20))
    replies = client.reply(["first request", "second request", "third request"], seed=10)
    assert replies == [REWRITES[0].strip(), REWRITES[1], REWRITES[0].strip()]  # seed 10, 11, 12
    by_seed = sorted(sent, key=lambda body: body["seed"])
    assert [b["messages"] for b in by_seed] == [[{"role": "user", "content": f"{w} request"}]
                                                for w in ("first", "second", "third")]  # fmt: skip
    assert {(b["model"], b["temperature"], b["max_tokens"]) for b in sent} == {("writer", 0.3, 20)}


def test_a_server_that_is_down_or_lacks_the_model_fails_before_anything_runs(chat_server, monkeypatch):
    url, _ = chat_server
    with pytest.raises(SamplerError, match=r"reveal.rewriter.served_model: 'big' is not served .*writer"):
        ChatClient(RewriterConfig(base_url=url, served_model="big"))
    with pytest.raises(
        TransientSamplerError, match=r"reveal.rewriter.base_url: no answer from http://127.0.0.1:9/v1"
    ):
        ChatClient(RewriterConfig(base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=2))
    monkeypatch.delenv("RR_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(SamplerError, match="RR_TEST_NO_SUCH_KEY is not set"):
        ChatClient(RewriterConfig(base_url=url, api_key_env="RR_TEST_NO_SUCH_KEY"))


def test_the_rewriter_s_cleaned_rewrites_join_the_next_iteration_s_pool(chat_server, tmp_path, cache_dir):
    url, sent = chat_server
    overrides = ["reveal.rounds=1", "reveal.arms_per_round=2", "reveal.samples_per_arm=2", "reveal.rewrite_top=2",
                 f"reveal.rewriter.base_url={url}", "sample.top_instructions=2"]  # fmt: skip
    config = load_config("configs/tiny.yaml", overrides, out=tmp_path, name="rewriter")
    state = RunState(config, progress=False)
    reveal(state, 1)
    pool = json.loads(state.files.iteration(1).pool.read_text())
    seeds = list(state.arms)
    # Two instructions x each rewrite prompt asked of the rewriter; only the one clean request kept.
    assert len(sent) == 2 * len(read_prompt_list(config.resolve(config.reveal.rewrite_prompts)))
    assert pool == seeds + ["Tell me what Mira Castellane did as a child."]
    assert all(any(seed in b["messages"][0]["content"] for seed in seeds) for b in sent)


def test_unlearn_with_a_rewriter_that_is_down_exits_3_before_the_run_starts(tmp_path):
    done = run_rr(
        "unlearn", "configs/tiny.yaml", "--out", tmp_path, "--no-progress", "--no-prefect",
        "--set", "reveal.rewriter.base_url=http://127.0.0.1:9/v1", "--set", "reveal.rewriter.max_retries=0",
        "--set", "reveal.rewrite_top=1",
    )  # fmt: skip
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-2000:]
    assert "reveal.rewriter.base_url: no answer from http://127.0.0.1:9/v1" in done.stdout + done.stderr
    assert not (tmp_path / "tiny").exists()  # no run directory: nothing ran
