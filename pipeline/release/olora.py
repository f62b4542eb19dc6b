"""O-LoRA orthogonality and stacking several LoRA adapters into one PEFT adapter.

Each release round trains a fresh LoRA adapter; O-LoRA keeps its update subspace orthogonal to the
earlier rounds', and at the end the rounds are shipped as ONE ordinary PEFT adapter, so a user loads a
single folder with `PeftModel.from_pretrained` and needs nothing from this project.

In-memory convention for an adapter: `dict[module_name, (A, B)]` where

* `module_name` is the module's name in the *base* transformers model (`model.named_modules()`),
  e.g. `model.layers.0.self_attn.q_proj`, never PEFT's wrapped name;
* `A` is `[r, d_in]` and `B` is `[d_out, r]`, with PEFT's scaling already folded into `B`,
  so the weight update is exactly `ΔW = B @ A` (as a linear map from d_in to d_out).

Folding the scaling in makes the algebra trivial: a sum of LoRAs is the LoRA whose A and B are the
concatenations, and a written adapter only needs scaling 1 (lora_alpha = r).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pipeline.files import atomic_dir

Adapter = dict[str, tuple[torch.Tensor, torch.Tensor]]

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"

# PeftModel wraps the base model as `base_model` (the LoraModel) whose `model` is the transformers model,
# so every name in a PeftModel carries this prefix, and saved state-dict keys carry it too.
_PEFT_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[^.]+)?\.weight$")


def base_module_name(name: str) -> str:
    """Map a PEFT name (module, parameter or saved key) to the base model's module name.

    `base_model.model.model.layers.0.self_attn.q_proj`           -> `model.layers.0.self_attn.q_proj`
    `base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight` -> same
    `model.layers.0.self_attn.q_proj` (already a base name)      -> unchanged
    """
    match = _LORA_KEY.match(name)
    if match:
        name = match.group("module")
    if name.startswith(_PEFT_PREFIX):
        name = name[len(_PEFT_PREFIX) :]
    return name


# --------------------------------------------------------------------------------------------------
# Reading and writing PEFT folders


def _pattern_value(patterns: dict, module_name: str, default):
    # Same rule as peft.utils.other.get_pattern_key (peft 0.21): the first key, read as a regex, that
    # matches a dot-separated suffix of the module name wins. Copied rather than imported: it is private.
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module_name):
            return value
    return default


def read_adapter(adapter_dir: str | os.PathLike) -> Adapter:
    """Read a PEFT LoRA folder into `{module: (A, B)}` with the scaling folded into B.

    Scaling per module is `alpha / r` (or `alpha / sqrt(r)` with `use_rslora`), where r is the module's
    actual rank (from the tensors, which is what `rank_pattern` produced) and alpha comes from
    `alpha_pattern` if a key matches, else `lora_alpha`. Tensors are returned as float32 on CPU.
    Raises FileNotFoundError for a missing folder or file and ValueError for anything that is not a
    plain LoRA (other PEFT methods, DoRA, LoRA biases, extra trained modules), since none of those can
    be written as ΔW = B @ A and dropping them silently would change the model.
    """
    folder = Path(adapter_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"adapter folder not found: {folder}")
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder} is not a PEFT adapter: no {CONFIG_NAME}")
    if not weights_path.is_file():
        raise FileNotFoundError(f"{folder} has no {WEIGHTS_NAME} (only safetensors adapters are supported)")
    config = json.loads(config_path.read_text())
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise ValueError(f"{folder} holds a {peft_type or 'unknown'} adapter, not LoRA")
    for flag in ("use_dora", "lora_bias"):
        if config.get(flag):
            raise ValueError(f"{folder}: {flag}=True cannot be expressed as ΔW = B @ A")

    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in load_file(str(weights_path)).items():
        match = _LORA_KEY.match(key)
        if match is None:
            raise ValueError(f"{folder}: unsupported tensor {key!r} (only lora_A/lora_B weights)")
        halves.setdefault(base_module_name(key), {})[match.group("which")] = tensor
    if not halves:
        raise ValueError(f"{folder}: no LoRA weights in {WEIGHTS_NAME}")

    use_rslora = bool(config.get("use_rslora", False))
    alpha_pattern = config.get("alpha_pattern") or {}
    weights: Adapter = {}
    for module, pair in sorted(halves.items()):
        if set(pair) != {"A", "B"}:
            raise ValueError(f"{folder}: module {module} has lora_{''.join(pair)} but not both")
        a, b = pair["A"].float(), pair["B"].float()
        rank = a.shape[0]
        if a.dim() != 2 or b.dim() != 2 or b.shape[1] != rank:
            raise ValueError(f"{folder}: {module} has shapes A{tuple(a.shape)}, B{tuple(b.shape)}")
        alpha = _pattern_value(alpha_pattern, module, config["lora_alpha"])
        scaling = alpha / math.sqrt(rank) if use_rslora else alpha / rank
        weights[module] = (a.contiguous(), (b * scaling).contiguous())
    return weights


def _pad_rank(a: torch.Tensor, b: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Zero rows of A and zero columns of B add nothing to B @ A.
    missing = rank - a.shape[0]
    if missing == 0:
        return a, b
    a = torch.cat([a, a.new_zeros(missing, a.shape[1])], dim=0)
    b = torch.cat([b, b.new_zeros(b.shape[0], missing)], dim=1)
    return a, b


def write_adapter(
    weights: Adapter,
    out_dir: str | os.PathLike,
    base_model_name_or_path: str,
    task_type: str = "CAUSAL_LM",
) -> Path:
    """Write `weights` as an ordinary PEFT LoRA folder whose update is exactly ΔW = B @ A per module.

    The config has one uniform rank r (the largest; lower-rank modules are padded with zeros),
    lora_alpha = r so PEFT's scaling is 1, target_modules = the leaf names (e.g. ["q_proj", "v_proj"]),
    no dropout, bias "none". Any other module with one of those leaf names gets a LoRA from PEFT's
    default init when loaded, whose B is zero, so it adds nothing.

    Written to a temporary folder next to `out_dir` and renamed into place, replacing an existing
    `out_dir`, so a reader never sees half an adapter. Returns the folder's path.
    """
    from peft import LoraConfig  # here, not at the top: only writing needs peft's config class

    if not weights:
        raise ValueError("no modules to write")
    for module, (a, b) in weights.items():
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise ValueError(f"{module}: A{tuple(a.shape)} and B{tuple(b.shape)} do not form B @ A")
    rank = max(a.shape[0] for a, _ in weights.values())
    if rank == 0:
        raise ValueError("every module has rank 0")

    tensors = {}
    for module, (a, b) in sorted(weights.items()):
        a, b = _pad_rank(a.detach(), b.detach(), rank)
        key = f"{_PEFT_PREFIX}{base_module_name(module)}"
        # clone(): safetensors refuses tensors that share storage (e.g. views of one stacked tensor).
        tensors[f"{key}.lora_A.weight"] = a.cpu().contiguous().clone()
        tensors[f"{key}.lora_B.weight"] = b.cpu().contiguous().clone()

    config = LoraConfig(
        r=rank,
        lora_alpha=rank,
        target_modules=sorted({m.rsplit(".", 1)[-1] for m in weights}),
        lora_dropout=0.0,
        bias="none",
        task_type=task_type,
        base_model_name_or_path=base_model_name_or_path,
    )

    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        config.save_pretrained(str(tmp))
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
    return out


def stack_adapters(adapters: list[Adapter], scales: list[float] | None = None) -> Adapter:
    """The sum Σ_i scale_i · ΔW_i as one LoRA of rank Σ_i r_i.

    Per module, A = cat_i(A_i) along the rank axis and B = cat_i(scale_i · B_i) along the other, so
    B @ A = Σ_i scale_i · B_i @ A_i. Adapter i always occupies the same r_i rank slots (r_i = its
    largest rank) in every module: a module absent from adapter i, or of lower rank there, gets zero
    blocks. Every module of the result therefore has the same rank, and block i can be told apart later.
    `scales` (default all 1) allow e.g. a negated adapter.
    """
    if not adapters:
        raise ValueError("no adapters to stack")
    scales = [1.0] * len(adapters) if scales is None else list(scales)
    if len(scales) != len(adapters):
        raise ValueError(f"{len(scales)} scales for {len(adapters)} adapters")

    all_tensors = [t for adapter in adapters for pair in adapter.values() for t in pair]
    if not all_tensors:
        raise ValueError("the adapters hold no modules")
    dtype = all_tensors[0].dtype
    for t in all_tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    device = all_tensors[0].device
    ranks = [max((a.shape[0] for a, _ in adapter.values()), default=0) for adapter in adapters]

    stacked: Adapter = {}
    for module in sorted({m for adapter in adapters for m in adapter}):
        present = [adapter[module] for adapter in adapters if module in adapter]
        d_in, d_out = present[0][0].shape[1], present[0][1].shape[0]
        a_blocks, b_blocks = [], []
        for adapter, scale, rank in zip(adapters, scales, ranks, strict=True):
            if module in adapter:
                a, b = adapter[module]
                if a.shape[1] != d_in or b.shape[0] != d_out:
                    raise ValueError(f"{module}: adapters disagree on its shape ({d_out}x{d_in})")
                a, b = _pad_rank(a.to(device, dtype), b.to(device, dtype) * scale, rank)
            else:
                a = torch.zeros(rank, d_in, device=device, dtype=dtype)
                b = torch.zeros(d_out, rank, device=device, dtype=dtype)
            a_blocks.append(a)
            b_blocks.append(b)
        stacked[module] = (torch.cat(a_blocks, dim=0), torch.cat(b_blocks, dim=1))
    return stacked


# --------------------------------------------------------------------------------------------------
# O-LoRA


def lora_A_matrices(weights: Adapter) -> dict[str, torch.Tensor]:
    """`{module: A}` of an adapter, the format `orthogonality_penalty` takes for earlier rounds."""
    return {module: a for module, (a, _) in weights.items()}


def _active_lora_A(peft_model) -> dict[str, list[torch.Tensor]]:
    """`{base module name: [lora_A weight of each active adapter]}` over the peft model's LoRA layers."""
    found: dict[str, list[torch.Tensor]] = {}
    for name, module in peft_model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if not isinstance(lora_a, torch.nn.ModuleDict):
            continue
        active = getattr(module, "active_adapters", None) or []
        for adapter_name in active:
            if adapter_name in lora_a:
                found.setdefault(base_module_name(name), []).append(lora_a[adapter_name].weight)
    return found


