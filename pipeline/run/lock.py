"""One process per run directory: a lock file beside it, held while the run works.

The lock is an `flock` on `<out>/.<name>.lock`, so the kernel drops it when the process dies,
SIGKILL included: a crashed run never leaves a stale lock behind, and the same command started
again resumes. The file also records who holds it, for the message the second run prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from pipeline.config import ConfigError
from pipeline.run.rundir import RunDir

_held: dict[Path, int] = {}  # lock file -> open descriptor, for locks this process holds


class RunBusyError(RuntimeError):
    """Another process is running the same run directory."""


@contextmanager
def run_lock(run_dir: Path):
    """Hold the run's lock for the block; RunBusyError if another process holds it, ConfigError if
    the out folder cannot be written.

    Re-entrant within a process: the CLI takes it before the flow starts, and the flow (which
    a deployment may start without the CLI) takes it again.
    """
    path = RunDir(Path(run_dir)).lock
    if path in _held:
        yield
        return
    fd = _open_lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise RunBusyError(
            f"run {Path(run_dir)} is already running ({holder}); wait for it to end, or give this "
            "one another --name"
        ) from None
    os.ftruncate(fd, 0)
    os.write(
        fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode()
    )
    _held[path] = fd
    try:
        yield
    finally:
        del _held[path]
        os.close(fd)  # closing the descriptor releases the flock


def _open_lock_file(path: Path) -> int:
    """The lock file's descriptor; ConfigError when the out folder cannot hold it (a file, no permission)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except (FileExistsError, NotADirectoryError):
        blocker = next(p for p in [path.parent, *path.parent.parents] if p.exists())
        reason = f"{blocker} is a file, not a folder"
    except OSError as exc:
        reason = f"cannot write in {path.parent} ({exc.strerror})"
    raise ConfigError(f"{reason}; choose another --out") from None


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"]))
        return f"process {holder['pid']} on {holder['host']} since {since}"
    except (ValueError, KeyError, OSError):
        return "another process"
