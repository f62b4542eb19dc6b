"""`model.dtype`: `auto` resolves by what the device computes natively; a bfloat16 run works end
to end; a benchmark never reuses a part measured in another dtype."""

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import pipeline.models
from pipeline.bench import loop_runs
from pipeline.config import ConfigError, ModelConfig, load_config
from pipeline.models import dtype_name, native_bfloat16
from tests.conftest import ROOT, run_rr


@pytest.mark.parametrize("native, expected", [(True, "bfloat16"), (False, "float32")])
def test_auto_is_bfloat16_only_where_the_device_computes_it_natively(monkeypatch, native, expected):
    monkeypatch.setattr(pipeline.models, "native_bfloat16", lambda device: native)
    assert dtype_name(ModelConfig(dtype="auto")) == expected
    assert dtype_name(ModelConfig(dtype="float32")) == "float32"  # a dtype named is kept
    assert dtype_name(ModelConfig(dtype="bfloat16")) == "bfloat16"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/cpuinfo")
def test_a_cpu_computes_bfloat16_natively_exactly_when_its_flags_say_so():
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    assert native_bfloat16(torch.device("cpu")) == bool(flags & {"avx512_bf16", "amx_bf16"})


def test_an_unknown_dtype_is_a_config_error(tmp_path):
    data = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    data["model"]["dtype"] = "float8"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="model.dtype"):
        load_config(path)


def test_a_part_measured_in_another_dtype_is_measured_again(tmp_path, cache_dir):
    config = load_config(ROOT / "configs" / "tiny.yaml")
    seen = []

    def measure(model, tokenizer, seed):
        seen.append(str(next(model.parameters()).dtype))
        return {"dtype_seen": seen[-1]}

    def parts(dtype: str) -> dict:
        cfg = config.model_copy(update={"model": config.model.model_copy(update={"dtype": dtype})})
        return loop_runs.measured_parts(cfg, tmp_path, [], [0], {"version": 1}, measure, False, print)

    assert parts("float32")["base"][0]["dtype_seen"] == "torch.float32"
    assert parts("float32")["base"][0]["dtype_seen"] == "torch.float32" and len(seen) == 1  # reused
    assert parts("bfloat16")["base"][0]["dtype_seen"] == "torch.bfloat16" and len(seen) == 2
    saved = json.loads((tmp_path / "parts" / "seed0" / "base.json").read_text())
    assert saved["measured_with"] == {"version": 1, "dtype": "bfloat16"}


def test_a_bfloat16_run_trains_float32_adapters_end_to_end(tmp_path, cache_dir):
    result = run_rr(
        "unlearn", "configs/tiny.yaml", "--out", tmp_path, "--no-progress", "--no-prefect",
        "--set", "model.dtype=bfloat16", "--set", "stop.max_iterations=1",
        env={"RR_CACHE_DIR": str(cache_dir)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = tmp_path / "tiny"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["history"][0]["n_forget_samples"] > 0
    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    # PEFT keeps the adapter in float32 over bfloat16 weights: small updates are not rounded away.
    assert weights and all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights.values())
    assert any(w.abs().sum() > 0 for name, w in weights.items() if "lora_B" in name)
