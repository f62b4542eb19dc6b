"""A bfloat16 model's release: the adapter's matmuls in bfloat16, its weights and gradients in float32,
and on a CPU the attention computed by matmuls.

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

# torch's fused CPU attention (`sdpa`: `_scaled_dot_product_flash_attention_for_cpu`) runs far below
# the matmul kernels in bfloat16: 30% of a release step's time in torch's profiler for a tenth of its
# FLOPs. transformers' `eager` attention (matmuls and a softmax) made a bfloat16 release step 1.23x
# faster on one thread of a Xeon with AMX and 1.06x on two (`rr bench train`; negation and dpo, the
# same losses to bfloat16 rounding); in float32 the two were level, and sampling (one token at a time,
# with the cache) stayed faster with sdpa, so only the release switches, and only there.
CPU_BFLOAT16_ATTENTION = "eager"


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


@contextlib.contextmanager
def release_attention(peft_model):
    """Around the training loop: on a CPU, a bfloat16 model's attention as CPU_BFLOAT16_ATTENTION,
    switched back afterwards (the sampler and the evaluation share the model); else nothing."""
    config = peft_model.get_base_model().config
    before = getattr(config, "_attn_implementation", None)
    switch = peft_model.device.type == "cpu" and _bfloat16(peft_model) and before == "sdpa"
    if switch:
        peft_model.get_base_model().set_attn_implementation(CPU_BFLOAT16_ATTENTION)
    try:
        yield
    finally:
        if switch:
            peft_model.get_base_model().set_attn_implementation(before)
