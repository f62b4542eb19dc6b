"""What a run shows in the Prefect UI: artifacts, a live progress bar, tags.

Per iteration a table artifact (forget score, utility, samples kept, reward statistics) and a
markdown artifact of revealed samples; while a run works, a progress artifact follows every
progress bar of the pipeline (sampling, training, evaluation); at the end, the forget-versus-
iteration plot. Artifact keys are per run name, so the Artifacts page keeps one history per run.
"""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path

from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from pipeline import progress as pipeline_progress
from pipeline.config import RunConfig
from pipeline.run.report import iteration_table, samples_markdown


def artifact_key(config: RunConfig, what: str) -> str:
    """Prefect allows lowercase letters, digits and dashes only."""
    slug = re.sub(r"[^a-z0-9]+", "-", config.name.lower()).strip("-") or "run"
    return f"{slug}-{what}"


def run_tags(config: RunConfig) -> list[str]:
    """Tags of the flow run and its task runs: filter the UI's runs by target, model, objective."""
    model = Path(config.model.path).name if "/" in config.model.path else config.model.path
    return [
        f"run:{config.name}",
        f"target:{config.target.kind}",
        f"model:{model}",
        f"objective:{config.release.method}",
        f"sampler:{config.sampler.backend}",
    ]


def publish_iteration(config: RunConfig, t: int, history: list[dict], samples: list[dict]) -> None:
    """The table of every iteration so far, and examples of what iteration t revealed."""
    create_table_artifact(
        iteration_table(history),
        key=artifact_key(config, "iterations"),
        description=f"{config.name}: forget score, utility and samples, iterations 1-{t}",
    )
    create_markdown_artifact(
        samples_markdown(samples, title=f"{config.name}, iteration {t}: revealed samples"),
        key=artifact_key(config, "samples"),
        description=f"{config.name}: the highest-scoring forget samples of iteration {t}",
    )


def publish_plot(config: RunConfig, png: Path) -> None:
    """The forget-versus-iteration plot, inline: the UI shows an image artifact's URL as an image."""
    if not png.is_file():
        return
    url = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    create_image_artifact(
        url, key=artifact_key(config, "plot"), description=f"{config.name}: forget score against iteration"
    )


class ProgressReporter:
    """Mirrors the pipeline's progress bars into one progress artifact, at most every `every_s`."""

    def __init__(self, config: RunConfig, every_s: float = 2.0) -> None:
        self.every_s, self.last = every_s, 0.0
        self.id = create_progress_artifact(
            0.0, key=artifact_key(config, "progress"), description=f"{config.name}: starting"
        )

    def __call__(self, label: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < self.every_s:
            return
        self.last = now
        share = 100.0 * done / total if total else 100.0
        try:
            update_progress_artifact(self.id, share, description=f"{label}: {done}/{total}")
        except Exception:  # noqa: BLE001 - the UI's progress never stops the run
            pass

    def __enter__(self) -> ProgressReporter:
        pipeline_progress.add_listener(self)
        return self

    def __exit__(self, *exc) -> None:
        pipeline_progress.remove_listener(self)


def mark_abandoned_runs(config: RunConfig) -> None:
    """Flow runs of this run directory still shown Running are dead: this process holds its lock.

    A run killed with SIGKILL cannot report its end, so the UI would show it running forever;
    the run that resumes it marks it Crashed.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.runtime import flow_run
    from prefect.states import Crashed

    me = str(flow_run.id)
    run_dir = config.run_dir.resolve()
    with get_client(sync_client=True) as client:
        running = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[f"run:{config.name}"]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])),
            )
        )
        for other in running:
            params = (other.parameters or {}).get("config") or {}
            other_dir = Path(params.get("out", "runs")).expanduser().resolve() / params.get("name", "")
            if str(other.id) != me and other_dir == run_dir:
                message = f"its process ended without a word; flow run {flow_run.name} resumed {config.name}"
                client.set_flow_run_state(other.id, Crashed(message=message), force=True)
