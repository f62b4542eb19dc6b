"""The run config's model section: which model, on what, and the planting that may precede a run."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from pipeline.config.base import MAX_BATCH, MAX_LR, MAX_SEED, MAX_STEPS, MAX_WIDTH, MAX_WORKERS, Section


class TinyModelConfig(Section):
    """Shape of the randomly initialised Llama used when `model.path: tiny`."""

    hidden_size: int = Field(128, ge=8, le=MAX_WIDTH)
    num_layers: int = Field(4, ge=1, le=MAX_WIDTH)
    num_heads: int = Field(4, ge=1, le=MAX_WIDTH)


class PlantConfig(Section):
    """Plant the people of a spec into the model by fine-tuning before unlearning (cached on disk)."""

    spec: Path
    steps: int = Field(200, ge=1, le=MAX_STEPS)
    lr: float = Field(3e-3, gt=0, le=MAX_LR)
    batch_size: int = Field(16, ge=1, le=MAX_BATCH)
    recitals: int = Field(
        8,
        ge=0,
        le=8,
        description="biography requests per person (worded unlike the reveal seeds), answered with all facts",
    )
    min_probe_acc: float = Field(
        0.9, ge=0, le=1, description="go on training (up to max_steps) while probe accuracy is below this"
    )
    max_steps: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="step limit with the extra rounds; default: steps"
    )
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="the planting's seed; default: the run's seed"
    )

    @model_validator(mode="after")
    def _max_not_below_steps(self) -> PlantConfig:
        if self.max_steps is not None and self.max_steps < self.steps:
            raise ValueError(f"max_steps ({self.max_steps}) is below steps ({self.steps})")
        return self


class ModelConfig(Section):
    path: str = Field("embedded", description="'embedded', 'tiny', a local folder or a hub id")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32",
        description="auto: bfloat16 where the device computes in it natively (a GPU that supports "
        "it, a CPU with AVX512-BF16 or AMX), else float32",
    )
    trust_remote_code: bool = False
    threads: int = Field(
        0,
        ge=0,
        le=MAX_WORKERS,
        description="torch CPU threads; 0 keeps torch's default (tiny models run best on 1)",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when a GPU is visible")
    tiny: TinyModelConfig = TinyModelConfig()
    plant: PlantConfig | None = None
