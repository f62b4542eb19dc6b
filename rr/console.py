"""What every `rr` command prints through, and the exit codes it documents.

Both consoles print text literally: paths, names, target descriptions and model replies may hold
brackets, and Rich markup in them would be parsed (`[/]` even raises). Styling goes in `Text`.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.text import Text

from pipeline.files import DISK_FULL

err = Console(stderr=True, markup=False)
out = Console(markup=False)

EXIT_BAD_INPUT = 2
EXIT_SAMPLER = 3  # the sampler's engine or server failed mid-run (after its retries)
EXIT_BUSY = 4  # another process is running the same run directory
EXIT_DISK_FULL = 5  # the disk filled up while writing; what was written is whole, the command resumes
EXIT_INTERRUPTED = 130


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` is the disk (or the user's quota) filling up: an OSError saying so, or a
    writer's own error with the system's words (safetensors raises its own type)."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return True
    return "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    """Print one error line and exit with `code`."""
    err.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def one_line(exc: BaseException, most: int = 300) -> str:
    """An exception's message on one line, cut at `most` characters."""
    return " ".join(str(exc).split())[:most]
