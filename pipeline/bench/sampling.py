"""`rr bench sampling`: the same sampling work through `hf`, in-process `vllm` and a vLLM server.

Every arm generates `replies` replies of exactly `new_tokens` tokens (EOS ignored until then) to
each of the same `prompts` instructions, sampled as the loop samples (the config's temperature
and top_p, a fixed seed; the loop asks several replies to each instruction, which the `hf`
sampler prefills once), with no adapter, a rank-8 adapter, and stacks of two and four rank-8
adapters (ranks 16 and 32). The adapters are random LoRAs written as ordinary PEFT folders:
throughput does not depend on what an adapter learned.

vLLM runs in its own virtual environment, so its arms run in subprocesses of that Python: the
in-process sampler in a worker (this module, run as a script), the `openai` sampler against a
server from `rr sampler serve`'s command line. The in-process engine is started once per
`merge_above_rank` (0: merged weights only; 8, 16, 32: LoRA up to that rank, merged above it),
which shows where the LoRA path gets slower than merged weights, and twice more in bfloat16.

Figures per arm: generated tokens per second (of the timed call, after an unmeasured warm-up
call with the same adapter, which pays the adapter's merge or load: `adapter_s`), seconds until
the sampler handed back its first replies, and the peak resident memory of the processes doing
the work (this one for `hf`; the worker; the server and its engine), read every 20 ms.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil
import torch

from pipeline.config import RunConfig
from pipeline.files import write_json
from pipeline.models import device_name, dtype_name
from pipeline.release.olora import Adapter, stack_adapters, write_adapter
from pipeline.run.model import load_run_model
from pipeline.run.preflight import check_names
from pipeline.run.prompts import run_prompts
from pipeline.sampling.base import SamplingParams, adapter_rank
from pipeline.sampling.hf import HFSampler

ADAPTERS = {"none": 0, "rank-8": 1, "rank-16 stack": 2, "rank-32 stack": 4}  # rank-8 adapters stacked
# Each in-process engine: (merge_above_rank, dtype; None = the model's). bfloat16 engines show what
# giving up float32's token-for-token equality with hf buys.
VLLM_ENGINES = ((0, None), (8, None), (16, None), (32, None), (0, "bfloat16"), (16, "bfloat16"))


def bench_prompts(config: RunConfig, n: int) -> list[str]:
    """`n` instructions of the run's own kinds (reveal seeds, retain, held-out), cycled if too few."""
    arms, retain, evals = run_prompts(config)
    pool = list(dict.fromkeys(arms + retain + evals))
    return [pool[i % len(pool)] for i in range(n)]


def random_lora(model, rank: int, seed: int, modules: list[str], scale: float = 0.02) -> Adapter:
    """A random LoRA on every `modules` projection of `model`, small enough to keep replies sane."""
    generator = torch.Generator().manual_seed(seed)
    weights: Adapter = {}
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in modules and isinstance(module, torch.nn.Linear):
            a = torch.randn(rank, module.in_features, generator=generator) / module.in_features**0.5
            weights[name] = (a, torch.randn(module.out_features, rank, generator=generator) * scale)
    return weights


def write_bench_adapters(model, model_dir: str, config: RunConfig, folder: Path) -> dict[str, str | None]:
    """{label: adapter folder or None}: one rank-8 LoRA, and stacks of 2 and 4 of them."""
    modules = list(config.release.target_modules)
    parts = [random_lora(model, 8, config.seed + i, modules) for i in range(max(ADAPTERS.values()))]
    adapters: dict[str, str | None] = {}
    for label, count in ADAPTERS.items():
        if count == 0:
            adapters[label] = None
            continue
        weights = parts[0] if count == 1 else stack_adapters(parts[:count])
        adapters[label] = str(write_adapter(weights, folder / label.replace(" ", "_"), model_dir))
    return adapters


