"""A stop asked for by a signal is never lost between stages.

The command line raises KeyboardInterrupt on Ctrl-C and SIGTERM (`rr/signals.py`), where the
process happens to be. Now and then that is inside an orchestrator's own bookkeeping, which may
swallow it (once seen with Prefect's task engine: the run went on to its end). So the signal is
also recorded here, and the loop checks for it between stages (`raise_if_requested`).
"""

from __future__ import annotations

_requested: type[BaseException] | None = None


def request_stop(kind: type[BaseException] = KeyboardInterrupt) -> None:
    global _requested
    _requested = kind


def raise_if_requested() -> None:
    if _requested is not None:
        raise _requested()
