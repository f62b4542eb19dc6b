"""One look for every long loop: a rich progress bar that stays quiet when asked to.

Listeners (`add_listener`) hear every bar's progress, drawn or not, as (description, done,
total): the Prefect flow mirrors them into a progress artifact in the UI.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)
_listeners: list[Callable[[str, int, int], None]] = []


def add_listener(listener: Callable[[str, int, int], None]) -> None:
    _listeners.append(listener)


def remove_listener(listener: Callable[[str, int, int], None]) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


class _Silent:
    def __init__(self, description: str, total: int) -> None:
        self.description, self.total, self.done = description, total, 0
        self._tell()

    def advance(self, steps: int = 1, **fields) -> None:
        self.done += steps
        self._tell()

    def update(self, **fields) -> None:
        pass

    def _tell(self) -> None:
        for listener in list(_listeners):
            listener(self.description, self.done, self.total)


class _Bar(_Silent):
    def __init__(self, description: str, total: int, progress: Progress, task_id) -> None:
        self._progress, self._task = progress, task_id
        super().__init__(description, total)

    def advance(self, steps: int = 1, **fields) -> None:
        self._progress.update(self._task, advance=steps, **fields)
        super().advance(steps)

    def update(self, **fields) -> None:
        self._progress.update(self._task, **fields)


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True, info: str = ""):
    """`with progress_bar("sampling", n) as bar: bar.advance(k, info="...")`."""
    if not enabled:
        yield _Silent(description, total)
        return
    columns = [
        TextColumn(
            "{task.description}", style="bold", markup=False
        ),  # labels may hold names, printed as given
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}", markup=False),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        yield _Bar(description, total, progress, progress.add_task(description, total=total, info=info))
