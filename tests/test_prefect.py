"""The flow against a real Prefect server on loopback, started as `rr ui` starts it (the session's).

The tiny run and its task runs end Completed, with the artifacts the UI shows; a run killed with
SIGKILL in iteration 2 resumes there and ends with the same adapters as an uninterrupted run; a
second run of the same name is refused while the first works; `rr schedule` makes deployments
with the schedule; transient sampler errors are retried and config errors are not; a second
target unlearned on top of the first (`base_run`) measures the first again.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from tests.conftest import ROOT, run_rr, without_seconds

pytestmark = pytest.mark.slow
FLOW_TIMEOUT = 600


@pytest.fixture(scope="module")
def server(session_server):
    """The session's Prefect server, started by `rr ui` (tests/conftest.py): (API URL, environment for `rr`)."""
    return session_server


@pytest.fixture()
def client(server):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server[0]}), get_client(sync_client=True) as client:
        yield client


@pytest.fixture(scope="module")
def served_run(tiny_run):
    """configs/tiny.yaml run to the end against the server (the session's tiny run): (run directory,
    CompletedProcess)."""
    return tiny_run


def _flow_runs(client, name: str):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    return client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"run:{name}"])))


def _artifacts(client, flow_run_id) -> dict:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.client.schemas.sorting import ArtifactSort

    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
        sort=ArtifactSort.CREATED_DESC,
    )
    latest = {}
    for artifact in found:  # newest first
        latest.setdefault(artifact.key, artifact)
    return latest


def test_the_flow_run_and_its_task_runs_complete_with_tags_and_artifacts(served_run, client):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    run_dir, _ = served_run
    (flow_run,) = _flow_runs(client, "tiny")
    assert flow_run.state.is_completed()
    assert {"target:knowledge", "model:tiny", "objective:undial"} <= set(flow_run.tags)
    task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
    iterations = json.loads((run_dir / "summary.json").read_text())["iterations"]
    names = {t.name.rsplit("-", 1)[0] if t.name.startswith("baseline") else t.name for t in task_runs}
    assert names == {"baseline"} | {
        f"{s}-{i}" for s in ("reveal", "sample", "release", "evaluate") for i in range(1, iterations + 1)
    }
    assert all(t.state.is_completed() for t in task_runs)
    assert all({"target:knowledge", "objective:undial"} <= set(t.tags) for t in task_runs)
    # Every stage's result is kept in the run directory.
    assert (run_dir / ".prefect" / "baseline.json").is_file()
    assert (run_dir / ".prefect" / f"evaluate-{iterations}.json").is_file()

    artifacts = _artifacts(client, flow_run.id)
    assert set(artifacts) == {"tiny-iterations", "tiny-samples", "tiny-progress", "tiny-plot"}
    table = json.loads(artifacts["tiny-iterations"].data)
    assert [row["iteration"] for row in table] == list(range(1, iterations + 1))
    assert {
        "forget_score",
        "utility_ppl_ratio",
        "forget_samples",
        "retain_samples",
        "reward_mean",
        "reward_max",
        "kept",
    } <= set(table[0])
    samples = artifacts["tiny-samples"].data
    assert samples.count("```text") >= 2  # model output only inside literal blocks (tests/test_monitoring.py)
    assert artifacts["tiny-progress"].data == 100.0
    assert artifacts["tiny-plot"].data.startswith("data:image/png;base64,")


def test_rr_runs_lists_the_run_with_its_iterations_and_forget_score(served_run, server):
    done = run_rr("runs", env=server[1])
    assert done.returncode == 0, done.stderr
    summary = json.loads((served_run[0] / "summary.json").read_text())
    assert "unlearn-tiny" in done.stdout and "Completed" in done.stdout
    assert f"{summary['final']['forget_score']:.3f}" in done.stdout


