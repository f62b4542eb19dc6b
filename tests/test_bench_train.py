"""`rr bench train` on the tiny model: both loops train on the same tokens, and the table adds up."""

import json

import pytest

from tests.conftest import run_rr

pytestmark = pytest.mark.slow


def test_train_bench_compares_like_with_like(tmp_path, cache_dir):
    out = tmp_path / "train"
    result = run_rr(
        # 8 steps of 8 rows: two whole epochs of the 32 rows a tiny release trains on, so both
        # loops see every row equally often, the same tokens.
        "bench", "train", "--config", "configs/tiny.yaml", "--out", out, "--set", "release.steps=8",
        "--repeats", "2", "--no-progress", env={"RR_CACHE_DIR": str(cache_dir)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    rows = {row["arm"]: row for row in results["rows"]}
    assert list(rows) == ["trainer_nll", "ours_nll", "ours_undial"]
    assert rows["trainer_nll"]["tokens"] == rows["ours_nll"]["tokens"] == rows["ours_undial"]["tokens"] > 0
    assert rows["trainer_nll"]["ratio_to_trainer"] == 1.0
    assert results["repeats"] == 2
    for row in rows.values():
        assert len(row["seconds_each"]) == 2 and row["seconds"] == pytest.approx(
            sum(row["seconds_each"]) / 2, abs=2e-3
        )
        assert row["seconds"] > 0 and row["peak_mb"] >= 0
        assert row["tok_per_s"] == pytest.approx(row["tokens"] / row["seconds"], rel=1e-2)
        assert row["ratio_to_trainer"] == pytest.approx(
            row["tok_per_s"] / rows["trainer_nll"]["tok_per_s"], rel=1e-2
        )
    # The frozen model's share of our loop: none for plain NLL, some (less than all) for UnDIAL.
    assert "reference_seconds" not in rows["trainer_nll"] and rows["ours_nll"]["reference_seconds"] == 0
    assert 0 < rows["ours_undial"]["reference_seconds"] < rows["ours_undial"]["seconds"]
    assert results["device"].startswith(("cpu: ", "cuda: "))
    assert "x Trainer" in result.stdout and "frozen s" in result.stdout
    assert results["training_rows"] == 32 and results["epochs"] == 2
    assert "32 training rows; 8 steps of batch 8 per arm (2 epochs)" in result.stderr


def test_a_bfloat16_model_meets_the_faster_of_two_trainers(tmp_path, cache_dir):
    out = tmp_path / "train"
    result = run_rr(
        "bench", "train", "--config", "configs/tiny.yaml", "--out", out, "--set", "release.steps=2",
        "--set", "model.dtype=bfloat16", "--repeats", "1", "--no-progress", env={"RR_CACHE_DIR": str(cache_dir)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = {row["arm"]: row for row in json.loads((out / "results.json").read_text())["rows"]}
    assert list(rows) == ["trainer_nll", "trainer_nll_bf16", "ours_nll", "ours_undial"]
    faster = max(rows["trainer_nll"]["tok_per_s"], rows["trainer_nll_bf16"]["tok_per_s"])
    assert max(rows["trainer_nll"]["ratio_to_trainer"], rows["trainer_nll_bf16"]["ratio_to_trainer"]) == 1.0
    for row in rows.values():
        assert row["ratio_to_trainer"] == pytest.approx(row["tok_per_s"] / faster, rel=1e-2)


def test_train_bench_bad_config_exits_2(tmp_path):
    result = run_rr(
        "bench", "train", "--config", "configs/tiny.yaml", "--out", tmp_path / "o", "--set", "release.steps=0"
    )
    assert result.returncode == 2 and "release.steps" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_train_bench_needs_a_round(tmp_path):
    result = run_rr(
        "bench", "train", "--config", "configs/tiny.yaml", "--out", tmp_path / "o", "--repeats", "0"
    )
    assert result.returncode == 2 and "--repeats" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()
