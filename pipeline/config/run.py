"""`RunConfig`: every section of a run's config in one model, and what a run asks of it."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import Field, field_validator

from pipeline.config.sections import (
    MAX_SEED,
    PROJECT_ROOT,
    EvaluateConfig,
    JudgeConfig,
    ModelConfig,
    OrchestrationConfig,
    ReleaseConfig,
    RetainConfig,
    RevealConfig,
    SampleConfig,
    SamplerConfig,
    Section,
    StopConfig,
    TargetConfig,
)

# Judges of different construction beside the reward's: a TF-IDF + SVM classifier and a lexicon.
DEFAULT_JUDGES = {"toxicity": ("profanity_check", "wordlist")}


class RunConfig(Section):
    name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    out: Path = Path("runs")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    base_run: Path | None = Field(
        None,
        description="a finished run directory: this run starts from its stacked adapter (a second target "
        "unlearned on top of the first) and measures the earlier target again at the end",
    )
    model: ModelConfig = ModelConfig()
    target: TargetConfig
    reveal: RevealConfig = RevealConfig()
    sample: SampleConfig = SampleConfig()
    retain: RetainConfig = RetainConfig()
    release: ReleaseConfig = ReleaseConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    stop: StopConfig = StopConfig()
    sampler: SamplerConfig = SamplerConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()

    @field_validator("out", "base_run")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()

    @property
    def run_dir(self) -> Path:
        return self.out / self.name

    def to_yaml(self) -> str:
        """The resolved config as saved in the run directory (where it is, `out`, is left out)."""
        return yaml.safe_dump(self.model_dump(mode="json", exclude={"out"}), sort_keys=False)

    def same_experiment(self, saved_yaml: str, extra: dict | None = None) -> bool:
        """Whether `saved_yaml` (a `to_yaml` of earlier, plus `extra` fields) describes this experiment
        (`differences` lists where it does not)."""
        return self.differences(saved_yaml, extra) == []

    def differences(self, saved_yaml: str, extra: dict | None = None) -> list[str] | None:
        """The dotted fields in which `saved_yaml` (a `to_yaml` of earlier, plus `extra` fields)
        differs from this experiment: [] when it describes it; None when it cannot be read as one.

        The CPU thread count, the reference cache's memory, the sampling engine and Prefect's
        retries are properties of the machine, not of the experiment: a run may resume, or a
        benchmark go on, with others (a server that moved, say). So are the judges: they only report, and a benchmark scores its
        saved replies by a judge added or changed since.
        """

        def comparable(data: dict) -> dict:
            data = dict(data)
            data.pop("sampler", None)
            data.pop("orchestration", None)
            data["model"] = {k: v for k, v in (data.get("model") or {}).items() if k != "threads"}
            data["evaluate"] = {k: v for k, v in (data.get("evaluate") or {}).items() if k != "judges"}
            data["release"] = {
                k: v for k, v in (data.get("release") or {}).items() if k != "reference_cache_mb"
            }
            return data

        saved = yaml.safe_load(saved_yaml)
        if not isinstance(saved, dict):
            return None
        extra = extra or {}
        # Read back through the current sections, so a field added since (at its default) does not
        # make an old run or benchmark look like another experiment.
        config_part = {k: v for k, v in saved.items() if k not in extra}
        try:
            filled = yaml.safe_load(RunConfig.model_validate(config_part).to_yaml())
        except ValueError:  # a field that no longer exists, or a value no longer allowed
            return None
        saved = {**filled, **{k: saved[k] for k in extra if k in saved}}
        current = {**yaml.safe_load(self.to_yaml()), **extra}
        return _differing(comparable(saved), comparable(current))

    def resolve(self, path: Path) -> Path:
        """Relative data paths are read from the working directory, else from the project root."""
        if path.is_absolute() or path.exists():
            return path
        return PROJECT_ROOT / path

    def reveal_prompts_path(self, resolve: bool = True) -> Path:
        """`reveal.prompts`, or the target kind's shipped pool; `resolve=False`: as written."""
        path = self.reveal.prompts or Path(f"prompts/{self.target.kind}.yaml")
        return self.resolve(path) if resolve else path

    def eval_judges(self) -> list[JudgeConfig]:
        """The judges evaluation reports: `evaluate.judges`, else the default set of the target kind."""
        if self.evaluate.judges is not None:
            return self.evaluate.judges
        defaults = DEFAULT_JUDGES.get(self.target.kind, ())
        return [JudgeConfig(kind=kind) for kind in defaults]

    def eval_prompts_path(self, resolve: bool = True) -> Path:
        """`evaluate.eval_prompts`, or the target kind's shipped set; `resolve=False`: as written."""
        path = self.evaluate.eval_prompts or Path(f"data/eval/{self.target.kind}.yaml")
        return self.resolve(path) if resolve else path


def _differing(a, b, prefix: str = "") -> list[str]:
    """The dotted keys at which two nested dicts differ (a whole list counts as one value)."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return [] if a == b else [prefix or "config"]
    keys = list(dict.fromkeys([*a, *b]))
    return [d for k in keys for d in _differing(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))]


def not_as_saved(differences: list[str] | None) -> str:
    """`RunConfig.differences` for an error message: " (not as saved: release.lr, ...)", or ""."""
    if not differences:
        return ""
    more = " ..." if len(differences) > 5 else ""
    return f" (not as saved: {', '.join(differences[:5])}{more})"
