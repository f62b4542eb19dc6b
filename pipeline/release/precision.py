"""A bfloat16 model's release: the adapter's matmuls in bfloat16, its weights and gradients in float32.

PEFT keeps a LoRA's weights in float32 on a bfloat16 model (so AdamW's small steps are not lost to
rounding), and so casts every LoRA layer's input up to float32 and its output back down: 420
activation-sized copies per forward of SmolLM2-135M (7 modules x 30 layers, twice), more in the
backward; 12% of a release step's time in torch's profiler. Under autocast, with PEFT's input cast
off, only the small A and B matrices are cast, once per forward, as mixed-precision training does;
their gradients come back in float32 through the cast. Measured on a CPU (`rr bench train`); on a
GPU autocast also runs some ops in float32 (softmax, layer norm), which a LayerNorm model then pays.
"""

from __future__ import annotations

import contextlib

import torch
from peft.helpers import disable_input_dtype_casting


def _bfloat16(model) -> bool:
    """Every frozen weight of `model` is bfloat16 (not so where a model keeps some layers float32,
    which autocast would then compute in bfloat16)."""
    frozen = [p for p in model.parameters() if not p.requires_grad and p.is_floating_point()]
    return bool(frozen) and all(p.dtype == torch.bfloat16 for p in frozen)


def lora_in_model_dtype(model):
    """Around a training forward: autocast to bfloat16 on a bfloat16 model, else nothing."""
    if not _bfloat16(model):
        return contextlib.nullcontext()
    return torch.autocast(model.device.type, dtype=torch.bfloat16)


def without_input_casts(peft_model):
    """Around the training loop: PEFT's cast of each LoRA layer's input to the layer's float32 off on
    a bfloat16 model (autocast casts the weights instead), else nothing."""
    if not _bfloat16(peft_model):
        return contextlib.nullcontext()
    return disable_input_dtype_casting(peft_model)
