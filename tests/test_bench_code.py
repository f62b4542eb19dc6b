"""`rr bench code` end to end on the planted tiny model with a code target: the loop runs, every
reply is run in the sandbox, and results.json, report.md and plot.png come out. (Whether a figure
moves the right way is tested on replies made right or wrong on purpose: test_code_tasks.py.)"""

import json

import pytest

from tests.conftest import QUICK, run_rr

CODE_TARGET = ["target.kind=code", "target.description=Python code", "stop.max_iterations=1"]


@pytest.mark.slow
def test_the_code_benchmark_runs_base_and_rr_and_writes_its_results(tmp_path, cache_dir):
    out = tmp_path / "code"
    overrides = [arg for setting in [*QUICK, *CODE_TARGET] for arg in ("--set", setting)]
    done = run_rr(
        "bench", "code", "--config", "configs/tiny.yaml", "--out", out, "--methods", "base,rr",
        "--samples", "2", "--max-new-tokens", "12", "--no-progress", *overrides,
        env={"RR_CACHE_DIR": str(cache_dir)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["n_tasks"] >= 60 and results["samples_per_task"] == 2
    for figures in (results["base"], results["methods"]["rr"]):
        for key in ("pass@1_greedy", "pass@1", "code_share", "answer_rate", "math_accuracy"):
            assert 0.0 <= figures[key] <= 1.0, key
    assert results["base"]["utility_ppl_ratio"] == 1.0
    part = json.loads((out / "parts" / "seed0" / "rr.json").read_text())
    assert len(part["sampled_passed"]) == results["n_tasks"] and all(
        len(g) == 2 for g in part["sampled_passed"]
    )
    assert (out / "parts" / "seed0" / "rr_loop.json").is_file()
    assert "pass@1 (greedy)" in (out / "report.md").read_text() and (out / "plot.png").is_file()


def test_the_code_benchmark_refuses_a_target_of_another_kind(tmp_path):
    done = run_rr("bench", "code", "--config", "configs/demo.yaml", "--out", tmp_path / "x", "--no-progress")
    assert done.returncode == 2 and "needs a code target" in done.stdout + done.stderr
    assert not (tmp_path / "x").exists()
