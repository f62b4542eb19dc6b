"""`rr bench planted` and `rr bench toxicity`, run as a user would on the tiny model.

The planted benchmark is run for real (planting, the loop, four oracles, every metric) with a
small step budget; the figures are checked for what must hold on any run: the planted model knows
the forget person, the retain-only model does not, every method's metrics are present and sane.
"""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.bench.knowledge import sentence_probe, truth_ratio_probes
from pipeline.bench.planted import METHODS, rr_config
from pipeline.config import ConfigError, load_config
from pipeline.planting.spec import load_spec
from tests.conftest import QUICK_SETS, ROOT, run_rr

pytestmark = pytest.mark.slow

SMALL = ROOT / "data" / "bench" / "planted_small.json"
METRICS = {
    "forget_probe_acc",
    "retain_probe_acc",
    "forget_quality",
    "verbmem",
    "privleak",
    "utility_ppl_ratio",
    "paraphrase_probe_acc",
    "prefill_probe_acc",
    "relearn_acc",
    "relearn_gap",
    "quantized_forget_acc",
    "quantized_retain_acc",
}
ATTACKS = ["paraphrase_probe_acc", "prefill_probe_acc", "relearn_acc", "quantized_forget_acc"]
QUICK = [*QUICK_SETS, "--set", "release.steps=12", "--set", "stop.max_iterations=2", "--no-progress"]


