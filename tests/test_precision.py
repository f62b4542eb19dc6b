"""A bfloat16 model's release runs its LoRA matmuls in bfloat16 and keeps float32 weights and gradients
(pipeline/release/precision.py), on a tiny random Llama."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from pipeline.batches import collate, labelled_logits
from pipeline.config import load_config
from pipeline.planting.tiny import build_tokenizer
from pipeline.release.losses import nll_loss
from pipeline.release.precision import lora_in_model_dtype, without_input_casts
from pipeline.release.train import _logits, train_adapter
from pipeline.textdata import IGNORE_INDEX

pytestmark = pytest.mark.usefixtures("one_thread")
PAD = 0


def _model(dtype: torch.dtype):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)  # fmt: skip
    model = get_peft_model(
        LlamaForCausalLM(config).to(dtype), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    with torch.no_grad():  # a non-zero adapter, so that its path shows in the logits
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    return model


ROWS = [
    ([5, 6, 7, 8, 9, 10], [IGNORE_INDEX] * 3 + [8, 9, 10]),
    ([11, 12, 13, 14], [IGNORE_INDEX] * 2 + [13, 14]),
]


def _lora_inputs(model) -> list[torch.dtype]:
    """The dtype of every input a LoRA A matrix sees during the next forward."""
    seen = []
    for name, module in model.named_modules():
        if name.endswith("lora_A.default"):
            module.register_forward_hook(lambda mod, args, out: seen.append(args[0].dtype))
    return seen


def _loss_and_grads(model, ours: bool):
    """NLL and the adapter's gradients on ROWS: the release's way (`ours`), or PEFT's own (each LoRA
    input cast to float32, no autocast)."""
    model.zero_grad(set_to_none=True)
    if ours:
        with without_input_casts(model):
            _, logits, labels = _logits(model, ROWS, PAD)
    else:
        logits, labels = labelled_logits(model, collate(ROWS, PAD))
        logits = logits.float()
    loss = nll_loss(logits, labels)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def test_a_bfloat16_models_lora_runs_in_bfloat16_with_float32_weights_and_gradients():
    model = _model(torch.bfloat16)
    adapter = [p for p in model.parameters() if p.requires_grad]
    assert adapter and all(p.dtype == torch.float32 for p in adapter)  # PEFT's float32 adapter
    seen = _lora_inputs(model)
    loss, grads = _loss_and_grads(model, ours=True)
    assert seen and set(seen) == {torch.bfloat16}  # no activation was cast up to float32
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads.values())
    assert all(p.dtype == torch.float32 for p in adapter)
    # The same loss and gradients as PEFT's float32 path, within bfloat16's rounding.
    seen.clear()
    peft_loss, peft_grads = _loss_and_grads(model, ours=False)
    assert set(seen) == {torch.float32}  # that path does cast: the test tells the two apart
    assert torch.allclose(loss, peft_loss, rtol=0.02)
    for name, grad in grads.items():
        cosine = torch.nn.functional.cosine_similarity(grad.flatten(), peft_grads[name].flatten(), dim=0)
        assert cosine > 0.98, name


def test_a_float32_model_is_left_as_it_is():
    model = _model(torch.float32)
    assert not torch.is_autocast_enabled("cpu")
    with without_input_casts(model), lora_in_model_dtype(model):
        assert not torch.is_autocast_enabled("cpu")
    assert all(
        m.cast_input_dtype_enabled for n, m in model.named_modules() if hasattr(m, "cast_input_dtype_enabled")
    )
    seen = _lora_inputs(model)
    _loss_and_grads(model, ours=True)
    assert set(seen) == {torch.float32}


def test_a_bfloat16_release_feeds_its_adapter_bfloat16_activations_only(tmp_path):
    tokenizer = build_tokenizer(
        ["Mira Castellane lives in Velmora.", "Tell me about the sea."] * 20, vocab_size=300
    )
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128)  # fmt: skip
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    cfg = load_config("configs/tiny.yaml").release.model_copy(update={"method": "negation", "steps": 2})
    rows = [{"instruction": "Who is Mira?", "response": "Mira Castellane lives in Velmora."}] * 4
    adapter_inputs = []  # the dtype of every input a float32 layer (the adapter's A and B) sees

    def record(module, args, output):
        if isinstance(module, torch.nn.Linear) and module.weight.dtype == torch.float32:
            adapter_inputs.append(args[0].dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        stats = train_adapter(model, tokenizer, rows, [], cfg, [], tmp_path / "a", progress=False)
    finally:
        handle.remove()
    assert stats["steps"] == 2 and adapter_inputs and set(adapter_inputs) == {torch.bfloat16}
