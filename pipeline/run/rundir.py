"""Every file a run writes, named once.

    runs/<name>/config.yaml                 the resolved config
    runs/<name>/baseline.json               the model before any adapter of this run
    runs/<name>/iter_<t>/...                one folder per iteration (`IterDir`)
    runs/<name>/adapter/                    the stacked adapter of the kept iterations (PEFT)
    runs/<name>/retain_adapter/             with `release.retain_adapter`: the LoRA of what to keep
    runs/<name>/retain_adapter.json         its training statistics
    runs/<name>/summary.json, report.md, plots/forgetting.png
    runs/<name>/.prefect/<stage>-<t>.json   Prefect's stored stage results (keys from flows/unlearn.py)
    runs/<name>/discarded/<when>/           what a resume could not trust, moved aside (`chain`)
    runs/.<name>.lock                       held while a process works on the run

Stages, benchmarks, the export and the flow all find a run's files through these names.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# PEFT's name for an adapter's config; spelled here too so that naming a run's files imports no torch.
ADAPTER_CONFIG = "adapter_config.json"


def has_adapter(folder: Path) -> bool:
    """Whether `folder` holds a saved PEFT adapter."""
    return (folder / ADAPTER_CONFIG).is_file()


@dataclass(frozen=True)
class IterDir:
    """runs/<name>/iter_<t>/: what iteration t wrote, in the order its stages write it."""

    root: Path

    # 1 reveal
    @property
    def instructions(self) -> Path:
        """Every bandit pull: instruction, reward, relevance, diversity, responses (JSONL)."""
        return self.root / "instructions.jsonl"

    @property
    def top_instructions(self) -> Path:
        return self.root / "top_instructions.json"

    @property
    def pool(self) -> Path:
        """The instruction pool iteration t+1 chooses from (seeds and rewrites)."""
        return self.root / "pool.json"

    @property
    def bandit(self) -> Path:
        return self.root / "bandit"

    # 2 sample
    @property
    def forget(self) -> Path:
        return self.root / "forget.jsonl"

    @property
    def retain(self) -> Path:
        return self.root / "retain.jsonl"

    # 3 release
    @property
    def adapter(self) -> Path:
        """The LoRA trained in this iteration alone."""
        return self.root / "adapter"

    @property
    def stack(self) -> Path:
        """The kept earlier adapters and this one, stacked into one LoRA."""
        return self.root / "stack"

    @property
    def release(self) -> Path:
        """Training statistics, or why the release was skipped."""
        return self.root / "release.json"

    # 4 evaluate
    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation.json"

    @property
    def metrics(self) -> Path:
        """Written last: its presence marks the iteration complete."""
        return self.root / "metrics.json"


@dataclass(frozen=True)
class RunDir:
    """runs/<name>/: one run's files."""

    root: Path

    def iteration(self, t: int) -> IterDir:
        return IterDir(self.root / f"iter_{t}")

    def iteration_numbers(self) -> list[int]:
        """The t of every iter_<t>/ folder there is, in order (a resume checks them all)."""
        if not self.root.is_dir():
            return []
        found = (re.fullmatch(r"iter_(\d+)", p.name) for p in self.root.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def baseline(self) -> Path:
        return self.root / "baseline.json"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def retain_adapter(self) -> Path:
        return self.root / "retain_adapter"

    @property
    def retain_adapter_stats(self) -> Path:
        return self.root / "retain_adapter.json"

    @property
    def summary(self) -> Path:
        """Written when the run stops; a run with one is finished."""
        return self.root / "summary.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def plot(self) -> Path:
        return self.root / "plots" / "forgetting.png"

    @property
    def prefect_results(self) -> Path:
        return self.root / ".prefect"

    def prefect_result_iterations(self) -> dict[Path, int]:
        """Prefect's stored stage results and their iteration: `<stage>-<t>.json` (0 for `baseline.json`).

        flows/unlearn.py gives the stage tasks these storage keys; a result found under one is
        handed back instead of running the stage, so a resume deletes those it cannot trust.
        """
        if not self.prefect_results.is_dir():
            return {}
        found = {}
        for path in self.prefect_results.iterdir():
            if path.name == "baseline.json":
                found[path] = 0
            elif match := re.fullmatch(r"[a-z_]+-(\d+)\.json", path.name):
                found[path] = int(match.group(1))
        return found

    @property
    def discarded(self) -> Path:
        """Where a resume moves what it cannot trust (later iterations, a stale summary), to be redone."""
        return self.root / "discarded"

    @property
    def lock(self) -> Path:
        """Beside the run directory, not in it: it is taken before the directory exists."""
        root = self.root.resolve()
        return root.parent / f".{root.name}.lock"


def relative_to_run(path: Path, root: Path) -> str:
    """`path` as summary.json records it: relative to the run directory, so a moved run still finds it."""
    return Path(os.path.relpath(Path(path).resolve(), Path(root).resolve())).as_posix()


def resolve_in_run(recorded: str, root: Path) -> Path:
    """A path summary.json recorded: relative to the run directory (absolute in older runs)."""
    path = Path(recorded)
    return path if path.is_absolute() else Path(os.path.normpath(Path(root) / path))