@pytest.fixture(scope="module")
def planted_bench(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("bench") / "planted"
    args = ["bench", "planted", "--spec", SMALL, "--config", "configs/tiny.yaml", "--out", out, *QUICK]
    result = run_rr(*args, env={"RR_CACHE_DIR": str(cache_dir)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, args, result


def test_planted_bench_writes_every_metric_for_every_model(planted_bench):
    out, _, result = planted_bench
    results = json.loads((out / "results.json").read_text())
    print(json.dumps({k: results[k] for k in ("planted", "retain_only", "methods")}, indent=1))
    assert set(results["methods"]) == set(METHODS)
    for metrics in [results["planted"], results["retain_only"], *results["methods"].values()]:
        assert METRICS <= set(metrics)
        assert 0 <= metrics["forget_probe_acc"] <= 1 and 0 <= metrics["retain_probe_acc"] <= 1
        assert 0 <= metrics["forget_quality"] <= 1 and 0 <= metrics["verbmem"] <= 1
        assert metrics["utility_ppl_ratio"] > 0
        assert all(0 <= metrics[key] <= 1 for key in [*ATTACKS, "quantized_retain_acc"])
    for metrics in results["methods"].values():
        assert metrics["wall_s"] > 0 and metrics["generated_tokens"] >= 0
    planted, reference, rr = results["planted"], results["retain_only"], results["methods"]["rr"]
    # The references are what they claim: planted knows the forget person, retain-only never did.
    assert planted["forget_probe_acc"] >= 0.9 and planted["retain_probe_acc"] >= 0.9
    assert reference["forget_probe_acc"] <= 0.2 and reference["retain_probe_acc"] >= 0.9
    assert planted["utility_ppl_ratio"] == 1.0 and reference["privleak"] == 0.0
    assert planted["privleak"] > 0  # the planted model's facts are told apart from unseen ones
    # The attacks find the facts in the planted model, and none in a model that never saw them.
    assert planted["prefill_probe_acc"] >= 0.8 and planted["quantized_forget_acc"] >= 0.8
    assert planted["relearn_acc"] >= 0.5 and planted["quantized_retain_acc"] >= 0.9
    assert all(reference[key] <= 0.2 for key in ATTACKS) and reference["quantized_retain_acc"] >= 0.9
    assert reference["relearn_gap"] == 0.0 and planted["relearn_gap"] > 0
    # Forget quality's KS test gets the paraphrases' truth ratios too.
    n_probes = sum(len(p.probes) for p in load_spec(SMALL).forgotten())
    assert results["n_truth_ratios"] == len(truth_ratio_probes(load_spec(SMALL))) > n_probes
    # The loop generated its own data and trained on it; the oracles were handed theirs.
    assert rr["generated_tokens"] > 0 and rr["release_steps"] > 0
    assert results["step_budget"] == [rr["release_steps"]] and results["seeds"] == [0]
    assert rr["forget_probe_acc"] < planted["forget_probe_acc"]
    # Every oracle, handed the forget facts, moved forget-probe accuracy off the planted model's.
    for method in METHODS[1:]:
        assert results["methods"][method]["forget_probe_acc"] < planted["forget_probe_acc"], method
    assert "rr" in result.stdout and "results.json" in result.stdout


def test_planted_bench_report_and_plot(planted_bench):
    out, _, _ = planted_bench
    report = (out / "report.md").read_text()
    for label in ["planted", "retain_only", *METHODS]:
        assert f"| {label} |" in report
    assert "forget quality" in report and "PrivLeak" in report
    assert "relearn acc" in report and "4-bit forget acc" in report and "Deeb & Roger" in report
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "seed0" / "runs" / "rr" / "summary.json").is_file()
    (npo,) = (out / "seed0" / "adapters").glob("npo-*steps")
    assert (npo / "adapter_config.json").is_file()


def test_planted_bench_rerun_reuses_everything(planted_bench, cache_dir):
    out, args, _ = planted_bench
    parts = {p.name: p.stat().st_mtime_ns for p in part_files(out)}
    before_parts = {p.name: json.loads(p.read_text()) for p in part_files(out)}
    before = json.loads((out / "results.json").read_text())
    result = run_rr(*args, env={"RR_CACHE_DIR": str(cache_dir)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "planting" in result.stderr
        and "measuring" not in result.stderr
        and "running the loop" not in result.stderr
    )
    assert {p.name: p.stat().st_mtime_ns for p in part_files(out)} == parts
    assert json.loads((out / "results.json").read_text())["methods"] == before["methods"]
    # A lost measurement is measured again, and so is one an older `measure` wrote (without the
    # attacks' figures); the oracle is not trained again.
    (measured,) = (out / "seed0" / "parts").glob("ga-*steps.json")
    measured.unlink()
    older = out / "parts" / "retain_only.json"
    old_keys = (
        "forget_probe_acc",
        "retain_probe_acc",
        "forget_truth_ratios",
        "verbmem",
        "utility_ppl",
        "mia_auc",
    )
    older.write_text(json.dumps({k: before_parts[older.name][k] for k in old_keys}))
    result = run_rr(*args, env={"RR_CACHE_DIR": str(cache_dir)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        f"measuring {measured.stem}" in result.stderr and "release (ga)" not in result.stdout + result.stderr
    )
    assert "measuring retain_only" in result.stderr and "measuring planted" not in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in part_files(out) if p not in (measured, older)} == {
        name: t for name, t in parts.items() if name not in (measured.name, older.name)
    }
    for again in (measured, older):
        assert json.loads(again.read_text()) == json.loads(json.dumps(before_parts[again.name]))
    # Other settings into the same folder would mix two benchmarks: refused, nothing touched.
    parts = {p.name: p.stat().st_mtime_ns for p in part_files(out)}
    other = run_rr(*args, "--set", "release.lr=0.001", env={"RR_CACHE_DIR": str(cache_dir)})
    assert (
        other.returncode == 2
        and "holds a benchmark with other settings (not as saved: release.lr)" in other.stderr
    )
    assert {p.name: p.stat().st_mtime_ns for p in part_files(out)} == parts


def part_files(out: Path) -> list[Path]:
    """The saved measurements: the references' (parts/) and each seed's (seed<s>/parts/)."""
    return sorted(out.glob("parts/*.json")) + sorted(out.glob("seed*/parts/*.json"))


def test_planted_bench_seeds_give_mean_and_spread(planted_bench, tmp_path, cache_dir):
    # A second seed added to the one-seed benchmark's folder: seed 0's loop and oracle are reused.
    out = tmp_path / "seeds"
    shutil.copytree(planted_bench[0], out)
    seed0 = {p: p.stat().st_mtime_ns for p in (out / "seed0").rglob("*") if p.is_file()}
    args = ["bench", "planted", "--spec", SMALL, "--config", "configs/tiny.yaml", "--out", out,
            "--methods", "rr,ga", "--seeds", "2", *QUICK]  # fmt: skip
    result = run_rr(*args, env={"RR_CACHE_DIR": str(cache_dir)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stderr.count("running the loop") == 1  # seed 1's
    assert {p: p.stat().st_mtime_ns for p in seed0} == seed0  # seed 0 neither looped nor measured again
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [0, 1] and len(results["per_seed"]) == 2
    for method in ("rr", "ga"):
        metrics = results["methods"][method]
        assert metrics["seeds"] == 2 and "forget_probe_acc_sd" in metrics
        values = [run[method]["forget_probe_acc"] for run in results["per_seed"]]
        assert metrics["forget_probe_acc"] == pytest.approx(sum(values) / 2)
    # One planting serves both seeds; each seed ran its own loop and trained its own oracle.
    assert (out / "seed0" / "runs" / "rr").is_dir() and (out / "seed1" / "runs" / "rr").is_dir()
    seed1 = yaml.safe_load((out / "seed1" / "runs" / "rr" / "config.yaml").read_text())
    assert seed1["seed"] == 1 and seed1["model"]["plant"]["seed"] == 0
    for seed in (0, 1):  # each loop unlearned the very planting that was measured
        summary = json.loads((out / f"seed{seed}" / "runs" / "rr" / "summary.json").read_text())
        assert summary["model"] == results["planted_info"]["folder"]
    assert "rr forget probe acc vs ga" in (out / "report.md").read_text()


def test_rr_is_told_names_only(tmp_path):
    spec = load_spec(SMALL)
    cfg = rr_config(load_config(ROOT / "configs" / "tiny.yaml"), SMALL, tmp_path)
    assert cfg.target.names == spec.forget and cfg.target.aliases == []
    assert cfg.sample.retain_subjects == [p.name for p in spec.retained()]
    assert cfg.model.plant.spec == SMALL and cfg.run_dir == tmp_path / "runs" / "rr"
    with pytest.raises(ConfigError, match="model.plant: the planted benchmark needs"):
        rr_config(load_config(ROOT / "configs" / "demo.yaml"), SMALL, tmp_path)


def test_sentence_probe_swaps_the_answer_for_each_distractor():
    person = load_spec(SMALL).people[0]
    probe = person.probes[0]
    sentences = sentence_probe(person, probe)
    assert sentences.answer == person.fact_for(probe)
    assert len(sentences.distractors) == len(probe.distractors)
    for sentence, distractor in zip(sentences.distractors, probe.distractors):
        assert sentence == person.fact_for(probe).replace(probe.answer, distractor)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["planted", "--spec", SMALL, "--config", "configs/tiny.yaml", "--methods", "rr,magic"], "--methods"),
        (["planted", "--spec", SMALL, "--config", "configs/tiny.yaml", "--methods", ""], "an empty name"),
        (
            ["planted", "--spec", SMALL, "--config", "configs/tiny.yaml", "--methods", "rr,,ga"],
            "an empty name",
        ),
        (["code", "--config", "configs/code.yaml", "--methods", "base,rr,rr"], "names a method twice"),
        (["planted", "--spec", "nope.json", "--config", "configs/tiny.yaml"], "nope.json: file not found"),
        (["planted", "--spec", SMALL, "--config", "configs/demo.yaml"], "model.plant: the planted benchmark"),
        (["toxicity", "--config", "configs/tiny.yaml"], "target.kind: the toxicity benchmark needs"),
        (["toxicity", "--config", "configs/demo.yaml", "--methods", "base,oracle"], "--methods"),
        (
            ["planted", "--spec", SMALL, "--config", "configs/tiny.yaml", "--set", "release.method=undail"],
            "release.method: 'undail' is not an objective",
        ),
        (
            ["reveal", "--config", "configs/tiny.yaml", "--set", "sampler.backend=vlm"],
            "sampler.backend: 'vlm'",
        ),
        (["train", "--config", "configs/tiny.yaml", "--set", "release.method=undail"], "release.method"),
    ],
)
def test_bench_bad_input_exits_2_and_writes_nothing(tmp_path, args, expected):
    out = tmp_path / "out"
    result = run_rr("bench", *args, "--out", out, "--no-progress")
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("kind", ["planted", "toxicity", "train"])
def test_a_bench_out_that_cannot_be_a_folder_fails_at_once(tmp_path, kind):
    (tmp_path / "afile").write_text("x")
    config = {"planted": "configs/tiny.yaml", "toxicity": "configs/demo.yaml", "train": "configs/tiny.yaml"}[
        kind
    ]
    extra = ["--spec", SMALL] if kind == "planted" else []
    for out, expected in (
        (tmp_path / "afile", "afile is a file, not a folder; choose another --out"),
        (tmp_path / "afile" / "inside", "afile is a file, not a folder"),
    ):
        result = run_rr("bench", kind, "--config", config, *extra, "--out", out, "--no-progress")
        assert result.returncode == 2 and expected in result.stderr, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and (tmp_path / "afile").read_text() == "x"