class PeakRSS:
    """Peak resident memory (MB) of a process and its children while the block runs."""

    def __init__(self, pid: int) -> None:
        self.process, self.peak_mb, self.running = psutil.Process(pid), 0.0, False

    def _read(self) -> float:
        total = 0
        for process in [self.process, *self.process.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total / 2**20

    def _poll(self) -> None:
        while self.running:
            self.peak_mb = max(self.peak_mb, self._read())
            time.sleep(0.02)

    def __enter__(self) -> PeakRSS:
        self.running, self.peak_mb = True, self._read()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join()
        self.peak_mb = max(self.peak_mb, self._read())


def measure(sampler, prompts: list[str], params: SamplingParams, adapter: str | None, pid: int) -> dict:
    """One arm: an unmeasured warm-up call with the adapter (its merge or load), then the timed call."""
    adapter_path = Path(adapter) if adapter else None
    started = time.perf_counter()
    sampler.generate(prompts[:1], SamplingParams(n=1, max_new_tokens=2, temperature=0.0), adapter_path)
    adapter_s = time.perf_counter() - started
    before = sampler.generated_tokens
    with PeakRSS(pid) as memory:
        started = time.perf_counter()
        replies = sampler.generate(prompts, params, adapter_path, label="bench")
        seconds = time.perf_counter() - started
    tokens = sampler.generated_tokens - before
    return {
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tok_per_s": round(tokens / seconds, 2),
        "first_batch_s": round(sampler.first_reply_seconds, 3),
        "adapter_s": round(adapter_s, 3),
        "peak_mb": round(memory.peak_mb, 1),
        "replies": sum(len(r) for r in replies),
    }


def bench_params(config: RunConfig, new_tokens: int, replies: int = 1) -> SamplingParams:
    """The config's generation settings, `replies` replies of exactly `new_tokens` tokens each."""
    params = SamplingParams.from_generation(config.sample.generation, n=replies, seed=config.seed)
    return replace(params, max_new_tokens=new_tokens, min_new_tokens=new_tokens)


# ------------------------------------------------------------------------------- the arms


def hf_rows(model, tokenizer, config, prompts, params, adapters, log) -> list[dict]:
    sampler = HFSampler(model, tokenizer, config.sample.generation.batch_size, progress=False)
    rows = []
    for label, adapter in adapters.items():
        log(f"hf, {label} ...")
        rows.append({"backend": "hf", "engine": "generate, merged", "dtype": dtype_name(config.model), "adapter": label,
                     **measure(sampler, prompts, params, adapter, _pid())})  # fmt: skip
    return rows


def vllm_rows(python: Path, job: dict, workdir: Path, log) -> list[dict]:
    """The in-process `vllm` sampler's arms, run by this module as a script in vLLM's Python."""
    from pipeline.sampling.serve import vllm_env

    rows = []
    for merge_above_rank, dtype in VLLM_ENGINES:  # one process per engine: vLLM starts one per process
        job_file, out_file = workdir / "vllm_job.json", workdir / "vllm_rows.json"
        dtype = dtype or job["dtype"]
        write_json(job_file, {**job, "merge_above_rank": merge_above_rank, "engine_dtype": dtype})
        log(f"vllm in-process, merge_above_rank {merge_above_rank}, {dtype} ({python}) ...")
        done = subprocess.run(
            [str(python), "-m", "pipeline.bench.sampling", str(job_file), str(out_file)],
            env=vllm_env(python),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the vllm worker failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        rows += json.loads(out_file.read_text())
    return rows


def openai_rows(
    python: Path, model_dir, config, tokenizer, prompts, params, adapters, log_dir: Path, log
) -> list[dict]:
    """The `openai` sampler against a vLLM server started as `rr sampler serve` starts it."""
    from pipeline.processes import stop_process
    from pipeline.sampling import engine_dtype
    from pipeline.sampling.openai import OpenAISampler
    from pipeline.sampling.serve import start_server, wait_until_ready

    port = _free_port()
    # The server must fit the largest stack: four rank-8 adapters.
    served = config.model_copy(
        update={"release": config.release.model_copy(update={"rank": 8}),
                "stop": config.stop.model_copy(update={"max_iterations": max(ADAPTERS.values())})}
    )  # fmt: skip
    log(f"vLLM server on port {port} (log: {log_dir / 'server.log'}) ...")
    server = start_server(python, model_dir, served, port, log=log_dir / "server.log")
    try:
        startup = wait_until_ready(f"http://127.0.0.1:{port}/v1", server)
        sampler_config = config.sampler.model_copy(
            update={"backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "served_model": "base",
                    "max_concurrency": len(prompts)}
        )  # fmt: skip
        sampler = OpenAISampler(tokenizer, sampler_config, progress=False)
        rows = []
        for label, adapter in adapters.items():
            log(f"openai, {label} ...")
            row = measure(sampler, prompts, params, adapter, server.pid)
            rows.append({"backend": "openai", "engine": "server, LoRA<=32", "dtype": engine_dtype(config), "adapter": label,
                         "startup_s": round(startup, 1), **row})  # fmt: skip
        return rows
    finally:
        stop_process(server)


def run_sampling_bench(
    config: RunConfig,
    out: Path,
    prompts_n: int = 64,
    new_tokens: int = 64,
    backends: tuple[str, ...] = ("hf", "vllm", "openai"),
    python: Path | None = None,
    progress: bool = True,
    log=print,
    replies: int = 1,
) -> dict:
    """All arms, one table: results.json `{"rows": [{"backend", "adapter", "tok_per_s", "ratio_to_hf", ...}]}`."""
    from pipeline.sampling.serve import vllm_python

    check_names(config)
    vllm_needed = {"vllm", "openai"} & set(backends)
    python = vllm_python(python) if vllm_needed else None
    model, tokenizer, info = load_run_model(config, progress)
    model_dir = info["name_or_path"]  # the folder a vLLM engine loads: converted, planted or the user's
    prompts = bench_prompts(config, prompts_n)
    params = bench_params(config, new_tokens, replies)
    out.mkdir(parents=True, exist_ok=True)
    # Each backend's rows are kept in parts/ as they finish: a run started again with the same
    # settings reuses them (a server that failed does not cost the other arms).
    setting = {"model_dir": model_dir, "dtype": dtype_name(config.model), "prompts": prompts, "params": params.__dict__,
               "hf_batch_size": config.sample.generation.batch_size, "sampler": config.sampler.model_dump(mode="json")}  # fmt: skip
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        adapters = write_bench_adapters(model, model_dir, config, workdir / "adapters")
        log(
            f"{prompts_n} prompts x {replies} replies x {new_tokens} new tokens; adapters: {', '.join(adapters)}"
        )
        for backend in backends:
            part = out / "parts" / f"{backend}.json"
            saved = json.loads(part.read_text()) if part.is_file() else {}
            if saved.get("setting") == setting:
                log(f"{backend}: reusing {part}")
                rows += saved["rows"]
                continue
            if backend == "hf":
                measured = hf_rows(model, tokenizer, config, prompts, params, adapters, log)
            elif backend == "vllm":
                job = {"model_dir": model_dir, "dtype": dtype_name(config.model), "seed": config.seed,
                       "sampler": config.sampler.model_dump(mode="json"), "prompts": prompts,
                       "params": params.__dict__, "adapters": adapters}  # fmt: skip
                measured = vllm_rows(python, job, workdir, log)
            else:
                measured = openai_rows(
                    python, model_dir, config, tokenizer, prompts, params, adapters, out, log
                )
            write_json(part, {"setting": setting, "rows": measured})
            rows += measured
    hf_rate = {row["adapter"]: row["tok_per_s"] for row in rows if row["backend"] == "hf"}
    for row in rows:
        row["ratio_to_hf"] = (
            round(row["tok_per_s"] / hf_rate[row["adapter"]], 3) if row["adapter"] in hf_rate else None
        )
    results = {
        "model": config.model.path,
        "model_dir": model_dir,
        "dtype": dtype_name(config.model),
        "device": device_name(config.model),
        "prompts": prompts_n,
        "new_tokens": new_tokens,
        "replies": replies,
        "hf_batch_size": config.sample.generation.batch_size,
        "rows": rows,
        "best_vllm_ratio": best_vllm_ratio(rows),
    }
    write_json(out / "results.json", results)
    (out / "report.md").write_text(report(results))
    return results


def best_vllm_ratio(rows: list[dict]) -> dict[str, float]:
    """Per adapter, the best vLLM row's tokens per second over `hf`'s."""
    best: dict[str, float] = {}
    for row in rows:
        if row["backend"] != "hf" and row.get("ratio_to_hf") is not None:
            best[row["adapter"]] = max(best.get(row["adapter"], 0.0), row["ratio_to_hf"])
    return best


def report(results: dict) -> str:
    lines = [
        f"# Sampling throughput: {results['prompts']} prompts x {results.get('replies', 1)} replies x "
        f"{results['new_tokens']} new tokens",
        "",
        f"Model {results['model']} ({results['dtype']}), {results['device']}; hf batch size "
        f"{results['hf_batch_size']}.",
        "",
        "| backend | engine | adapter | tok/s | x hf | first replies s | adapter setup s | peak MB |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        ratio = "" if row["ratio_to_hf"] is None else f"{row['ratio_to_hf']:.2f}"
        lines.append(
            f"| {row['backend']} | {row['engine']} | {row['adapter']} | {row['tok_per_s']:.0f} | {ratio} | "
            f"{row['first_batch_s']:.2f} | {row['adapter_s']:.2f} | {row['peak_mb']:.0f} |"
        )
    best = ", ".join(f"{label} {ratio:.2f}x" for label, ratio in results["best_vllm_ratio"].items())
    lines += ["", f"Best vLLM path against hf: {best}."]
    return "\n".join(lines) + "\n"


def _pid() -> int:
    import os

    return os.getpid()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------- the vllm worker


def _worker(job_file: Path, out_file: Path) -> None:
    """Run in vLLM's Python: one in-process engine (the job's `merge_above_rank`), every adapter."""
    import os

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.config import SamplerConfig
    from pipeline.sampling.vllm import VLLMSampler

    job = json.loads(job_file.read_text())
    tokenizer = AutoTokenizer.from_pretrained(job["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=getattr(torch, job["dtype"])).eval()
    params = SamplingParams(**job["params"])
    merge_above_rank = job["merge_above_rank"]
    config = SamplerConfig(**{**job["sampler"], "backend": "vllm", "merge_above_rank": merge_above_rank})
    dtype = job["engine_dtype"]
    sampler = VLLMSampler(job["model_dir"], model, tokenizer, config, dtype, job["seed"], progress=False)
    engine = "merged" if merge_above_rank == 0 else f"LoRA<={merge_above_rank}, else merged"
    engine += "" if dtype == job["dtype"] else f", {dtype}"
    rows = []
    for label, adapter in job["adapters"].items():
        row = measure(sampler, job["prompts"], params, adapter, os.getpid())
        path = (
            "base"
            if adapter is None
            else "LoRA"
            if adapter_rank(Path(adapter)) <= merge_above_rank
            else "merged"
        )
        rows.append({"backend": "vllm", "engine": engine, "merge_above_rank": merge_above_rank, "dtype": dtype, "adapter": label,
                     "path": path, "startup_s": round(sampler.startup_seconds, 1), **row})  # fmt: skip
        print(f"vllm {engine}, {label}: {row['tok_per_s']:.0f} tok/s", file=sys.stderr, flush=True)
    out_file.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":  # vLLM's worker processes are spawned: the guard is required
    _worker(Path(sys.argv[1]), Path(sys.argv[2]))
    sys.exit(0)
