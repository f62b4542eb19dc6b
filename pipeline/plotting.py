"""Figures written to files: matplotlib without a window, and every label printed as it is.

Titles and labels carry user and model text (a target's description, a method's name): with
matplotlib's defaults a `$` in them starts mathtext, and an unbalanced one fails the whole plot.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def figure(path: Path, **subplots) -> Iterator[tuple]:
    """(figure, axes) of `plt.subplots(**subplots)`; saved to `path` when the block ends, then closed."""
    import matplotlib  # here, so that `rr` answers bad input without loading matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        fig, axes = plt.subplots(**subplots)
        try:
            yield fig, axes
            fig.tight_layout()
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path)
        finally:
            plt.close(fig)
