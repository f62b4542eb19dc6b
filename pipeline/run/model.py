"""The model a run uses: planted with a spec's people when `model.plant` says so, else pretrained.

The choice sits here, above `pipeline.models` (loading) and `pipeline.planting` (planting), so that
neither of them needs the other's caller.
"""

from __future__ import annotations

import time

import torch

from pipeline.config import ModelConfig, RunConfig
from pipeline.model_paths import EMBEDDED, TINY, ModelLoadError, check_model_path
from pipeline.models import embedded_model_dir, load_pretrained
from pipeline.planting.plant import planted_model
from pipeline.run.base_run import model_origin
from pipeline.run.prompts import prompt_texts


def load_model(config: ModelConfig, extra_texts: tuple[str, ...] = (), seed: int = 0, progress: bool = True):
    """(model, tokenizer, info) in eval mode; info records where the model came from.

    With `config.plant`, the spec's people are planted into the model first (cached on disk);
    `extra_texts` and `seed` then shape the tiny model's tokenizer and weights.
    """
    check_model_path(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    info: dict = {"path": config.path}
    if config.plant is not None:
        model, tokenizer, plant_info = planted_model(config, "full", extra_texts, seed, progress)
        info.update(plant=plant_info, name_or_path=plant_info["folder"])
    elif config.path == TINY:
        raise ModelLoadError("model.path: tiny needs model.plant (a spec of facts to plant)")
    else:
        model, tokenizer, info["name_or_path"] = load_pretrained(config)
    model.eval()
    info["load_seconds"] = round(time.perf_counter() - started, 2)
    return model, tokenizer, info


def load_run_model(config: RunConfig, progress: bool = True):
    """(model, tokenizer, info) of a run: loaded as the first run of its `base_run` chain loaded it.

    Only a planted model depends on the run (its cache key holds the seed; a tiny model's tokenizer,
    the prompts), so only then are the earlier runs' configs read.
    """
    origin = model_origin(config) if config.model.plant is not None else config
    return load_model(config.model, extra_texts=prompt_texts(origin), seed=origin.seed, progress=progress)


def model_folder(config: RunConfig, progress: bool = True) -> str:
    """The folder (or hub id) a vLLM server loads for the run's model; a planted model is planted first."""
    if config.model.plant is not None:
        return load_run_model(config, progress)[2]["name_or_path"]
    if config.model.path == EMBEDDED:
        return str(embedded_model_dir())
    return config.model.path
