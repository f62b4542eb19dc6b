"""The run config: pydantic sections (`sections.py`), loaded from YAML with clear errors (`load.py`)."""

from pipeline.config.load import apply_override, load_config, parse_value, validate_config
from pipeline.config.sections import (
    PROJECT_ROOT,
    ConfigError,
    EvaluateConfig,
    GenerationConfig,
    ModelConfig,
    OrchestrationConfig,
    PlantConfig,
    ReleaseConfig,
    RevealConfig,
    RunConfig,
    SampleConfig,
    SamplerConfig,
    Section,
    StopConfig,
    TargetConfig,
    TinyModelConfig,
)

__all__ = [
    "PROJECT_ROOT", "ConfigError", "EvaluateConfig", "GenerationConfig", "ModelConfig", "OrchestrationConfig",
    "PlantConfig", "ReleaseConfig", "RevealConfig", "RunConfig", "SampleConfig", "SamplerConfig", "Section",
    "StopConfig", "TargetConfig", "TinyModelConfig", "apply_override", "load_config", "parse_value",
    "validate_config",
]  # fmt: skip
