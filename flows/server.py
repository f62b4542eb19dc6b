"""The Prefect API a run reports to: `PREFECT_API_URL`'s server when one is set, else a temporary
one that this process starts, owns and stops.

Prefect would start the temporary server itself, but in our process group and without stopping it
on SIGTERM: a terminal's Ctrl-C killed it under the run (which then retried it for minutes), and
`kill` left it listening. Ours runs in its own session and dies with its parent
(`pipeline.processes`); its settings are Prefect's own for an ephemeral server (no UI, no services).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    temporary_settings,
)

from pipeline.processes import own_session, stop_process, wait_until_answering


def ephemeral_app():
    """The server's ASGI app (uvicorn's `--factory`): Prefect's API without UI or services."""
    from prefect.server.api.server import create_app

    return create_app(ephemeral=True, final=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(port: int) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "flows.server:ephemeral_app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on",
    ]  # fmt: skip
    env = {**os.environ, "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, **own_session())


@contextmanager
def prefect_api() -> Iterator[str]:
    """The block runs against a Prefect API; yields its URL."""
    if PREFECT_API_URL.value():
        yield PREFECT_API_URL.value()
        return
    with temporary_server() as api, temporary_settings(updates={PREFECT_API_URL: api}):
        try:
            yield api
        finally:
            _send_what_is_queued()


@contextmanager
def temporary_server() -> Iterator[str]:
    """A Prefect API server of this process's own for the block (see the module); yields its URL."""
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    process = _start(port)
    try:
        # Prefect's own limit (20 s) is tight for a first start, which creates the database, on a busy CPU.
        limit = max(60, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        wait_until_answering(f"{api}/health", process, limit, "the temporary Prefect server", poll_s=0.1)
        yield api
    finally:
        stop_process(process, timeout_s=10)


def _send_what_is_queued() -> None:
    """Prefect sends logs and events from background workers, which would otherwise drain at exit,
    after the server is gone: retrying it for a minute and printing 'Error logging to API'."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=5)
