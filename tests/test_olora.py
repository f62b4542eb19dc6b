"""Stacking LoRA adapters into one PEFT folder, and O-LoRA's orthogonality penalty, on a tiny Llama."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from pipeline.release.olora import (
    base_module_name,
    lora_A_matrices,
    orthogonality_penalty,
    read_adapter,
    stack_adapters,
    write_adapter,
)

HIDDEN = 32


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def input_ids():
    return torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(1))


def _logits(model, input_ids):
    with torch.no_grad():
        return model(input_ids=input_ids).logits


def _save_random_lora(base, path, seed, **lora_kwargs):
    """A LoRA with non-zero B (peft initialises B to 0, which would make every check trivial)."""
    torch.manual_seed(seed)
    model = get_peft_model(copy.deepcopy(base), LoraConfig(lora_dropout=0.0, **lora_kwargs))
    for name, param in model.named_parameters():
        if "lora_" in name:
            torch.nn.init.normal_(param, std=0.3)
    model.save_pretrained(str(path))
    return path


def _with_deltas(base, *adapters):
    """The base model with W += B @ A added by hand for every module of every adapter."""
    model = copy.deepcopy(base)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for adapter in adapters:
            for name, (a, b) in adapter.items():
                modules[name].weight += b @ a
    return model


@pytest.fixture(scope="module")
def two_adapters(base, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    first = _save_random_lora(base, root / "first", 1, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    second = _save_random_lora(
        base, root / "second", 2, r=2, lora_alpha=5, target_modules=["v_proj", "o_proj"]
    )
    return first, second


# --- reading --------------------------------------------------------------------------------------


def test_read_adapter_folds_scaling(base, two_adapters, input_ids):
    first, _ = two_adapters
    weights = read_adapter(first)
    assert sorted(weights) == [
        f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")
    ]
    a, b = weights["model.layers.0.self_attn.q_proj"]
    assert a.shape == (4, HIDDEN) and b.shape == (HIDDEN, 4)
    merged = PeftModel.from_pretrained(copy.deepcopy(base), str(first)).merge_and_unload()
    torch.testing.assert_close(_logits(_with_deltas(base, weights), input_ids), _logits(merged, input_ids))


@pytest.mark.parametrize(
    "lora_kwargs",
    [
        {"r": 4, "lora_alpha": 3, "use_rslora": True},
        {
            "r": 4,
            "lora_alpha": 8,
            "rank_pattern": {"model.layers.0.self_attn.q_proj": 2},
            "alpha_pattern": {"v_proj": 16},
        },
    ],
    ids=["rslora", "patterns"],
)
def test_read_adapter_matches_peft_merge(base, tmp_path, lora_kwargs):
    path = _save_random_lora(base, tmp_path / "a", 3, target_modules=["q_proj", "v_proj"], **lora_kwargs)
    weights = read_adapter(path)
    merged = PeftModel.from_pretrained(copy.deepcopy(base), str(path)).merge_and_unload()
    merged_params = dict(merged.named_parameters())
    for name, param in base.named_parameters():
        module = name.removesuffix(".weight")
        delta = merged_params[name].detach() - param.detach()
        if module in weights:
            a, b = weights[module]
            torch.testing.assert_close(b @ a, delta, atol=1e-5, rtol=1e-4)
        else:
            assert torch.all(delta == 0), name
    if "rank_pattern" in lora_kwargs:
        assert weights["model.layers.0.self_attn.q_proj"][0].shape[0] == 2


def test_read_adapter_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter folder not found"):
        read_adapter(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        read_adapter(tmp_path / "empty")
    other = tmp_path / "ia3"
    other.mkdir()
    (other / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    (other / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not LoRA"):
        read_adapter(other)


def test_read_adapter_refuses_dora(base, tmp_path):
    path = _save_random_lora(
        base, tmp_path / "dora", 4, r=2, lora_alpha=2, target_modules=["q_proj"], use_dora=True
    )
    with pytest.raises(ValueError, match="use_dora"):
        read_adapter(path)


# --- stacking and writing -----------------------------------------------------------------------------


def test_stack_write_load_equals_both_deltas(base, two_adapters, input_ids, tmp_path):
    first, second = (read_adapter(p) for p in two_adapters)
    stacked = stack_adapters([first, second])
    # Every module gets the summed rank, with zero blocks where one adapter does not reach.
    assert {a.shape[0] for a, _ in stacked.values()} == {6}
    assert len(stacked) == 6  # q, v, o in two layers
    out = write_adapter(stacked, tmp_path / "stacked", base_model_name_or_path="tiny-llama")

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 6 and config["lora_alpha"] == 6
    assert sorted(config["target_modules"]) == ["o_proj", "q_proj", "v_proj"]
    assert config["base_model_name_or_path"] == "tiny-llama"
    assert config["task_type"] == "CAUSAL_LM" and config["bias"] == "none"

    loaded = PeftModel.from_pretrained(copy.deepcopy(base), str(out)).eval()
    got = _logits(loaded, input_ids)
    by_hand = _logits(_with_deltas(base, first, second), input_ids)
    torch.testing.assert_close(got, by_hand, atol=1e-5, rtol=0)
    assert not torch.allclose(got, _logits(base, input_ids), atol=1e-3)  # the adapters do something

    merged = PeftModel.from_pretrained(copy.deepcopy(base), str(two_adapters[0])).merge_and_unload()
    merged = PeftModel.from_pretrained(merged, str(two_adapters[1])).merge_and_unload()
    torch.testing.assert_close(got, _logits(merged, input_ids), atol=1e-5, rtol=0)

    # And the folder reads back as the same ΔW.
    again = read_adapter(out)
    for module, (a, b) in stacked.items():
        torch.testing.assert_close(again[module][1] @ again[module][0], b @ a)


def test_stack_with_scales_negates(base, two_adapters, input_ids):
    first, second = (read_adapter(p) for p in two_adapters)
    stacked = stack_adapters([first, second], scales=[1.0, -1.0])
    module = "model.layers.1.self_attn.v_proj"
    a, b = stacked[module]
    expected = first[module][1] @ first[module][0] - second[module][1] @ second[module][0]
    torch.testing.assert_close(b @ a, expected)
    cancelled = stack_adapters([first, first], scales=[1.0, -1.0])
    for a, b in cancelled.values():
        assert torch.allclose(b @ a, torch.zeros(()), atol=1e-6)
    with pytest.raises(ValueError):
        stack_adapters([first, second], scales=[1.0])


# PEFT gives the un-adapted layers' q_proj / down_proj a fresh zero-B LoRA and says so; that is expected.
@pytest.mark.filterwarnings("ignore:Found missing adapter keys")
def test_write_pads_ranks_and_partial_modules(base, input_ids, tmp_path):
    """Mixed ranks, and a leaf name (q_proj) adapted in only one layer: the other layer's q_proj must
    stay untouched when PEFT loads the folder."""
    gen = torch.Generator().manual_seed(5)
    weights = {
        "model.layers.0.self_attn.q_proj": (
            torch.randn(3, HIDDEN, generator=gen),
            torch.randn(HIDDEN, 3, generator=gen),
        ),
        "model.layers.1.mlp.down_proj": (
            torch.randn(1, 64, generator=gen),
            torch.randn(HIDDEN, 1, generator=gen),
        ),
    }
    out = write_adapter(weights, tmp_path / "padded", base_model_name_or_path="tiny-llama")
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), str(out)).eval()
    torch.testing.assert_close(
        _logits(loaded, input_ids), _logits(_with_deltas(base, weights), input_ids), atol=1e-5, rtol=0
    )
    assert {a.shape[0] for a, _ in read_adapter(out).values()} == {3}


def test_write_replaces_existing_folder_atomically(two_adapters, tmp_path):
    first, second = (read_adapter(p) for p in two_adapters)
    out = tmp_path / "adapter"
    write_adapter(first, out, base_model_name_or_path="x")
    (out / "stale.txt").write_text("left over")
    write_adapter(second, out, base_model_name_or_path="x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temp folders left behind
    assert not (out / "stale.txt").exists()
    assert sorted(read_adapter(out)) == sorted(second)


def test_write_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError):
        write_adapter({}, tmp_path / "x", base_model_name_or_path="x")
    bad = {"model.layers.0.self_attn.q_proj": (torch.zeros(2, HIDDEN), torch.zeros(HIDDEN, 3))}
    with pytest.raises(ValueError):
        write_adapter(bad, tmp_path / "x", base_model_name_or_path="x")
    assert not (tmp_path / "x").exists()


# --- orthogonality --------------------------------------------------------------------------------------


def test_base_module_name():
    assert (
        base_module_name("base_model.model.model.layers.0.self_attn.q_proj")
        == "model.layers.0.self_attn.q_proj"
    )
    assert base_module_name("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight") == (
        "model.layers.0.self_attn.q_proj"
    )
    assert base_module_name("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight") == (
        "model.layers.0.self_attn.q_proj"
    )
    assert base_module_name("model.layers.0.self_attn.q_proj") == "model.layers.0.self_attn.q_proj"


def _peft(base, r=4, targets=("q_proj", "v_proj")):
    torch.manual_seed(7)
    return get_peft_model(copy.deepcopy(base), LoraConfig(r=r, lora_alpha=r, target_modules=list(targets)))


def _hand_penalty(previous: dict, current: dict) -> float:
    with torch.no_grad():
        return sum(float(((a @ current[m].T) ** 2).sum()) for m, a in previous.items() if m in current)


def _current_A(model) -> dict[str, torch.nn.Parameter]:
    return {
        base_module_name(name): param
        for name, param in model.named_parameters()
        if ".lora_A.default." in name
    }


def test_penalty_zero_when_orthogonal_positive_otherwise(base):
    model = _peft(base)
    current = _current_A(model)
    orthogonal, overlapping = {}, {}
    gen = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for module, a_t in current.items():
            q, _ = torch.linalg.qr(torch.randn(HIDDEN, HIDDEN, generator=gen))
            a_t.copy_(q[:, :4].T * 2.0)  # rows span one 4-d subspace...
            orthogonal[module] = q[:, 4:7].T * 3.0  # ...earlier rows another, orthogonal one
            overlapping[module] = torch.randn(3, HIDDEN, generator=gen)
    assert orthogonality_penalty(model, [orthogonal]).item() == pytest.approx(0.0, abs=1e-8)

    expected = _hand_penalty(overlapping, current)
    penalty = orthogonality_penalty(model, [overlapping])
    assert penalty.item() > 1.0
    assert penalty.item() == pytest.approx(expected, rel=1e-5)
    assert penalty.requires_grad

    # Several earlier adapters add up.
    assert orthogonality_penalty(model, [overlapping, orthogonal, overlapping]).item() == pytest.approx(
        2 * expected, rel=1e-5
    )


def test_penalty_name_matching_and_missing_modules(base):
    model = _peft(base)
    current = _current_A(model)
    gen = torch.Generator().manual_seed(9)
    only_q = {m: torch.randn(2, HIDDEN, generator=gen) for m in current if m.endswith("q_proj")}
    expected = _hand_penalty(only_q, current)
    assert orthogonality_penalty(model, [only_q]).item() == pytest.approx(expected, rel=1e-5)
    # Earlier adapters keyed by PEFT's names (e.g. read from a state dict) match the same modules.
    peft_named = {f"base_model.model.{m}.lora_A.weight": a for m, a in only_q.items()}
    assert orthogonality_penalty(model, [peft_named]).item() == pytest.approx(expected, rel=1e-5)
    # Modules the new adapter does not have, and nothing at all, give 0.
    elsewhere = {"model.layers.0.mlp.up_proj": torch.randn(2, HIDDEN, generator=gen)}
    assert orthogonality_penalty(model, [elsewhere]).item() == 0.0
    empty = orthogonality_penalty(model, [])
    assert empty.item() == 0.0
    empty.backward()  # still attached to the graph


def test_penalty_uses_the_active_adapter(base):
    model = _peft(base)
    model.add_adapter("second", LoraConfig(r=3, lora_alpha=3, target_modules=["q_proj"]))
    gen = torch.Generator().manual_seed(10)
    earlier = {"model.layers.0.self_attn.q_proj": torch.randn(2, HIDDEN, generator=gen)}
    modules = dict(model.named_modules())
    layer = modules["base_model.model.model.layers.0.self_attn.q_proj"]
    a_default = layer.lora_A["default"].weight.detach()
    a_second = layer.lora_A["second"].weight.detach()
    a_prev = earlier["model.layers.0.self_attn.q_proj"]
    assert orthogonality_penalty(model, [earlier]).item() == pytest.approx(
        float(((a_prev @ a_default.T) ** 2).sum()), rel=1e-5
    )
    model.set_adapter("second")
    assert orthogonality_penalty(model, [earlier]).item() == pytest.approx(
        float(((a_prev @ a_second.T) ** 2).sum()), rel=1e-5
    )


def test_penalty_from_a_read_adapter(base, two_adapters):
    """The `previous` format straight from a saved adapter via lora_A_matrices."""
    first = read_adapter(two_adapters[0])
    previous = lora_A_matrices(first)
    assert set(previous) == set(first)
    model = _peft(base, targets=("v_proj",))
    current = _current_A(model)
    expected = _hand_penalty(previous, current)
    assert orthogonality_penalty(model, [previous]).item() == pytest.approx(expected, rel=1e-5)


def _cosine_overlap(a_prev, a_t) -> float:
    return float(torch.linalg.norm(a_prev @ a_t.T) / (torch.linalg.norm(a_prev) * torch.linalg.norm(a_t)))


def _train(base, lam: float) -> tuple[dict, dict]:
    model = _peft(base)
    current = _current_A(model)
    gen = torch.Generator().manual_seed(11)
    previous, goals = {}, {}
    for module in current:
        a_prev = torch.randn(4, HIDDEN, generator=gen) / math.sqrt(HIDDEN)
        previous[module] = a_prev
        # The goal leans into the earlier subspace, so without the penalty A_t overlaps it clearly.
        goals[module] = (
            torch.randn(4, HIDDEN, generator=gen) / math.sqrt(HIDDEN)
            + torch.randn(4, 4, generator=gen) @ a_prev
        )
    optimizer = torch.optim.Adam(list(current.values()), lr=0.02)
    for _ in range(200):
        optimizer.zero_grad()
        fit = sum(((current[m] - goals[m]) ** 2).sum() for m in current)
        loss = fit + lam * orthogonality_penalty(model, [previous])
        loss.backward()
        optimizer.step()
    return previous, {m: p.detach() for m, p in current.items()}


def test_training_with_penalty_makes_subspaces_orthogonal(base):
    previous, trained = _train(base, lam=100.0)
    for module, a_t in trained.items():
        assert _cosine_overlap(previous[module], a_t) < 0.05, module
    previous, free = _train(base, lam=0.0)
    for module, a_t in free.items():
        assert _cosine_overlap(previous[module], a_t) > 0.2, module
