"""`rr schedule`: the unlearning flow as a Prefect deployment with a cron or interval schedule.

Two ways to run it, both Prefect's own:
- `serve_schedule`: this process serves the deployment (Prefect's `serve`) and runs each
  scheduled flow run in a subprocess, until it is stopped.
- `deploy_to_pool`: the deployment goes to a work pool; `prefect worker start --pool POOL` on any
  machine with this project checked out at the same path picks its runs up.
"""

from __future__ import annotations

from flows.monitor import run_tags
from flows.unlearn import unlearn_flow
from pipeline.config import PROJECT_ROOT, RunConfig

ENTRYPOINT = "flows/unlearn.py:unlearn_flow"


def valid_cron(expression: str) -> bool:
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=expression)
    except ValidationError:
        return False
    return True


def schedule_args(cron: str | None, interval: float | None) -> dict:
    return {"cron": cron} if cron else {"interval": interval}


def deployment_parameters(config: RunConfig) -> dict:
    # Scheduled runs never draw progress bars: nobody watches their terminal, the UI shows progress.
    return {"config": config.model_dump(mode="json"), "progress": False}


def serve_schedule(config: RunConfig, name: str, cron: str | None, interval: float | None) -> None:
    """Blocks: serves the deployment and runs its scheduled flow runs until stopped."""
    unlearn_flow.serve(
        name=name,
        parameters=deployment_parameters(config),
        tags=run_tags(config),
        description=f"Unlearn {config.target.kind} '{config.target.description}' ({config.name})",
        **schedule_args(cron, interval),
    )


def deploy_to_pool(config: RunConfig, name: str, cron: str | None, interval: float | None, pool: str) -> str:
    """Creates or updates the deployment in `pool`; returns its id."""
    source = unlearn_flow.from_source(source=str(PROJECT_ROOT), entrypoint=ENTRYPOINT)
    deployment_id = source.deploy(
        name=name,
        work_pool_name=pool,
        parameters=deployment_parameters(config),
        tags=run_tags(config),
        description=f"Unlearn {config.target.kind} '{config.target.description}' ({config.name})",
        print_next_steps=False,
        **schedule_args(cron, interval),
    )
    return str(deployment_id)


def pool_exists(pool: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            return False
    return True
