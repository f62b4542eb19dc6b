"""Screenshots of a flow run's page in the Prefect UI, taken by headless Chromium.

    python -m flows.screenshot --out shots/run.png               # the latest unlearning run
    python -m flows.screenshot --flow-run ID --out shots/run.png

Writes `run.png` (the run's page: tags, graph of task runs, logs) and `run-<key>.png` for each of
its artifacts (iteration table, samples, progress, plot), and beside each the page as the browser
rendered it (`run.html`), which a test can read. Needs `PREFECT_API_URL` (the server `rr ui` started) and Chromium: Debian's
`chromium` package, or `--chromium PATH`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Flags for a closed network: without the background-networking ones Chromium keeps trying to reach
# Google's hosts; the UI is a single-page app, so the virtual time budget lets its scripts finish.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def find_chromium(path: str | None = None) -> str:
    for candidate in [
        path,
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        shutil.which("google-chrome"),
    ]:
        if candidate and Path(candidate).exists():
            return candidate
    raise FileNotFoundError("no Chromium found: `apt-get install chromium`, or pass --chromium PATH")


def ui_url(api_url: str) -> str:
    """The UI lives where the API does, without the /api suffix."""
    return api_url.rstrip("/").removesuffix("/api")


def latest_flow_run_id() -> str:
    from flows.runs import recent_runs

    runs = recent_runs(limit=1)
    if not runs:
        raise LookupError("the Prefect server has no unlearning runs yet")
    return runs[0]["id"]


def screenshot(url: str, out: Path, chromium: str, size: str = "1600,1200", wait_ms: int = 15000) -> Path:
    """`out` (PNG) of the page at `url`, and `out` with .html: the DOM the page rendered."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for what in (f"--screenshot={out.resolve()}", "--dump-dom"):
        with tempfile.TemporaryDirectory() as profile:
            command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                       f"--virtual-time-budget={wait_ms}", what, url]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            raise RuntimeError(f"chromium failed (exit {done.returncode}): {done.stderr[-2000:]}")
        if what == "--dump-dom":
            out.with_suffix(".html").write_text(done.stdout)
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no screenshot: {done.stderr[-2000:]}")
    return out


def latest_artifacts(flow_run_id: str) -> dict[str, str]:
    """{key: id} of the flow run's artifacts, the latest version of each key."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
            sort=ArtifactSort.CREATED_DESC,
        )
    latest: dict[str, str] = {}
    for artifact in found:
        if artifact.key:
            latest.setdefault(artifact.key, str(artifact.id))
    return latest


def flow_run_screenshots(flow_run_id: str, out: Path, api_url: str, chromium: str) -> list[Path]:
    """The run's page, then each of its artifacts' pages (`<out>-<artifact key>.png`)."""
    ui = ui_url(api_url)
    shots = [screenshot(f"{ui}/runs/flow-run/{flow_run_id}", out, chromium)]
    for key, artifact_id in sorted(latest_artifacts(flow_run_id).items()):
        page = out.with_name(f"{out.stem}-{key}{out.suffix}")
        shots.append(screenshot(f"{ui}/artifacts/artifact/{artifact_id}", page, chromium))
    return shots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flow-run", help="flow run id (default: the latest unlearning run)")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--chromium", help="Chromium binary (default: chromium on PATH)")
    args = parser.parse_args(argv)
    api_url = os.environ.get("PREFECT_API_URL")
    if not api_url:
        print("error: set PREFECT_API_URL to the server's API (see `rr ui`)", file=sys.stderr)
        return 2
    try:
        chromium = find_chromium(args.chromium)
        flow_run_id = args.flow_run or latest_flow_run_id()
        for path in flow_run_screenshots(flow_run_id, args.out, api_url, chromium):
            print(path)
    except (FileNotFoundError, LookupError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
