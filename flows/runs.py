"""`rr runs`: recent unlearning runs as the Prefect API has them.

State and times come from the flow runs; iterations and the forget score from each run's latest
iterations table artifact (see `flows/monitor.py`), so a run still working shows how far it got.
"""

from __future__ import annotations

import json

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterType,
    FlowFilter,
    FlowFilterName,
)
from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort

FLOW_NAME = "unlearn"


def recent_runs(limit: int = 20) -> list[dict]:
    """The latest `limit` runs of the unlearning flow, newest first."""
    with get_client(sync_client=True) as client:
        flow_runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=limit,
        )
        tables = {}
        if flow_runs:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[run.id for run in flow_runs]),
                    type=ArtifactFilterType(any_=["table"]),
                ),
                sort=ArtifactSort.CREATED_DESC,
            )
            for artifact in artifacts:  # newest first: keep each run's latest table
                tables.setdefault(artifact.flow_run_id, artifact.data)
    return [_row(run, tables.get(run.id)) for run in flow_runs]


def _row(run, table_data) -> dict:
    history = _table(table_data)
    kept = [h for h in history if h.get("kept") == "yes"]  # as iteration_table writes it
    latest = kept[-1] if kept else (history[-1] if history else {})
    return {
        "id": str(run.id),
        "name": run.name,
        "state": run.state.name if run.state else "unknown",
        "start": run.start_time.strftime("%Y-%m-%d %H:%M") if run.start_time else "",
        "seconds": round(run.total_run_time.total_seconds()) if run.total_run_time else 0,
        "iterations": len(history),
        "forget_score": latest.get("forget_score"),
        "tags": list(run.tags),
    }


def _table(data) -> list[dict]:
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return []
    return data if isinstance(data, list) else []
