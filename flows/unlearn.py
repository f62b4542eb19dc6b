"""The unlearning flow: the stages of `pipeline.run.loop` as Prefect tasks, in a loop.

The Prefect UI shows baseline, then reveal / sample / release / evaluate for every iteration,
with artifacts (`flows/monitor.py`): an iteration table, revealed samples, live progress and the
final plot. Without `PREFECT_API_URL` the run starts a temporary local server of its own (`flows/server.py`);
with it (`rr ui`), runs report to that server.

All state lives in the run directory, so a run started again with the same name resumes after
its last completed iteration; the stages' results are persisted there too (`.prefect/`). A stage
that fails on a transient sampler error (a server that timed out) is retried with backoff; bad
input and bugs are not retried.
"""

from __future__ import annotations

from prefect import flow, tags, task
from prefect.tasks import exponential_backoff

from flows.monitor import ProgressReporter, mark_abandoned_runs, publish_iteration, publish_plot, run_tags
from flows.server import prefect_api
from pipeline.config import RunConfig, validate_config
from pipeline.files import read_jsonl
from pipeline.run.lock import run_lock
from pipeline.run.loop import STAGES, run_loop
from pipeline.run.rundir import RunDir
from pipeline.run.state import RunState
from pipeline.sampling.base import TransientSamplerError


def is_transient(task, task_run, state) -> bool:
    """Prefect's retry condition: retry a stage only when its sampler's server failed for now."""
    try:
        state.result()
    except TransientSamplerError:
        return True
    except BaseException:  # noqa: BLE001 - anything else (bad input, a bug) fails at once
        return False
    return False


def stage_task(fn, name: str, run_name: str | None = None):
    # The result is stored under a key of stage and iteration, never a hash of the inputs: the
    # run state holds the model. A resumed run finds the results of the stages that finished; it
    # deletes those of the iterations it recomputes, found by these names (`RunDir.prefect_result_iterations`).
    return task(
        fn,
        name=name,
        task_run_name=run_name,
        cache_policy=None,
        result_storage_key=f"{run_name or name}.json".replace("{t}", "{parameters[t]}"),
        result_serializer="json",
        retry_condition_fn=is_transient,
    )


# One task per stage; every stage but the baseline runs once per iteration, named `<stage>-<t>`.
STAGE_TASKS = {
    name: stage_task(fn, name, None if name == "baseline" else f"{name}-{{t}}") for name, fn in STAGES.items()
}


def run_stage_tasks(config: RunConfig) -> dict:
    """The stage tasks with this run's retries, results persisted in its run directory."""
    policy = config.orchestration
    return {
        name: stage.with_options(
            retries=policy.retries,
            retry_delay_seconds=exponential_backoff(backoff_factor=policy.retry_delay_s),
            persist_result=True,
            result_storage=RunDir(config.run_dir).prefect_results.resolve(),
        )
        for name, stage in STAGE_TASKS.items()
    }


def _run_name() -> str:
    from prefect.runtime import flow_run

    return f"unlearn-{flow_run.parameters['config'].get('name', 'run')}"


def _publish(state: RunState, t: int, history: list[dict]) -> None:
    samples = read_jsonl(state.files.iteration(t).forget)
    publish_iteration(state.config, t, history, samples)


@flow(name="unlearn", flow_run_name=_run_name, log_prints=True)
def unlearn_flow(config: dict, progress: bool = True) -> dict:
    """Reveal, sample, release and evaluate until forgetting converges; returns summary.json."""
    cfg = validate_config(config)
    # One process per run directory; the CLI already holds the lock, a deployment's run takes it here.
    with run_lock(cfg.run_dir), tags(*run_tags(cfg)), ProgressReporter(cfg):
        mark_abandoned_runs(cfg)
        state = RunState(cfg, progress=progress)
        summary = run_loop(state, **run_stage_tasks(cfg), on_iteration=_publish)
        publish_plot(cfg, state.files.plot)
    return summary


def run_unlearn_flow(config: RunConfig, progress: bool = True) -> dict:
    """`rr unlearn`: the flow run, tagged like its task runs (a deployment's runs get its tags),
    on `PREFECT_API_URL`'s server or a temporary one that stops with this process."""
    with prefect_api(), tags(*run_tags(config)):
        return unlearn_flow(config.model_dump(mode="json"), progress=progress)
