"""The checksum chain: which iterations a resumed run may trust, and moving aside the rest.

Each iteration's metrics.json, its commit point, carries a `chain` record (`sealed`): the sha256
of every file the iteration wrote and of the retain adapter if there is one (the first release
that needs it trains it; every later one builds on it), the hash of the link before it, and the
link's own hash over all of that and the metrics. Link 0 is the sha256 of baseline.json. A resumed
run walks t = 1, 2, ... (`walk`) and trusts the iterations up to the first whose files are missing
or changed, or whose link does not follow from the one before. What the trusted iterations did not
make is then moved to `discarded/` or deleted (`discard_untrusted`), so that it is computed again
and never reused: later iteration folders, Prefect's stored results of their stages, a retain
adapter they trained, a run adapter and a summary that are not those of the trusted iterations.

An iteration written before the chain existed (no `chain` record) is trusted as it was then: a
metrics.json that reads as JSON, in the unbroken row of iterations from 1. Its files were written
atomically and are most likely whole, and recomputing it would throw hours of an old run away; it
still links over its metrics alone, so a chained iteration after it follows from it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import ConfigError
from pipeline.files import atomic_dir
from pipeline.run.rundir import RunDir, has_adapter, resolve_in_run


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def written_files(folder: Path) -> list[Path]:
    """The files under `folder`, less what a killed write leaves behind (`.name.tmp-*/`, `tmp*.tmp`)."""
    if not folder.is_dir():
        return []
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and not path.name.endswith(".tmp")
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def same_files(a: Path, b: Path) -> bool:
    """Whether folders `a` and `b` hold the same files, byte for byte."""
    in_a, in_b = written_files(a), written_files(b)
    try:
        return [p.relative_to(a) for p in in_a] == [p.relative_to(b) for p in in_b] and all(
            sha256_of(x) == sha256_of(y) for x, y in zip(in_a, in_b)
        )
    except OSError:  # a file gone since it was listed (another process swapping the folder)
        return False


def iteration_files(files: RunDir, t: int) -> dict[str, str]:
    """{path in the run directory: sha256} of what iteration t wrote, and of the retain adapter."""
    paths = [p for p in written_files(files.iteration(t).root) if p != files.iteration(t).metrics]
    paths += written_files(files.retain_adapter)
    if files.retain_adapter_stats.is_file():
        paths.append(files.retain_adapter_stats)
    return {p.relative_to(files.root).as_posix(): sha256_of(p) for p in paths}


def link_hash(metrics: dict, previous: str, recorded: dict[str, str]) -> str:
    text = json.dumps({"metrics": metrics, "previous": previous, "files": recorded}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def read_json_file(path: Path):
    """The JSON in `path`: ValueError when it is not JSON (truncated, binary), OSError when unreadable."""
    return json.loads(path.read_bytes())


def sealed(files: RunDir, t: int, entry: dict) -> dict:
    """Iteration t's metrics.json: `entry` and its chain record, over iteration t's files as they are."""
    entry = json.loads(json.dumps(entry))  # as it will read back, so that its hash checks out then
    previous = recorded_link(files, t - 1)
    recorded = iteration_files(files, t)
    chain = {"previous": previous, "files": recorded, "hash": link_hash(entry, previous, recorded)}
    return {**entry, "chain": chain}


def recorded_link(files: RunDir, t: int) -> str:
    """Iteration t's link as its metrics.json records it (t = 0: baseline.json's)."""
    if t == 0:
        return sha256_of(files.baseline)
    metrics = read_json_file(files.iteration(t).metrics)
    record = metrics.pop("chain", None)
    return record["hash"] if record else link_hash(metrics, recorded_link(files, t - 1), {})


@dataclass
class Walk:
    """What a resume may trust: the baseline (when `link` is set) and iterations 1..len(history)."""

    history: list[dict]  # the trusted iterations' metrics, without their chain records
    link: str | None  # the last trusted link, which iteration len(history) + 1 must follow
    problem: str | None  # why the walk stopped before the last iteration there is; None at a clean end
    resume_inside: bool  # the next iteration was interrupted, its stages' files are whole: keep them
    retain_adapter_trusted: bool  # the retain adapter is one a trusted (or the kept) iteration made

    @property
    def next_t(self) -> int:
        return len(self.history) + 1


def walk(files: RunDir) -> Walk:
    """Check the chain from baseline.json on; stop at the first iteration that cannot be trusted."""
    numbers = files.iteration_numbers()
    damage = _json_problem(files.baseline)
    if damage is not None:
        problem = None if damage == "is missing" and not numbers else f"baseline.json {damage}"
        return Walk([], None, problem, resume_inside=False, retain_adapter_trusted=False)
    link, history, record = sha256_of(files.baseline), [], None
    t = 1
    while True:
        folder, later = files.iteration(t), [n for n in numbers if n > t]
        if not folder.root.is_dir():
            problem = f"iter_{t}/ is missing" if later else None
            return _stop(files, history, link, record, problem, resume_inside=False)
        if not folder.metrics.exists():  # the iteration a kill interrupted, if nothing came after it
            if later:
                problem = f"iter_{t}/metrics.json is missing, but iter_{later[0]}/ exists"
            elif damaged := _damaged_json_in(files, folder.root):
                problem = f"{damaged} is damaged"
            else:
                problem = None
            return _stop(files, history, link, record, problem, resume_inside=problem is None)
        problem, metrics, record_t, link_t = _check_link(files, t, link, chained=record is not None)
        if problem is not None:
            return _stop(files, history, link, record, problem, resume_inside=False)
        history.append(metrics)
        link, record = link_t, record_t
        t += 1


def _stop(files: RunDir, history, link, record, problem, resume_inside) -> Walk:
    # A retain adapter the last trusted iteration recorded is the one the run used; one it did not
    # record was trained by the interrupted iteration (kept) or by one that is discarded.
    if record is None:
        recorded = bool(history)  # an old iteration, trusted as before
    else:
        retain = (files.retain_adapter.name, files.retain_adapter_stats.name)
        recorded = any(name.split("/")[0] in retain for name in record["files"])
    return Walk(history, link, problem, resume_inside, retain_adapter_trusted=resume_inside or recorded)


def _check_link(files: RunDir, t: int, previous: str, chained: bool):
    """(problem or None, metrics, chain record, link) of iteration t, which must follow `previous`."""
    path = files.iteration(t).metrics
    where = path.relative_to(files.root).as_posix()
    try:
        metrics = read_json_file(path)
    except (OSError, ValueError):
        metrics = None
    if not isinstance(metrics, dict):
        return f"{where} is damaged (not JSON)", None, None, None
    record = metrics.pop("chain", None)
    if record is None:  # written before the chain existed: trusted as before, if all before it are too
        if chained:
            return f"{where} has no checksums, though the iterations before it have", None, None, None
        return None, metrics, None, link_hash(metrics, previous, {})
    try:
        claimed, recorded, own = str(record["previous"]), dict(record["files"]), record["hash"]
    except (TypeError, KeyError, ValueError):
        return f"{where} is damaged (its chain record)", None, None, None
    if link_hash(metrics, claimed, recorded) != own:
        return f"{where} was changed after it was written", None, None, None
    if claimed != previous:
        before = "baseline.json" if t == 1 else f"iter_{t - 1}"
        return f"iter_{t} does not follow from {before}", None, None, None
    for name, digest in sorted(recorded.items()):
        try:
            changed = sha256_of(files.root / name) != digest
        except OSError:
            return f"{name} is missing", None, None, None
        if changed:
            return f"{name} was changed", None, None, None
    return None, metrics, record, own


def _json_problem(path: Path) -> str | None:
    if not path.is_file():
        return "is missing"
    try:
        read_json_file(path)
    except (OSError, ValueError):
        return "is damaged (not JSON)"
    return None


def _damaged_json_in(files: RunDir, folder: Path) -> str | None:
    """The first JSON or JSONL file under `folder` that does not read back, as a run-relative path."""
    for path in written_files(folder):
        try:
            if path.suffix == ".json":
                read_json_file(path)
            elif path.suffix == ".jsonl":
                [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
        except (OSError, ValueError):
            return path.relative_to(files.root).as_posix()
    return None


def read_summary(files: RunDir, remedy: str) -> dict | None:
    """summary.json with its adapter path resolved; None if there is none; ConfigError if damaged."""
    if not files.summary.is_file():
        return None
    try:
        summary = read_json_file(files.summary)
    except OSError as exc:
        raise ConfigError(f"cannot read {files.summary}: {exc.strerror}; {remedy}") from None
    except ValueError:
        summary = None
    if not isinstance(summary, dict) or not isinstance(summary.get("history", []), list):
        raise ConfigError(f"{files.summary} is damaged (not a run summary in JSON); {remedy}")
    if summary.get("adapter"):
        summary["adapter"] = str(resolve_in_run(summary["adapter"], files.root))
    return summary


def last_kept(files: RunDir, found: Walk) -> int | None:
    """The last trusted iteration whose adapter is in the stack (its `stack/` is the run's adapter)."""
    kept = [
        t
        for t, m in enumerate(found.history, 1)
        if m.get("kept", True) and has_adapter(files.iteration(t).stack)
    ]
    return kept[-1] if kept else None


def summary_problem(files: RunDir, summary: dict, found: Walk, adapter: bool = True) -> str | None:
    """Why summary.json is not the end of the trusted iterations, or None; `adapter`: check adapter/ too."""
    if summary.get("history") != found.history:
        counted, trusted = len(summary.get("history") or []), len(found.history)
        why = f" ({found.problem})" if found.problem else ""
        return f"summary.json records {counted} iterations, of which {trusted} are there as recorded{why}"
    if adapter:
        kept = last_kept(files, found)
        if kept is None and files.adapter.exists():
            return "adapter/ is not the stack of any kept iteration"
        if kept is not None and not same_files(files.iteration(kept).stack, files.adapter):
            return f"adapter/ is not iter_{kept}/stack"
    return None


def discard_untrusted(files: RunDir, found: Walk) -> Path | None:
    """Make the run folder what the trusted iterations left; the folder the rest was moved to, if any.

    Prefect's stored results from the first untrusted iteration on are deleted (the stages read
    their own files back, so nothing is lost); the later iteration folders, a baseline that cannot
    be trusted, a retain adapter no trusted iteration made, and the summary (call this only for an
    unfinished run: a summary here is stale) go to `discarded/<when>/`. The run adapter, a copy,
    becomes the last kept trusted iteration's stack again, or is deleted when none was kept.
    """
    t = found.next_t
    for result, s in files.prefect_result_iterations().items():
        if s >= t or (s == 0 and found.link is None):
            result.unlink()
    aside = [files.baseline] if found.link is None and files.baseline.exists() else []
    aside += [
        files.iteration(n).root
        for n in files.iteration_numbers()
        if n > t or (n == t and not found.resume_inside)
    ]
    if not found.retain_adapter_trusted:
        aside += [p for p in (files.retain_adapter, files.retain_adapter_stats) if p.exists()]
    if files.summary.exists():
        aside += [p for p in (files.summary, files.report, files.plot.parent) if p.exists()]
    kept = last_kept(files, found)  # adapter/ is only ever a copy of a stack: replaced or deleted
    if kept is None and files.adapter.exists():
        shutil.rmtree(files.adapter)
    elif kept is not None and not same_files(files.iteration(kept).stack, files.adapter):
        with atomic_dir(files.adapter) as tmp:
            shutil.copytree(files.iteration(kept).stack, tmp, dirs_exist_ok=True)
    if not aside:
        return None
    folder = _new_folder(files.discarded, f"from-iter_{t}" if found.link else "from-baseline")
    for path in aside:  # in order: a resume killed half-way still finds the first untrusted one gone
        destination = folder / path.relative_to(files.root)
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, destination)
    return folder


def _new_folder(parent: Path, what: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in itertools.count(1):
        folder = parent / (f"{stamp}-{what}" if n == 1 else f"{stamp}-{what}-{n}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise AssertionError("unreachable")
