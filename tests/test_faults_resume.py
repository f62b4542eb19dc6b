"""Resuming after faults, through the real CLI on the planted tiny model.

A run SIGKILLed at random points of its file writing (several seeds, twice each) and started
again ends exactly as an uninterrupted one. A resume checks the checksum chain of its iterations
(`pipeline.run.chain`) and computes again from the first that is not whole: a removed iteration,
a damaged metrics.json; what came after is never reused, Prefect's stored results of it included.
A damaged summary.json or config.yaml, an --out that is a file or cannot be written, exit 2 with
one line and write nothing.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pipeline.run.chain import discard_untrusted, read_summary, sha256_of, walk
from pipeline.run.rundir import RunDir
from tests.conftest import QUICK as LOOP_QUICK
from tests.conftest import ROOT, run_rr, without_seconds

NAME = "faults"
# Small and quick, as tests/test_loop.py shrinks its runs; two iterations, both always run.
QUICK = [*LOOP_QUICK, "stop.max_iterations=2", "stop.min_iterations=2"]


def unlearn_args(out: Path, prefect: bool = False) -> list[str]:
    sets = [arg for assignment in QUICK for arg in ("--set", assignment)]
    flag = "--prefect" if prefect else "--no-prefect"
    return ["unlearn", "configs/tiny.yaml", "--out", str(out), "--name", NAME, flag, "--no-progress", *sets]


def files_in(folder: Path) -> set[str]:
    """Every file under `folder` now, temporary ones of a write in progress included."""
    return {os.path.join(parent, name) for parent, _, names in os.walk(folder) for name in names}


def watched_run(out: Path, cache_dir: Path, seen: set[str], kill_at: int | None, delay: float):
    """Start `rr unlearn`; SIGKILL it `delay` s after the `kill_at`-th distinct file of the run
    folder appeared (counting those of earlier runs in `seen`). The return code, or None if killed."""
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "RR_CACHE_DIR": str(cache_dir)}
    with open(out.parent / f"{out.name}.log", "a") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "rr", *unlearn_args(out)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        while process.poll() is None and (kill_at is None or len(seen) < kill_at):
            if new := files_in(out / NAME) - seen:
                seen.update(new)
                last = min(new)
            time.sleep(0.01)
        if process.poll() is not None:
            return process.returncode
        time.sleep(delay)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        print(f"killed {delay:.2f} s after {Path(last).relative_to(out)} appeared")
        return None if process.returncode == -signal.SIGKILL else process.returncode


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    """An uninterrupted run: (its run directory, how many distinct files its folder showed)."""
    out = tmp_path_factory.mktemp("reference") / "runs"
    seen: set[str] = set()
    code = watched_run(out, cache_dir, seen, kill_at=None, delay=0)
    assert code == 0, (out.parent / "runs.log").read_text()[-3000:]
    return out / NAME, len(seen)


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def assert_same_result(run_dir: Path, reference_dir: Path) -> None:
    """The same summary (every figure, exactly: each stage is seeded; not the seconds it took) and
    the same adapters, byte for byte."""
    assert without_seconds(summary_of(run_dir)) == without_seconds(summary_of(reference_dir))
    weights = "adapter_model.safetensors"
    for part in ["adapter", *(f"iter_{h['iteration']}/stack" for h in summary_of(reference_dir)["history"])]:
        assert (run_dir / part / weights).read_bytes() == (reference_dir / part / weights).read_bytes(), part


def copy_run(reference_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "runs"
    shutil.copytree(reference_dir, out / NAME)
    return out


def one_error_line(result) -> str:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- killed at random, resumed


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_run_killed_at_random_points_of_its_writing_resumes_to_the_uninterrupted_result(
    reference, tmp_path, cache_dir, seed
):
    reference_dir, files_shown = reference
    rng = random.Random(seed)
    out, seen = tmp_path / "runs", set()
    # Killed twice: once in the first half of the run's writing, once later (a resume that is
    # itself killed); each time a random moment after a file appeared.
    first = watched_run(out, cache_dir, seen, rng.randint(1, files_shown // 2), rng.uniform(0, 0.3))
    assert first is None, "the first run was not killed"
    if len(seen) + 1 < files_shown - 1:
        watched_run(out, cache_dir, seen, rng.randint(len(seen) + 1, files_shown - 1), rng.uniform(0, 0.3))
    done = run_rr(*unlearn_args(out), env={"RR_CACHE_DIR": str(cache_dir)})
    assert done.returncode == 0, (tmp_path / "runs.log").read_text()[-3000:] + done.stderr[-3000:]
    assert_same_result(out / NAME, reference_dir)
    assert (out / NAME / "report.md").is_file() and (out / NAME / "plots" / "forgetting.png").is_file()
    assert not (out / NAME / "discarded").exists()  # a kill never makes a resume distrust finished work


# ---------------------------------------------------------------- what a resume distrusts


def test_a_damaged_metrics_json_is_computed_again_from_that_iteration(reference, tmp_path, cache_dir):
    reference_dir, _ = reference
    out = copy_run(reference_dir, tmp_path)
    iteration_1 = snapshot(out / NAME / "iter_1")
    (out / NAME / "iter_2" / "metrics.json").write_bytes(b'{"iteration": 2, "forget_sc')
    done = run_rr(*unlearn_args(out), env={"RR_CACHE_DIR": str(cache_dir)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    said = [line for line in done.stdout.splitlines() if "iter_2/metrics.json is damaged" in line]
    assert len(said) == 1 and "computing again from iteration 2" in said[0], done.stdout
    assert "resuming" in done.stdout and "after iteration 1" in done.stdout
    assert_same_result(out / NAME, reference_dir)
    assert snapshot(out / NAME / "iter_1") == iteration_1  # the whole iteration before it is kept as it was
    (discarded,) = (out / NAME / "discarded").iterdir()  # the damaged one and the stale summary, moved aside
    assert (discarded / "iter_2" / "metrics.json").is_file() and (discarded / "summary.json").is_file()


def test_a_run_written_before_the_chain_resumes_and_its_next_iteration_links_to_it(
    reference, tmp_path, cache_dir
):
    """Old iterations (no checksums) are trusted as before: the resume recomputes nothing of them."""
    reference_dir, _ = reference
    out = copy_run(reference_dir, tmp_path)
    run_dir = out / NAME
    first = run_dir / "iter_1" / "metrics.json"
    old = json.loads(first.read_text())
    del old["chain"]
    first.write_text(json.dumps(old))  # iteration 1 as the code before the chain wrote it ...
    (run_dir / "iter_2" / "metrics.json").unlink()  # ... and a kill just before iteration 2's commit
    (run_dir / "summary.json").unlink()
    done = run_rr(*unlearn_args(out), env={"RR_CACHE_DIR": str(cache_dir)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "after iteration 1" in done.stdout and "computing again" not in done.stdout
    assert_same_result(run_dir, reference_dir)
    found = walk(RunDir(run_dir))
    assert len(found.history) == 2 and found.problem is None
    # And a chained iteration after an old one cannot lose its checksums unnoticed.
    second = run_dir / "iter_2" / "metrics.json"
    stripped = json.loads(second.read_text())
    del stripped["chain"]
    second.write_text(json.dumps(stripped))
    assert walk(RunDir(run_dir)).problem is None  # old, then old: trusted as before
    shutil.copy(reference_dir / "iter_1" / "metrics.json", first)  # iteration 1 with its checksums again
    expected = "iter_2/metrics.json has no checksums, though the iterations before it have"
    assert walk(RunDir(run_dir)).problem == expected


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda run: (run / "iter_1" / "forget.jsonl").write_text("{}\n"), "iter_1/forget.jsonl was changed"),
        (lambda run: (run / "iter_1" / "stack" / "adapter_model.safetensors").unlink(),
         "iter_1/stack/adapter_model.safetensors is missing"),
        (lambda run: (run / "iter_2" / "metrics.json").write_text(
            (run / "iter_2" / "metrics.json").read_text().replace('"kept": true', '"kept": false', 1)),
         "iter_2/metrics.json was changed after it was written"),
        (lambda run: shutil.copy(run / "iter_1" / "metrics.json", run / "iter_2" / "metrics.json"),
         "iter_2 does not follow from iter_1"),
        (lambda run: (run / "baseline.json").write_bytes(b"\x00\xff\x17"), "baseline.json is damaged (not JSON)"),
        (lambda run: (run / "baseline.json").write_text('{"forget_score": 0.5}'), "iter_1 does not follow from baseline.json"),
    ],
    ids=["changed file", "missing file", "edited metrics", "copied metrics", "damaged baseline", "other baseline"],
)  # fmt: skip
def test_the_walk_stops_at_the_first_iteration_that_is_not_as_recorded(reference, tmp_path, damage, problem):
    reference_dir, _ = reference
    run_dir = copy_run(reference_dir, tmp_path) / NAME
    damage(run_dir)
    found = walk(RunDir(run_dir))
    assert found.problem is not None and found.problem.startswith(problem), found.problem
    assert len(found.history) == (1 if problem.startswith("iter_2") else 0)
    assert found.link is None if problem.startswith("baseline.json") else found.link is not None


def test_discarding_moves_later_iterations_aside_deletes_their_prefect_results_and_resets_the_adapter(
    reference, tmp_path
):
    reference_dir, _ = reference
    run_dir = copy_run(reference_dir, tmp_path) / NAME
    files = RunDir(run_dir)
    files.prefect_results.mkdir()
    for key in ("baseline", "reveal-1", "evaluate-1", "reveal-2", "release-2", "evaluate-2", "sample-3"):
        (files.prefect_results / f"{key}.json").write_text("{}")
    shutil.rmtree(files.iteration(2).root / "bandit")  # iteration 2 is no longer whole
    found = walk(files)
    assert found.problem == "iter_2/bandit/bandit.json is missing" and len(found.history) == 1
    moved = discard_untrusted(files, found)
    assert sorted(p.name for p in files.prefect_results.iterdir()) == [
        "baseline.json",
        "evaluate-1.json",
        "reveal-1.json",
    ]
    assert sorted(p.name for p in moved.iterdir()) == ["iter_2", "plots", "report.md", "summary.json"]
    assert files.iteration_numbers() == [1] and not files.summary.exists()
    stack = files.iteration(1).stack / "adapter_model.safetensors"
    assert sha256_of(files.adapter / "adapter_model.safetensors") == sha256_of(stack)  # iteration 1's again
    assert walk(files).problem is None and discard_untrusted(files, walk(files)) is None  # nothing more to do


# ---------------------------------------------------------------- Prefect's stored results


@pytest.mark.slow
def test_a_removed_iteration_is_computed_again_and_prefect_hands_back_none_of_the_stale_results(
    reference, tmp_path, cache_dir
):
    """The issue's case: iteration 1 removed; iteration 2's files (one made visibly wrong) and
    Prefect's stored results of both (stale, in Prefect's own format) must not be reused."""
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore
    from prefect.serializers import JSONSerializer

    reference_dir, _ = reference
    out = copy_run(reference_dir, tmp_path)
    files = RunDir(out / NAME)
    shutil.rmtree(files.iteration(1).root)
    stale = json.loads(files.iteration(2).evaluation.read_text())
    files.iteration(2).evaluation.write_text(json.dumps({**stale, "forget_score": 0.777}))

    def result_store() -> ResultStore:  # a new one reads the files: each keeps what it wrote in memory
        storage = LocalFileSystem(basepath=str(files.prefect_results.resolve()))
        return ResultStore(result_storage=storage, serializer=JSONSerializer())

    store = result_store()
    for t in (1, 2):
        store.write(obj=["a stale instruction"], key=f"reveal-{t}.json")
        store.write(obj={"forget": 1, "retain": 1}, key=f"sample-{t}.json")
        store.write(obj=json.loads(files.iteration(2).release.read_text()), key=f"release-{t}.json")
        store.write(obj={**stale, "forget_score": 0.777}, key=f"evaluate-{t}.json")
    env = {"RR_CACHE_DIR": str(cache_dir), "PREFECT_HOME": str(tmp_path / "prefect-home")}
    done = run_rr(*unlearn_args(out, prefect=True), env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "iter_1/ is missing; computing again from iteration 1" in done.stdout
    assert_same_result(out / NAME, reference_dir)
    # What Prefect stored now is what the stage computed again.
    recomputed = result_store().read("evaluate-2.json").result
    assert recomputed["forget_score"] == summary_of(reference_dir)["history"][1]["forget_score"]


# ---------------------------------------------------------------- a moved run


def test_a_moved_run_names_its_adapter_where_it_is_now(reference, tmp_path):
    reference_dir, _ = reference
    assert summary_of(reference_dir)["adapter"] == "adapter"  # relative to the run directory
    out = copy_run(reference_dir, tmp_path / "moved")
    assert read_summary(RunDir(out / NAME), "")["adapter"] == str(out / NAME / "adapter")
    done = run_rr(*unlearn_args(out), env={"COLUMNS": "500"})  # no line wrapped
    assert done.returncode == 0 and "already finished" in done.stderr, done.stderr
    assert f"stacked adapter (PEFT): {out / NAME / 'adapter'}" in done.stdout
    # A summary an older version wrote, with an absolute path, is read as it is.
    summary = summary_of(out / NAME)
    (out / NAME / "summary.json").write_text(json.dumps({**summary, "adapter": "/elsewhere/adapter"}))
    assert read_summary(RunDir(out / NAME), "")["adapter"] == "/elsewhere/adapter"


# ---------------------------------------------------------------- damaged run folders, bad --out


GARBAGE = {"truncated": b'{"name": "faults", "stop_rea', "binary": bytes(range(256)) * 4}


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_a_damaged_summary_json_is_one_line_for_unlearn_and_export(reference, tmp_path, kind):
    reference_dir, _ = reference
    out = copy_run(reference_dir, tmp_path)
    (out / NAME / "summary.json").write_bytes(GARBAGE[kind])
    before = snapshot(out / NAME)
    line = one_error_line(run_rr(*unlearn_args(out)))
    assert f"{out / NAME / 'summary.json'} is damaged" in line and "delete" in line
    exported = tmp_path / "exported"
    line = one_error_line(run_rr("export", out / NAME, "--adapter", exported))
    assert f"{out / NAME / 'summary.json'} is damaged" in line and "rr unlearn" in line
    assert snapshot(out / NAME) == before and not exported.exists()


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_a_damaged_config_yaml_is_one_line_for_unlearn_and_export(reference, tmp_path, kind):
    reference_dir, _ = reference
    out = copy_run(reference_dir, tmp_path)
    (out / NAME / "config.yaml").write_bytes(GARBAGE[kind].replace(b"{", b"[: {"))
    before = snapshot(out / NAME)
    line = one_error_line(run_rr(*unlearn_args(out)))
    assert f"{out / NAME / 'config.yaml'} is damaged" in line and "choose another --name" in line
    exported = tmp_path / "exported"
    line = one_error_line(run_rr("export", out / NAME, "--adapter", exported))
    assert "config.yaml" in line and "cannot be exported" in line
    assert snapshot(out / NAME) == before and not exported.exists()


def test_export_refuses_a_run_whose_iteration_changed_since_it_finished(reference, tmp_path):
    reference_dir, _ = reference
    out = copy_run(reference_dir, tmp_path)
    with open(out / NAME / "iter_2" / "forget.jsonl", "a") as f:
        f.write('{"instruction": "x", "response": "y", "score": 1.0, "iteration": 2, "stage": "sample"}\n')
    exported = tmp_path / "exported"
    line = one_error_line(run_rr("export", out / NAME, "--dataset", exported))
    assert "iter_2/forget.jsonl was changed" in line and "rr unlearn" in line
    assert not exported.exists()


def test_an_out_that_is_a_file_is_one_line_and_nothing_is_written(tmp_path):
    out = tmp_path / "runs"
    out.write_text("not a folder\n")
    line = one_error_line(run_rr(*unlearn_args(out)))
    assert f"{out} is a file, not a folder" in line and "--out" in line
    assert out.read_text() == "not a folder\n" and sorted(tmp_path.iterdir()) == [out]


def test_an_out_folder_that_cannot_be_written_is_one_line_and_nothing_is_written():
    # Not under pytest's tmp_path, whose parents only their owner may enter.
    base = Path(tempfile.mkdtemp(prefix="rr-readonly-"))
    base.chmod(0o755)
    out = base / "readonly"
    out.mkdir()
    as_user = []
    if os.geteuid() == 0:  # root writes anywhere: run rr as nobody, for whom the folder is read-only
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: no user to whom a folder is read-only")
        as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    out.chmod(0o555)
    command = [*as_user, sys.executable, "-m", "rr", *unlearn_args(out)]
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "HOME": str(out)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    try:
        line = one_error_line(result)
        assert f"cannot write in {out}" in line and "--out" in line
        assert not any(out.iterdir())
    finally:
        out.chmod(0o755)
        shutil.rmtree(base)
