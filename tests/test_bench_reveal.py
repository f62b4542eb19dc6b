"""`rr bench reveal` on the planted tiny model, run as a user would.

The tiny model names its person in every reply, so relevance is saturated and the methods differ
only in how many distinct replies they draw: this checks the accounting (the same budget for every
method, tokens counted, repeats drawn with other seeds), not that the bandit wins.
"""

import json

import pytest

from pipeline.bench.reveal import METHODS, generation_budget
from pipeline.config import load_config
from tests.conftest import ROOT, run_rr

pytestmark = pytest.mark.slow

# dpo, the demo's objective: its release needs the sample stage's chosen replies (`release_ready`).
QUICK = ["--set", "release.steps=6", "--set", "release.method=dpo", "--set", "sample.alternative_threshold=0.1",
         "--repeats", "2", "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def reveal_bench(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("bench") / "reveal"
    args = ["bench", "reveal", "--config", "configs/tiny.yaml", "--out", out, *QUICK]
    result = run_rr(*args, env={"RR_CACHE_DIR": str(cache_dir)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, args


def test_every_method_spends_the_same_budget(reveal_bench):
    out, _ = reveal_bench
    results = json.loads((out / "results.json").read_text())
    budget = generation_budget(load_config(ROOT / "configs" / "tiny.yaml"), 12)
    assert results["budget_responses"] == budget == 3 * 4 * 4 + 4 * 8
    assert set(results["methods"]) == set(METHODS) and results["repeats"] == 2
    for method, runs in results["runs"].items():
        assert len(runs) == 2
        for run in runs:
            assert run["responses"] == budget, method
            assert run["generated_tokens"] > 0 and 0 < run["relevant_kept"] <= run["responses"]
            assert run["kept_per_1k_tokens"] == pytest.approx(
                1000 * run["relevant_kept"] / run["generated_tokens"]
            )
            assert 0 <= run["forget_score"] <= 1 and 0 < run["diversity"] <= 1 + 1e-6
            cap = load_config(ROOT / "configs" / "tiny.yaml").sample.max_forget_samples
            assert run["release_forget_samples"] == min(run["relevant_kept"], cap), method  # it trained
    # Repeats draw other samples (and the bandit other choices); evaluation stays the same.
    first, second = results["runs"]["random"]
    assert first["generated_tokens"] != second["generated_tokens"]
    assert results["methods"]["random"]["ratio_to_random"] == 1.0
    assert results["base"]["forget_score"] >= 0.8
    device = results["device"]  # the report says where its figures come from
    assert device.startswith("cuda: ") or (device.startswith("cpu: ") and device.endswith(" 1 torch threads"))
    best = results["runs"]["best_seed"][0]
    assert best["seed_relevance"][best["best_seed"]] == max(best["seed_relevance"].values())
    assert (out / "report.md").read_text().count("| neuralucb |") == 1 and (out / "plot.png").is_file()


def test_rerun_reuses_the_measurements(reveal_bench, cache_dir):
    out, args = reveal_bench
    parts = {p.name: p.stat().st_mtime_ns for p in (out / "parts").iterdir()}
    result = run_rr(*args, env={"RR_CACHE_DIR": str(cache_dir)})
    assert result.returncode == 0 and "relevant kept" not in result.stderr, result.stderr[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "parts").iterdir()} == parts


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--methods", "neuralucb,oracle"], "--methods"),
        (["--repeats", "0"], "--repeats: need at least 1"),
        (["--set", "reveal.rounds=0"], "reveal.rounds"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, args, expected):
    out = tmp_path / "out"
    result = run_rr("bench", "reveal", "--config", "configs/tiny.yaml", "--out", out, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()
