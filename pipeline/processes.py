"""Servers the pipeline starts (vLLM, a temporary Prefect API) live exactly as long as the process
that started them.

Each runs in its own session, so a terminal's Ctrl-C (SIGINT to the whole foreground group) reaches
it through its parent, which stops it in order, instead of killing it under a run that still needs
it. On Linux the kernel also sends it SIGTERM when its parent dies, SIGKILL included, so it never
outlives a crashed run.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import time
import urllib.request

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: nothing but the system call.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def own_session() -> dict:
    """`subprocess.Popen` keywords for a server that belongs to this process (see the module)."""
    kwargs: dict = {"start_new_session": True}
    if sys.platform == "linux":
        kwargs["preexec_fn"] = _die_with_parent
    return kwargs


def stop_process(process: subprocess.Popen, timeout_s: float = 30) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`; returns once the process is gone."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class NotReady(RuntimeError):
    """A server exited, or stayed silent, before it answered."""


def wait_until_answering(
    url: str, process: subprocess.Popen, timeout_s: float, what: str, poll_s: float = 0.5
) -> float:
    """Seconds until `url` answers 200; NotReady if `process` exits first or `timeout_s` passes."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if process.poll() is not None:
            raise NotReady(f"{what} exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except OSError:  # refused while it starts; URLError and timeouts are OSErrors
            pass
        time.sleep(poll_s)
    raise NotReady(f"{what} at {url} was not ready after {timeout_s:.0f} s")
