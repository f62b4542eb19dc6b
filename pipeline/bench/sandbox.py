"""Run untrusted code (a model's reply) with its unit tests, walled in: the code benchmark's judge.

Generated code is never executed in this process or outside this sandbox. Each run is a fresh
Python (`-I -S -B`: no user site, no site-packages, no environment variables of ours, no bytecode
written) in a new session, in an empty temporary folder that is deleted afterwards, started by a
trusted wrapper (`_WRAPPER`) that, before the code runs:

1. sets resource limits: address space (`memory_mb`), CPU seconds, the size of any file written
   (stdout and stderr are files too, so endless printing stops), open files, no core dumps;
2. where the OS allows, moves into a network namespace of its own (Linux `unshare`, as root or
   through a user namespace), which has no interface but a loopback that is down;
3. as root, becomes `nobody`, so that the file system's permissions apply (only where nobody can
   still read the standard library: a Python installed under /root stays root, walled in by the rest);
4. installs an audit hook (PEP 578) that refuses sockets, new processes (fork, exec, subprocess,
   os.system), signals to other processes, ctypes, and any file opened for writing, or any file
   created, removed or renamed, outside the folder; reads outside the folder and the Python
   installation are refused too.

The parent enforces the wall-clock limit (`timeout_s`) and kills the whole process group. What
comes back is a `SandboxResult`: passed only if the program and its tests ran to exit code 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

OUTPUT_LIMIT = 64 * 1024  # bytes the program may write to a file, stdout and stderr included
KEPT_CHARS = 4000  # of its output's tail, in the result

_WRAPPER = r"""
import ctypes, os, resource, sys

memory, cpu, fsize, folder = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
for limit, value in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_CPU, cpu),
                     (resource.RLIMIT_FSIZE, fsize), (resource.RLIMIT_NOFILE, 32), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(limit, (value, value))
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET, CLONE_NEWUSER = 0x40000000, 0x10000000
isolated = libc.unshare(CLONE_NEWNET if os.geteuid() == 0 else CLONE_NEWUSER | CLONE_NEWNET) == 0


def others_can_read(path):
    # nobody must still read the standard library: it and every folder above it open to others
    path = os.path.realpath(path)
    parts = [path]
    while parts[-1] != os.path.dirname(parts[-1]):
        parts.append(os.path.dirname(parts[-1]))
    return bool(os.stat(path).st_mode & 0o004) and all(os.stat(p).st_mode & 0o001 for p in parts)


as_nobody = os.geteuid() == 0 and others_can_read(os.path.dirname(os.__file__))
if as_nobody:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
source = open(os.path.join(folder, "program.py"), encoding="utf-8").read()


def make_hook(inside, readable):
    # Everything the hook needs is bound here, in its closure, not in globals the program could reach.
    refused = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
               "os.forkpty", "os.kill", "os.killpg", "ctypes.", "pty.", "os.putenv", "os.unsetenv")
    changes = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.symlink",
               "os.link", "os.truncate", "os.utime", "shutil.", "os.chdir", "os.chroot")
    modules = frozenset({"gc", "ctypes", "_ctypes", "socket", "_socket", "subprocess", "_posixsubprocess",
                         "multiprocessing", "pty", "signal", "mmap"})
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    realpath, fsdecode, PathLike = os.path.realpath, os.fsdecode, os.PathLike

    def path_of(value):
        return realpath(fsdecode(value)) if isinstance(value, (str, bytes, PathLike)) else None

    def hook(event, args):
        if event.startswith(refused) or (event == "import" and args[0].partition(".")[0] in modules):
            raise PermissionError(f"sandbox: {event} {args[0] if event == 'import' else ''} is not allowed")
        if event == "open":
            path = path_of(args[0])
            if path is None:
                return
            writing = bool((args[2] or 0) & writes) or any(c in (args[1] or "") for c in "wax+")
            if writing and not path.startswith(inside):
                raise PermissionError(f"sandbox: writing {path} is not allowed")
            if not writing and not path.startswith(readable):
                raise PermissionError(f"sandbox: reading {path} is not allowed")
        elif event.startswith(changes):
            for value in args:
                path = path_of(value)
                if path is not None and not path.startswith(inside):
                    raise PermissionError(f"sandbox: {event} on {path} is not allowed")

    return hook


inside = os.path.realpath(folder) + os.sep
readable = tuple({os.path.realpath(p) + os.sep for p in (sys.base_prefix, sys.prefix, sys.exec_prefix)}) + (inside,)
sys.addaudithook(make_hook(inside, readable))
del ctypes, libc, make_hook
print(f"[sandbox: network isolated {isolated}, as nobody {as_nobody}]", file=sys.stderr, flush=True)
exec(compile(source, "program.py", "exec"), {"__name__": "__main__"})
"""


@dataclass(frozen=True)
class SandboxResult:
    status: str  # passed | failed | timeout | killed (a limit: CPU, memory, output size)
    returncode: int | None
    seconds: float
    output: str  # the tail of stdout and stderr
    network_isolated: bool  # whether the run had a network namespace of its own
    as_nobody: bool  # whether it ran as user nobody (started as root, the standard library readable)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_sandboxed(
    code: str, tests: str = "", timeout_s: float = 10.0, memory_mb: int = 512, cpu_s: int | None = None
) -> SandboxResult:
    """Run `code`, then `tests` (asserts), in a fresh sandboxed Python; passed if it exits 0."""
    cpu_s = cpu_s or max(1, int(timeout_s))
    with tempfile.TemporaryDirectory(prefix="rr-sandbox-") as tmp:
        folder = Path(tmp) / "work"
        folder.mkdir()
        (folder / "program.py").write_text(code + "\n\n" + tests + "\n", encoding="utf-8")
        (Path(tmp) / "wrapper.py").write_text(_WRAPPER, encoding="utf-8")
        if os.geteuid() == 0:  # the wrapper becomes nobody, who must still read and write its folder
            os.chmod(tmp, 0o755)
            os.chmod(folder, 0o777)
            os.chmod(folder / "program.py", 0o644)
            os.chmod(Path(tmp) / "wrapper.py", 0o644)
        output_path = Path(tmp) / "output.txt"
        command = [
            sys.executable, "-I", "-S", "-B", str(Path(tmp) / "wrapper.py"),
            str(memory_mb << 20), str(cpu_s), str(OUTPUT_LIMIT), str(folder),
        ]  # fmt: skip
        env = {"PATH": "/usr/bin:/bin", "HOME": str(folder), "TMPDIR": str(folder), "LANG": "C.UTF-8"}
        started = time.perf_counter()
        with open(output_path, "wb") as output:
            process = subprocess.Popen(
                command, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            try:
                returncode = process.wait(timeout=timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(process)
        seconds = round(time.perf_counter() - started, 3)
        text = output_path.read_bytes()[-OUTPUT_LIMIT:].decode("utf-8", errors="replace")
    found = re.search(r"\[sandbox: network isolated (\w+), as nobody (\w+)\]\n", text)
    isolated, as_nobody = (found.group(1) == "True", found.group(2) == "True") if found else (False, False)
    text = (text[: found.start()] + text[found.end() :] if found else text)[-KEPT_CHARS:]
    if timed_out:
        return SandboxResult("timeout", None, seconds, text, isolated, as_nobody)
    status = "passed" if returncode == 0 else ("killed" if returncode < 0 else "failed")
    return SandboxResult(status, returncode, seconds, text, isolated, as_nobody)


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the sandbox's whole session (whatever it may have left running) and reap it."""
    try:
        os.killpg(process.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
