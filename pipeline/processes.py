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
