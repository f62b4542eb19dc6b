import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"  # `make vllm-cpu` builds it


def pytest_terminal_summary(terminalreporter):
    """Say plainly, at the end, whether the tests against real vLLM ran."""
    if not VLLM_PYTHON.is_file():
        terminalreporter.write_line(
            "vLLM tests SKIPPED: no .venv-vllm (`make vllm-cpu` builds it; `make test-vllm` runs them)",
            yellow=True,
        )


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """A model cache of the test session's own, so tests never depend on the user's cache."""
    path = tmp_path_factory.mktemp("rr-cache")
    os.environ["RR_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors gain nothing from a second thread, and on a busy 2-core machine intra-op threads
    spin against each other (measured 10x slower). Modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_thread")`; the count is restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def run_rr(*args, env=None, timeout=600):
    """Run the `rr` command line as a user would; returns the CompletedProcess."""
    full_env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "rr", *map(str, args)],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, cache_dir):
    """`rr unlearn configs/tiny.yaml` run once, as a user would; (run directory, CompletedProcess).
    Tests only read it."""
    out = tmp_path_factory.mktemp("runs")
    result = run_rr(
        "unlearn", "configs/tiny.yaml", "--out", out, "--no-progress", env={"RR_CACHE_DIR": str(cache_dir)}
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out / "tiny", result


def without_seconds(data):
    """`data` less every `seconds` entry: wall-clock times differ between two runs that are otherwise
    the same to the bit (every stage is seeded)."""
    if isinstance(data, dict):
        return {k: without_seconds(v) for k, v in data.items() if k != "seconds"}
    if isinstance(data, list):
        return [without_seconds(v) for v in data]
    return data
