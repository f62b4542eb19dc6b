"""Sequential requests: a run that starts where an earlier run ended (`base_run: DIR`).

The earlier run's stacked adapter becomes this run's starting stack: the baseline is measured
with it, every new adapter is trained on top of it and orthogonal to it, and the new stack
contains it, so the final adapter forgets both targets on the plain base model. The model is
loaded exactly as the first run of the chain loaded it (a tiny model's tokenizer is built from
that run's prompts). At the end, every earlier target is measured again with the final stack.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import ConfigError, RunConfig, load_config
from pipeline.run.chain import read_summary
from pipeline.run.rundir import RunDir, has_adapter


def base_config(run_dir: Path) -> RunConfig:
    """The config an earlier run was made with, from its run directory."""
    run_dir = Path(run_dir)
    return load_config(RunDir(run_dir).config, out=run_dir.parent, name=run_dir.name)


def base_chain(config: RunConfig) -> list[tuple[Path, RunConfig]]:
    """(run directory, config) of every earlier run this one builds on, the nearest first."""
    chain, seen = [], {config.run_dir.resolve()}
    current = config
    while current.base_run is not None:
        folder = current.base_run.resolve()
        if folder in seen:
            raise ConfigError(f"base_run: {current.base_run} leads back to a run already in the chain")
        seen.add(folder)
        current = base_config(folder)
        chain.append((folder, current))
    return chain


def model_origin(config: RunConfig) -> RunConfig:
    """The config whose model every run of the chain uses: the first run's."""
    chain = base_chain(config)
    return chain[-1][1] if chain else config


def check_base_run(config: RunConfig) -> None:
    """A base run must be finished, have an adapter, and use the same model."""
    if config.base_run is None:
        return
    folder, files = config.base_run, RunDir(config.base_run)
    if folder.resolve() == config.run_dir.resolve():
        raise ConfigError(f"base_run: {folder} is this run's own directory")
    if not files.config.is_file():
        raise ConfigError(f"base_run: {folder} is not a run directory (no config.yaml)")
    summary = read_summary(files, "base_run: finish that run again, or choose another")
    if summary is None or not summary.get("stop_reason"):
        raise ConfigError(f"base_run: {folder} has not finished (no summary.json); finish it first")
    if not has_adapter(files.adapter):
        raise ConfigError(f"base_run: {folder} kept no adapter: there is nothing to start from")
    try:
        earlier = base_chain(config)
    except ConfigError as exc:
        raise ConfigError(f"base_run: {folder}: {exc}") from None
    ours, theirs = _model_identity(config), _model_identity(earlier[0][1])
    if ours != theirs:
        raise ConfigError(f"base_run: {folder} used model {theirs}, this config model {ours}")


def _model_identity(config: RunConfig) -> dict:
    """The model fields that make two runs' weights the same (threads, device and dtype do not)."""
    return config.model.model_dump(mode="json", exclude={"threads", "device", "dtype"})
