"""The unlearning flow: the four stages of `pipeline.stages` as Prefect tasks, in a loop.

The Prefect UI shows baseline, then reveal / sample / release / evaluate for every iteration.
Without `PREFECT_API_URL` Prefect starts a temporary local server for the run; with it, runs
report to that server. All state lives in the run directory, so a run started again with the
same name resumes after its last completed iteration.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipeline import stages
from pipeline.config import validate_config

# The run state holds the model: never hash or persist it as a task input.
stage_task = task(cache_policy=NO_CACHE, persist_result=False)


@stage_task(name="baseline")
def baseline_task(state: stages.RunState) -> dict:
    return stages.baseline(state)


@stage_task(name="reveal", task_run_name="reveal-{t}")
def reveal_task(state: stages.RunState, t: int) -> list[str]:
    return stages.reveal(state, t)


@stage_task(name="sample", task_run_name="sample-{t}")
def sample_task(state: stages.RunState, t: int, instructions: list[str]) -> dict:
    return stages.sample(state, t, instructions)


@stage_task(name="release", task_run_name="release-{t}")
def release_task(state: stages.RunState, t: int) -> dict:
    return stages.release(state, t)


@stage_task(name="evaluate", task_run_name="evaluate-{t}")
def evaluate_task(state: stages.RunState, t: int, base: dict) -> dict:
    return stages.evaluate(state, t, base)


def _run_name() -> str:
    from prefect.runtime import flow_run

    return f"unlearn-{flow_run.parameters['config'].get('name', 'run')}"


@flow(name="unlearn", flow_run_name=_run_name, log_prints=True)
def unlearn_flow(config: dict, progress: bool = True) -> dict:
    """Reveal, sample, release and evaluate until forgetting converges; returns summary.json."""
    cfg = validate_config(config)
    state = stages.RunState(cfg, progress=progress)
    return stages.run_loop(
        state,
        baseline=baseline_task,
        reveal=reveal_task,
        sample=sample_task,
        release=release_task,
        evaluate=evaluate_task,
    )
