"""Signals leave nothing running and a run that resumes (issue 20).

`rr unlearn` with its temporary Prefect server: a terminal's Ctrl-C (SIGINT to the whole process
group) in iteration 2 exits 130, `kill` (SIGTERM) in iteration 3 exits 143, each with one line
saying how to resume, no traceback and no process left behind; the same command then finishes
the run, its report and plot written although the target's description is broken mathtext. `rr ui` stops its server on SIGTERM. A process "left behind" is any process that carries
the test's marker in its environment, which every child of `rr` inherits.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
TIMEOUT = 600


def _marked(mark: str) -> list[int]:
    """The live processes whose environment holds `RR_TEST_MARK=mark`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"RR_TEST_MARK={mark}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":  # a zombie has exited; its parent has not reaped it yet
                    found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _none_left(mark: str, within_s: float = 15) -> list[int]:
    deadline = time.monotonic() + within_s
    while (left := _marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _env(tmp_path: Path, cache_dir: Path, mark: str) -> dict:
    env = {**os.environ, "RR_CACHE_DIR": str(cache_dir), "RR_TEST_MARK": mark,
           "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}  # fmt: skip
    env.pop("PREFECT_API_URL", None)  # the run starts its own temporary server
    return env


def _start(command: list[str], env: dict) -> subprocess.Popen:
    # A session of its own, as a shell gives a foreground job: killpg reaches what a terminal's Ctrl-C reaches.
    return subprocess.Popen(
        [sys.executable, "-m", "rr", *command], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def _wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not path.is_file():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.2)


def _ended(process: subprocess.Popen) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=180)
    return process.returncode, stdout, stderr


def test_ctrl_c_to_the_group_and_sigterm_leave_nothing_running_and_the_run_resumes(tmp_path, cache_dir):
    mark = uuid.uuid4().hex
    env = _env(tmp_path, cache_dir, mark)
    # A description that matplotlib's mathtext cannot parse: the report and its plot are still written.
    described = r"target.description=Mira's $\frac{$ facts"
    command = [
        "unlearn",
        "configs/tiny.yaml",
        "--out",
        str(tmp_path / "runs"),
        "--no-progress",
        "--set",
        described,
        "--set",
        "stop.min_iterations=3",  # three iterations whatever the scores: the test stops it in the third
        # What is tested is how it stops and resumes, not how much it forgets: shorter releases.
        # (Fewer samples, as in conftest's QUICK, can leave an iteration nothing to forget: the run ends.)
        "--set",
        "release.steps=10",
        "--set",
        "evaluate.max_new_tokens=24",
    ]
    run_dir = tmp_path / "runs" / "tiny"

    first = _start(command, env)
    _wait_for(run_dir / "iter_2" / "top_instructions.json", first)
    assert len(_marked(mark)) >= 2  # rr and its temporary Prefect server
    os.killpg(first.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    code, _, stderr = _ended(first)
    assert code == 130, stderr[-3000:]
    assert "interrupted; run the same command again to resume" in stderr
    assert "Traceback" not in stderr and "ConnectError" not in stderr
    assert _none_left(mark) == []

    second = _start(command, env)
    _wait_for(run_dir / "iter_3" / "top_instructions.json", second)
    second.send_signal(signal.SIGTERM)  # `kill <pid>`
    code, stdout, stderr = _ended(second)
    assert code == 143, stderr[-3000:]
    assert "resuming" in stdout and "after iteration 1" in stdout
    assert "run the same command again to resume" in stderr and "Traceback" not in stderr
    assert _none_left(mark) == []

    third = _start(command, env)
    code, stdout, stderr = _ended(third)
    assert code == 0, stderr[-3000:]
    assert "after iteration 2" in stdout and (run_dir / "summary.json").is_file()
    assert (
        r"$\frac{$" in (run_dir / "report.md").read_text()
        and (run_dir / "plots" / "forgetting.png").is_file()
    )
    assert _none_left(mark) == []


def test_rr_ui_stops_its_server_on_sigterm(tmp_path):
    mark = uuid.uuid4().hex
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ui = _start(["ui", "--port", str(port)], _env(tmp_path, tmp_path, mark))
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert ui.poll() is None and time.monotonic() < deadline, ui.communicate()
        time.sleep(0.5)
    ui.send_signal(signal.SIGTERM)
    code, _, stderr = _ended(ui)
    assert code == 0, stderr
    assert _none_left(mark) == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{api}/health", timeout=2)