def orthogonality_penalty(peft_model, previous: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """O-LoRA's orthogonality loss between the adapter being trained and earlier ones.

    Wang et al., "Orthogonal Subspace Learning for Language Model Continual Learning", Findings of
    EMNLP 2023 (arXiv 2310.14152):

        L_orth = Σ_i Σ_modules ‖A_i A_tᵀ‖²_F

    where A_t is the `lora_A` weight of the active adapter of `peft_model` at that module and A_i the
    A of earlier adapter i (`previous[i] = {module: A_i}`, e.g. from `lora_A_matrices`). Zero exactly when
    every row of A_t is orthogonal to every row of every A_i, i.e. the new update reads its input from a
    subspace the earlier ones ignore. Modules an earlier adapter does not touch contribute nothing.
    Module names in `previous` may be base names or PEFT names; both are mapped with `base_module_name`.
    Computed in float32 at A_t's device. If nothing is compared, returns a zero that is still attached to
    the LoRA parameters (when there are any), so `backward()` works either way.
    """
    current = _active_lora_A(peft_model)
    any_a = next((a for tensors in current.values() for a in tensors), None)
    if any_a is None:
        return torch.zeros(())
    total = any_a.float().sum() * 0.0
    for earlier in previous:
        for raw_name, a_prev in earlier.items():
            module = base_module_name(raw_name)
            for a_t in current.get(module, []):
                if a_prev.shape[-1] != a_t.shape[-1]:
                    raise ValueError(
                        f"{module}: earlier A has input size {a_prev.shape[-1]}, current {a_t.shape[-1]}"
                    )
                a_prev_t = a_prev.detach().to(device=a_t.device, dtype=torch.float32)
                total = total + (a_prev_t @ a_t.float().T).pow(2).sum()
    return total
