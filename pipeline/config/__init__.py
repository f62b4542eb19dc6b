"""The run config: pydantic sections (`sections.py`) in one `RunConfig` (`run.py`), loaded from YAML
with clear errors (`load.py`)."""

from pipeline.config.load import apply_override, load_config, parse_value, read_yaml, validate_config
from pipeline.config.run import DEFAULT_JUDGES, RunConfig
from pipeline.config.sections import (
    PROJECT_ROOT,
    ConfigError,
    EvaluateConfig,
    GenerationConfig,
    JudgeConfig,
    ModelConfig,
    OrchestrationConfig,
    PlantConfig,
    ReleaseConfig,
    RetainConfig,
    RevealConfig,
    RewriterConfig,
    SampleConfig,
    SamplerConfig,
    Section,
    StopConfig,
    TargetConfig,
    TinyModelConfig,
)

__all__ = [
    "DEFAULT_JUDGES", "PROJECT_ROOT", "ConfigError", "EvaluateConfig", "GenerationConfig", "JudgeConfig", "ModelConfig", "OrchestrationConfig",
    "PlantConfig", "ReleaseConfig", "RetainConfig", "RevealConfig", "RewriterConfig", "RunConfig", "SampleConfig", "SamplerConfig", "Section",
    "StopConfig", "TargetConfig", "TinyModelConfig", "apply_override", "load_config", "parse_value",
    "read_yaml", "validate_config",
]  # fmt: skip
