"""Writing run outputs so that a crash never leaves half of one behind: write aside, then rename."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import ConfigError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # an OSError's errno when the disk or the user's quota is full


def current_umask() -> int:
    """The process's umask (reading it means setting it: put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_if_created(path: Path, folder: bool = False) -> None:
    """Give `path` the mode `open` or `mkdir` would have: tempfile makes files 0600 and folders
    0700, which another user (a vLLM server under its own uid, whoever receives an export) cannot
    read."""
    os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())


def write_text(path: Path, text: str) -> None:
    """`text` in `path`, whole or not at all: written beside it, then renamed over it (so the file
    has a new file's mode, and a link at `path` is replaced, not followed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, written = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        as_if_created(Path(written))
        os.replace(written, path)
    except BaseException:  # a full disk (often only at the flush on close) or Ctrl-C: no stray .tmp
        Path(written).unlink(missing_ok=True)
        raise


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def read_text(path: Path, field: str) -> str:
    """A text file as UTF-8; a missing, unreadable or binary one is a one-line ConfigError naming `field`."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{field}: {path} is not UTF-8 text: {undecodable(exc)}") from None
    except FileNotFoundError:
        raise ConfigError(f"{field}: file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"{field}: cannot read {path}: {exc.strerror or exc}") from None


def undecodable(exc: UnicodeDecodeError) -> str:
    return f"can't decode byte 0x{exc.object[exc.start]:02x} at position {exc.start} ({exc.reason})"


def read_lines(path: Path, field: str) -> list[str]:
    """The non-blank lines of a text file, stripped; ConfigError naming `field` if there are none."""
    lines = [line.strip() for line in read_text(path, field).splitlines() if line.strip()]
    if not lines:
        raise ConfigError(f"{field}: {path} is empty")
    return lines


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON Lines file; a line that is no JSON object is a ConfigError naming the line."""
    rows = []
    for number, line in enumerate(read_text(path, "run file").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: line {number} is not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{path}: line {number} is not a JSON object")
        rows.append(row)
    return rows


def check_writable_folder(out: Path, option: str = "--out") -> None:
    """ConfigError unless `out` is a folder this process can write in, or can be made one: checked
    before a command loads anything, so a file or a read-only place fails in one line, at once."""
    existing = next(
        p for p in [Path(os.path.abspath(out)), *Path(os.path.abspath(out)).parents] if p.exists()
    )
    if not existing.is_dir():
        raise ConfigError(f"{existing} is a file, not a folder; choose another {option}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write in {existing} (no permission); choose another {option}")


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty folder beside `target`; when the block succeeds it replaces `target`.

    On an error the new folder is removed and `target` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield new
        # What the block wrote gets the umask's modes too: safetensors writes its files 0600.
        for path in [new, *new.rglob("*")]:
            as_if_created(path, folder=path.is_dir())
        _swap(new, target)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise


def _swap(new: Path, target: Path) -> None:
    # os.replace cannot overwrite a non-empty folder, so move the old one aside first and put it back
    # if the swap fails; the window without `target` is two renames long.
    if not target.exists():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rmdir(old)
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