def test_a_run_killed_in_iteration_2_resumes_there_and_ends_with_the_same_adapters(
    served_run, server, client, tmp_path, cache_dir
):
    env = {
        **os.environ,
        **server[1],
        "RR_CACHE_DIR": str(cache_dir),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    command = [sys.executable, "-m", "rr", "unlearn", "configs/tiny.yaml", "--out", str(tmp_path),
               "--name", "killed", "--no-progress"]  # fmt: skip
    run_dir = tmp_path / "killed"
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + FLOW_TIMEOUT
    while not (run_dir / "iter_2" / "top_instructions.json").is_file():  # iteration 2 has begun
        assert first.poll() is None, first.stdout.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.2)

    # While it works, a second run of the same name is refused.
    busy = run_rr(*command[3:], env={**server[1], "RR_CACHE_DIR": str(cache_dir)})
    assert busy.returncode == 4, busy.stderr
    assert "already running" in busy.stderr

    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not (run_dir / "iter_2" / "metrics.json").exists()  # killed in the middle of iteration 2
    iteration_1 = {p: p.stat().st_mtime_ns for p in (run_dir / "iter_1").rglob("*") if p.is_file()}

    again = run_rr(*command[3:], env={**server[1], "RR_CACHE_DIR": str(cache_dir)}, timeout=FLOW_TIMEOUT)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming" in again.stdout and "after iteration 1" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in iteration_1} == iteration_1  # iteration 1 not recomputed

    # The same run as the uninterrupted one: every figure (each stage is seeded) and every adapter.
    uninterrupted = served_run[0]
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert without_seconds(resumed["history"]) == without_seconds(
        json.loads((uninterrupted / "summary.json").read_text())["history"]
    )
    for part in ("iter_1/adapter", "iter_2/adapter", "adapter"):
        ours = load_file(run_dir / part / "adapter_model.safetensors")
        theirs = load_file(uninterrupted / part / "adapter_model.safetensors")
        assert ours.keys() == theirs.keys()
        assert all((ours[k] == theirs[k]).all() for k in ours), part

    states = sorted(run.state.name for run in _flow_runs(client, "killed"))
    assert states == ["Completed", "Crashed"]  # the resumed run marked the killed one


def test_a_second_target_on_top_of_the_first_measures_the_first_again(
    served_run, server, tmp_path, cache_dir
):
    first = served_run[0]
    done = run_rr(
        "unlearn", "configs/tiny.yaml", "--out", tmp_path, "--name", "second", "--no-progress",
        "--set", f"base_run={first}", "--set", "target.name=Tobias Wrenfield",
        "--set", "sample.retain_subjects=[Mira Castellane, Ilsa Montravel, Kasimir Thornquist]",
        "--set", "stop.max_iterations=1", "--set", "stop.min_iterations=1",
        env={**server[1], "RR_CACHE_DIR": str(cache_dir)}, timeout=FLOW_TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "second" / "summary.json").read_text())
    first_summary = json.loads((first / "summary.json").read_text())
    (earlier,) = summary["earlier_targets"]
    assert earlier["target"]["name"] == "Mira Castellane"
    assert earlier["forget_score_after_it"] == first_summary["final"]["forget_score"]
    assert 0.0 <= earlier["forget_score_now"] <= 1.0
    # Still forgotten: the first target's score stays below where it started.
    assert earlier["forget_score_now"] < earlier["forget_score_before_it"]
    assert summary["base_run"] == str(first)
    stack = json.loads((tmp_path / "second" / "iter_1" / "stack" / "adapter_config.json").read_text())
    first_rank = json.loads((first / "adapter" / "adapter_config.json").read_text())["r"]
    assert stack["r"] == first_rank + 8  # the first run's stack, then this run's rank-8 adapter
    assert "Earlier target" in (tmp_path / "second" / "report.md").read_text()


