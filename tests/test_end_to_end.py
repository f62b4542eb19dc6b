"""The end-to-end case through Prefect: forget one planted person, keep the others.

Runs `rr unlearn configs/tiny.yaml` as a user would (reporting to the session's Prefect server,
where tests/test_prefect.py reads it back) and checks the run directory and the figures in
summary.json. A run killed in iteration 2 and resumed: tests/test_prefect.py.
"""

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from pipeline.batches import encode_pairs
from pipeline.release.olora import read_adapter, stack_adapters
from tests.conftest import run_rr

pytestmark = pytest.mark.slow


def test_tiny_run_forgets_the_target_and_keeps_the_others(tiny_run):
    run_dir, result = tiny_run
    summary = json.loads((run_dir / "summary.json").read_text())
    print(json.dumps({k: summary[k] for k in ("stop_reason", "iterations", "baseline", "final")}, indent=1))
    assert isinstance(summary["stop_reason"], str) and summary["stop_reason"]
    assert summary["iterations"] >= 2
    for entry in [summary["baseline"], summary["final"], *summary["history"]]:
        assert {"forget_score", "utility_ppl"} <= set(entry)
    assert all("n_forget_samples" in h for h in summary["history"])
    base, final = summary["baseline"], summary["final"]
    assert base["forget_score"] >= 0.8, "planting failed: the tiny model does not know the target"
    assert final["forget_score"] <= base["forget_score"] / 2, summary["history"]
    assert final["retain_probe_acc"] >= base["retain_probe_acc"] - 0.15, summary["history"]
    assert "iteration 2" in result.stdout and "stop reason:" in result.stdout  # the final table


def test_tiny_run_directory_is_complete(tiny_run):
    run_dir, _ = tiny_run
    for name in [
        "config.yaml",
        "baseline.json",
        "summary.json",
        "report.md",
        "plots/forgetting.png",
        "adapter/adapter_config.json",
    ]:
        assert (run_dir / name).is_file(), name
    for t in (1, 2):
        for name in [
            "instructions.jsonl",
            "forget.jsonl",
            "retain.jsonl",
            "metrics.json",
            "adapter/adapter_model.safetensors",
        ]:
            assert (run_dir / f"iter_{t}" / name).is_file(), f"iter_{t}/{name}"
    pulls = [
        json.loads(line) for line in (run_dir / "iter_1" / "instructions.jsonl").read_text().splitlines()
    ]
    assert pulls and {"instruction", "reward", "relevance"} <= set(pulls[0])
    samples = [json.loads(line) for line in (run_dir / "iter_1" / "forget.jsonl").read_text().splitlines()]
    assert samples and {"instruction", "response", "score", "iteration"} <= set(samples[0])


def test_stacked_adapter_loads_with_peft_and_gives_the_in_memory_stacks_logits(tiny_run):
    run_dir, _ = tiny_run
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    folder = config["base_model_name_or_path"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = encode_pairs(tokenizer, ["Tell me about Mira Castellane."], ["Mira Castellane was born in"])
    peft_model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(folder), str(run_dir / "adapter")
    )
    loaded = peft_model.eval()(input_ids=batch["input_ids"]).logits

    # The same stack in memory: W + Σ_t B_t A_t over every kept iteration's own adapter.
    summary = json.loads((run_dir / "summary.json").read_text())
    kept = [h["iteration"] for h in summary["history"] if h["kept"]]
    stacked = stack_adapters([read_adapter(run_dir / f"iter_{t}" / "adapter") for t in kept])
    in_memory = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        for module, (a, b) in stacked.items():
            in_memory.get_submodule(module).weight += b @ a
    expected = in_memory(input_ids=batch["input_ids"]).logits
    plain = AutoModelForCausalLM.from_pretrained(folder).eval()(input_ids=batch["input_ids"]).logits
    assert not torch.allclose(plain, expected, atol=1e-3)  # the stack changes the model ...
    torch.testing.assert_close(loaded, expected, atol=1e-4, rtol=1e-4)  # ... and PEFT loads it exactly


def test_finished_run_is_not_recomputed(tiny_run):
    run_dir, _ = tiny_run
    before = (run_dir / "summary.json").read_text()
    result = run_rr("unlearn", "configs/tiny.yaml", "--out", run_dir.parent, "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "already finished" in result.stdout + result.stderr
    assert (run_dir / "summary.json").read_text() == before


def test_same_name_with_another_config_is_refused(tiny_run):
    run_dir, _ = tiny_run
    result = run_rr("unlearn", "configs/tiny.yaml", "--out", run_dir.parent, "--set", "release.steps=3")
    assert result.returncode == 2
    assert "exists with a different config (not as saved: release.steps)" in result.stderr
