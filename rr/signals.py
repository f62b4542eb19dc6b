"""SIGTERM handled as Ctrl-C is: raised where the process is, so every `finally` runs.

Python's default for SIGTERM ends the process on the spot, leaving what it started (a temporary
Prefect server, a vLLM server) running. `Terminated` is a KeyboardInterrupt, so every place that
cleans up after Ctrl-C cleans up after `kill` too; only the exit code differs (128 + 15).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.interrupts import request_stop
from rr.console import EXIT_INTERRUPTED

EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process that `kill` ended


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


def _raise_terminated(signum, frame) -> None:
    request_stop(Terminated)
    raise Terminated()


def _raise_interrupted(signum, frame) -> None:
    request_stop(KeyboardInterrupt)
    raise KeyboardInterrupt()


def raise_on_signals() -> None:
    """SIGTERM raises Terminated, SIGINT KeyboardInterrupt; both are also recorded, so the loop stops
    at the next stage even if something on the way swallowed the exception (pipeline.interrupts)."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGINT, _raise_interrupted)


def interrupt_exit_code(exc: KeyboardInterrupt) -> int:
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


@contextmanager
def signals_ignored() -> Iterator[None]:
    """SIGINT and SIGTERM ignored for the block: for the clean-up a command does on its way out,
    which a second Ctrl-C must not cut short (it would leave half of what the first one was taking
    back). Done by the handlers, not a signal mask: the kernel hands a signal to any thread not
    masking it (torch's, say), and Python runs its handler in the main thread all the same."""
    previous = {number: signal.signal(number, signal.SIG_IGN) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