def test_rr_schedule_serves_a_deployment_with_the_schedule(server, client, tmp_path):
    env = {**os.environ, **server[1], "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    log = tmp_path / "schedule.log"
    with open(log, "w") as output:  # a file, not a pipe nobody reads: a full pipe would block the server
        serving = subprocess.Popen(
            [sys.executable, "-m", "rr", "schedule", "configs/tiny.yaml", "--interval", "3600", "--name", "hourly"],
            cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deployment = _wait_for_deployment(client, "unlearn/hourly", serving, log)
        (schedule,) = deployment.schedules
        assert schedule.schedule.interval.total_seconds() == 3600
        assert deployment.parameters["config"]["name"] == "tiny"
        assert "target:knowledge" in deployment.tags
    finally:
        os.killpg(serving.pid, signal.SIGTERM)
        stopped = time.monotonic()
        try:
            serving.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(serving.pid, signal.SIGKILL)
            raise AssertionError(
                f"rr schedule still serving 60 s after SIGTERM:\n{log.read_text()[-3000:]}"
            ) from None
    print(f"rr schedule stopped {time.monotonic() - stopped:.1f} s after SIGTERM")


def test_rr_schedule_deploys_to_a_work_pool_with_a_cron_schedule(server, client):
    from prefect.client.schemas.actions import WorkPoolCreate

    missing = run_rr(
        "schedule", "configs/tiny.yaml", "--cron", "0 3 * * *", "--pool", "nowhere", env=server[1]
    )
    assert missing.returncode == 2 and "prefect work-pool create nowhere" in missing.stderr
    client.create_work_pool(WorkPoolCreate(name="rr-pool", type="process"))
    done = run_rr("schedule", "configs/tiny.yaml", "--cron", "0 3 * * *", "--pool", "rr-pool", "--name", "nightly",
                  env=server[1])  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "prefect worker start --pool rr-pool" in done.stdout
    deployment = client.read_deployment_by_name("unlearn/nightly")
    assert deployment.work_pool_name == "rr-pool"
    assert deployment.schedules[0].schedule.cron == "0 3 * * *"
    assert deployment.entrypoint == "flows/unlearn.py:unlearn_flow"


@pytest.mark.parametrize("args", [["--cron", "not a cron"], ["--interval", "0"], []])
def test_rr_schedule_refuses_a_bad_schedule(args, server):
    done = run_rr("schedule", "configs/tiny.yaml", *args, env=server[1])
    assert done.returncode == 2
    assert "--cron" in done.stderr or "--interval" in done.stderr


def test_transient_sampler_errors_are_retried_and_config_errors_are_not(server, tmp_path):
    from prefect import flow
    from prefect.settings import PREFECT_API_URL, PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    from flows.unlearn import stage_task
    from pipeline.config import ConfigError
    from pipeline.sampling.base import TransientSamplerError

    calls = {"flaky": 0, "bad": 0}

    def flaky(t: int) -> dict:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise TransientSamplerError("sampler.base_url: no answer from http://127.0.0.1:9/v1")
        return {"t": t}

    def bad(t: int) -> dict:
        calls["bad"] += 1
        raise ConfigError("release.steps: must be > 0")

    options = {"retries": 3, "retry_delay_seconds": [0.1, 0.2, 0.4], "result_storage": tmp_path}
    flaky_task = stage_task(flaky, "flaky", "flaky-{t}").with_options(**options)
    bad_task = stage_task(bad, "bad", "bad-{t}").with_options(**options)

    @flow
    def check() -> dict:
        result = flaky_task(1)
        with pytest.raises(ConfigError):
            bad_task(1)
        return result

    # No logs to the API: they would be sent after the module's server has stopped.
    with temporary_settings({PREFECT_API_URL: server[0], PREFECT_LOGGING_TO_API_ENABLED: False}):
        assert check() == {"t": 1}
    assert calls == {"flaky": 3, "bad": 1}


def test_rr_ui_keeps_the_server_on_loopback_unless_an_auth_string_is_set():
    done = run_rr("ui", "--host", "0.0.0.0", env={"PREFECT_SERVER_API_AUTH_STRING": ""})
    assert done.returncode == 2
    assert "PREFECT_SERVER_API_AUTH_STRING" in done.stderr


def test_rr_runs_without_a_server_says_how_to_start_one():
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    done = subprocess.run([sys.executable, "-m", "rr", "runs"], cwd=ROOT, env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and "rr ui" in done.stderr


def test_the_ui_screenshot_script_renders_the_flow_run_page(served_run, server, client, tmp_path):
    from flows.screenshot import find_chromium

    try:
        find_chromium()  # where the script looks
    except FileNotFoundError:
        pytest.skip("no Chromium (Debian's chromium package; .ci/run installs it)")
    (flow_run,) = _flow_runs(client, "tiny")
    shots = tmp_path / "screenshots"
    done = subprocess.run(
        [sys.executable, "-m", "flows.screenshot", "--flow-run", str(flow_run.id), "--out", str(shots / "flow-run.png")],
        cwd=ROOT, env={**os.environ, **server[1]}, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    shown = {path.stem: path for path in shots.glob("flow-run*.png")}
    assert set(shown) == {"flow-run"} | {
        f"flow-run-tiny-{key}" for key in ("iterations", "samples", "progress", "plot")
    }
    assert all(png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for png in shown.values())
    # What the browser rendered: the run, its state and task runs; the artifacts' contents.
    page = (shots / "flow-run.html").read_text()
    assert "unlearn-tiny" in page and "Completed" in page and "evaluate-1" in page
    assert "forget_score" in (shots / "flow-run-tiny-iterations.html").read_text()
    assert "Instruction:" in (shots / "flow-run-tiny-samples.html").read_text()
    assert "data:image/png;base64," in (shots / "flow-run-tiny-plot.html").read_text()
    print(f"screenshots: {shots}")


def _wait_for_deployment(client, name: str, process, log, timeout: float = 120):
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            time.sleep(0.5)
    raise AssertionError(f"no deployment {name} after {timeout} s")
