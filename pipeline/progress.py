"""One look for every long loop: a rich progress bar that stays quiet when asked to."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


class _Silent:
    def advance(self, steps: int = 1, **fields) -> None:
        pass

    def update(self, **fields) -> None:
        pass


class _Bar:
    def __init__(self, progress: Progress, task_id) -> None:
        self._progress, self._task = progress, task_id

    def advance(self, steps: int = 1, **fields) -> None:
        self._progress.update(self._task, advance=steps, **fields)

    def update(self, **fields) -> None:
        self._progress.update(self._task, **fields)


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True, info: str = ""):
    """`with progress_bar("sampling", n) as bar: bar.advance(k, info="...")`."""
    if not enabled:
        yield _Silent()
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        yield _Bar(progress, progress.add_task(description, total=total, info=info))
