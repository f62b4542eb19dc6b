"""The loop's paths on the planted tiny model, without Prefect: each run is real and small.

A dropped adapter (it broke the utility floor) is not stacked; a release with no forget samples is
skipped; `stop.min_iterations` holds a convergence rule back; O-LoRA keeps iteration 2's adapter
orthogonal to iteration 1's inside the loop. Where a path needs a model made worse on purpose or a
stage that finds nothing, the stage is wrapped here and passed to `run_loop`, as the flow passes
its Prefect tasks.
"""

import json
import time

import pytest
import torch

from pipeline.config import load_config
from pipeline.evaluation.metrics import repetition
from pipeline.files import read_jsonl, write_jsonl
from pipeline.release.olora import lora_A_matrices, read_adapter, stack_adapters, write_adapter
from pipeline.run.loop import run_loop
from pipeline.run.release_stage import release
from pipeline.run.report import report_markdown
from pipeline.run.sample_stage import sample
from pipeline.run.state import RunState, kept_iterations
from tests.conftest import QUICK

pytestmark = pytest.mark.usefixtures("one_thread")


def run(tmp_path, name: str, overrides: list[str], **stages) -> tuple[RunState, dict]:
    config = load_config("configs/tiny.yaml", [*QUICK, *overrides], out=tmp_path, name=name)
    state = RunState(config, progress=False)
    return state, run_loop(state, log=lambda *_: None, **stages)


def test_an_adapter_that_breaks_the_utility_floor_is_dropped_not_stacked(tmp_path, cache_dir):
    def release_then_break(state, t):
        stats = release(state, t)
        if t == 2:  # made worse on purpose: adapter 2 becomes noise of a large norm
            files = state.files.iteration(2)
            noisy = {m: (a, torch.randn_like(b)) for m, (a, b) in read_adapter(files.adapter).items()}
            write_adapter(noisy, files.adapter, state.model_info["name_or_path"])
            stacked = stack_adapters([read_adapter(state.files.iteration(1).adapter), noisy])
            write_adapter(stacked, files.stack, state.model_info["name_or_path"])
        return stats

    state, summary = run(tmp_path, "floor", ["stop.max_iterations=3"], release=release_then_break)
    assert summary["stop_reason"] == "utility_floor_broken" and summary["iterations"] == 2
    first, second = summary["history"]
    assert first["kept"] and not second["kept"]
    assert second["utility_ppl_ratio"] > state.config.stop.utility_floor
    # The run's adapter is still iteration 1's stack, byte for byte; the final figures are its.
    run_adapter = state.files.adapter / "adapter_model.safetensors"
    kept_stack = state.files.iteration(1).stack / "adapter_model.safetensors"
    assert run_adapter.read_bytes() == kept_stack.read_bytes()
    assert summary["final"]["forget_score"] == first["forget_score"]
    # What a next iteration would start from, and be orthogonal to: the kept stack only.
    assert state.stack_dir() == state.files.iteration(1).stack and kept_iterations(state) == [1]
    assert json.loads((state.files.adapter / "adapter_config.json").read_text())["r"] == 8


def test_an_adapter_that_brings_the_forgotten_back_is_dropped_when_asked(tmp_path, cache_dir):
    def release_then_undo(state, t):
        stats = release(state, t)
        if t == 2:  # made worse on purpose: adapter 2 is adapter 1 negated, so the stack is the base
            files = state.files.iteration(2)
            first = read_adapter(state.files.iteration(1).adapter)
            undo = {m: (a, -b) for m, (a, b) in first.items()}
            write_adapter(undo, files.adapter, state.model_info["name_or_path"])
            write_adapter(stack_adapters([first, undo]), files.stack, state.model_info["name_or_path"])
        return stats

    overrides = [
        "stop.max_iterations=3",
        "stop.min_iterations=3",
        "stop.max_forget_rise=0.0",
        # configs/tiny.yaml's steps: iteration 1 revealed 1-4 rows here, on which 30 steps
        # forgot nothing in one draw of the sampler; 60 forgot on seeds 0-2, both CPU kernel sets.
        "release.steps=60",
    ]
    state, summary = run(tmp_path, "rise", overrides, release=release_then_undo)
    first, second = summary["history"]
    assert first["forget_score"] < summary["baseline"]["forget_score"]  # iteration 1 forgot something
    assert summary["stop_reason"] == "forget_score_rose" and summary["iterations"] == 2
    assert first["kept"] and not second["kept"]
    assert second["forget_score"] > first["forget_score"]
    assert summary["final"]["forget_score"] == first["forget_score"]
    assert kept_iterations(state) == [1]


def test_a_release_without_forget_samples_is_skipped(tmp_path, cache_dir):
    def sample_nothing_at_2(state, t, instructions):
        if t != 2:
            return sample(state, t, instructions)
        files = state.files.iteration(2)  # the model revealed nothing above the threshold
        write_jsonl(files.forget, [])
        write_jsonl(files.retain, [])
        return {"forget": 0, "retain": 0}

    state, summary = run(tmp_path, "empty", ["stop.max_iterations=3"], sample=sample_nothing_at_2)
    assert summary["stop_reason"] == "no_forget_samples" and summary["iterations"] == 2
    files = state.files.iteration(2)
    assert json.loads(files.release.read_text()) == {
        "skipped": True,
        "reason": "no forget samples above the relevance threshold",
    }
    assert not files.adapter.exists() and not files.stack.exists()
    assert [h["kept"] for h in summary["history"]] == [True, False]
    assert summary["history"][1]["n_forget_samples"] == 0
    run_adapter = state.files.adapter / "adapter_model.safetensors"
    assert (
        run_adapter.read_bytes()
        == (state.files.iteration(1).stack / "adapter_model.safetensors").read_bytes()
    )


def test_a_release_on_nothing_the_base_model_backs_is_skipped_after_the_first(tmp_path, cache_dir):
    # Iteration 1 samples from the base model itself, so it keeps every token; from iteration 2 no
    # token can reach a base probability a million times the released model's.
    overrides = ["stop.max_iterations=3", "release.min_base_ratio=1000000"]
    state, summary = run(tmp_path, "backed", overrides)
    first = json.loads(state.files.iteration(1).release.read_text())
    assert first["base_backed"]["rows"] == first["base_backed"]["of_rows"] == first["n_forget"]
    assert first["base_backed"]["tokens"] == first["base_backed"]["of_tokens"] > 0
    second = json.loads(state.files.iteration(2).release.read_text())
    assert second["skipped"] and "release.min_base_ratio" in second["reason"]
    assert summary["stop_reason"] == "no_forget_samples" and summary["iterations"] == 2
    assert kept_iterations(state) == [1] and not state.files.iteration(2).adapter.exists()


def test_a_release_on_fewer_rows_than_min_forget_samples_is_skipped(tmp_path, cache_dir):
    state, summary = run(tmp_path, "few", ["stop.max_iterations=2", "release.min_forget_samples=10000"])
    first = json.loads(state.files.iteration(1).release.read_text())
    assert first["skipped"] and "fewer than release.min_forget_samples (10000)" in first["reason"]
    assert summary["stop_reason"] == "no_forget_samples" and summary["iterations"] == 1
    assert kept_iterations(state) == [] and not state.files.iteration(1).adapter.exists()
    # Nothing was trained, so nothing is measured again: the figures are the baseline's.
    evaluation = json.loads(state.files.iteration(1).evaluation.read_text())
    base = json.loads(state.files.baseline.read_text())
    assert evaluation["measured_in"] == 0 and evaluation["seconds"] == 0.0
    assert evaluation["forget_score"] == base["forget_score"] == summary["history"][0]["forget_score"]


@pytest.mark.parametrize("min_iterations", [1, 2])
def test_min_iterations_holds_a_met_threshold_back(tmp_path, cache_dir, min_iterations):
    # A threshold every model meets (the forget score is at most 1): only min_iterations decides.
    overrides = [
        "stop.forget_threshold=1.0",
        "stop.max_iterations=3",
        f"stop.min_iterations={min_iterations}",
    ]
    _, summary = run(tmp_path, f"min{min_iterations}", overrides)
    assert summary["stop_reason"] == "forget_threshold_reached"
    assert summary["iterations"] == min_iterations


def overlap(a_earlier: torch.Tensor, a_later: torch.Tensor) -> float:
    """‖A_1 A_2ᵀ‖_F / (‖A_1‖_F ‖A_2‖_F): 0 when the two adapters read disjoint input subspaces."""
    return float((a_earlier @ a_later.T).norm() / (a_earlier.norm() * a_later.norm()))


def test_olora_keeps_iteration_2_orthogonal_to_iteration_1_inside_the_loop(tmp_path, cache_dir):
    def mean_overlap(orth_lambda: float) -> float:
        settings = [
            "stop.max_iterations=2",
            "stop.min_iterations=2",
            "release.steps=20",
            f"release.orth_lambda={orth_lambda}",
        ]
        state, summary = run(tmp_path, f"orth{orth_lambda:g}", settings)
        assert summary["iterations"] == 2 and kept_iterations(state) == [1, 2]
        first = lora_A_matrices(read_adapter(state.files.iteration(1).adapter))
        second = lora_A_matrices(read_adapter(state.files.iteration(2).adapter))
        return sum(overlap(first[m], second[m]) for m in first) / len(first)

    with_penalty, without = mean_overlap(100.0), mean_overlap(0.0)
    print(
        f"mean overlap of iteration 2's A with iteration 1's: {with_penalty:.4f} with O-LoRA, {without:.4f} without"
    )
    assert with_penalty < 0.02 and without > 3 * with_penalty


def test_a_signal_swallowed_inside_a_stage_still_stops_the_loop_before_the_next(
    tmp_path, cache_dir, monkeypatch
):
    # Ctrl-C raised where something swallows it (once seen inside Prefect's task engine) is recorded
    # by rr's handler too: the loop stops at the next stage instead of running to its end.
    from pipeline import interrupts
    from pipeline.run.reveal_stage import reveal

    monkeypatch.setattr(interrupts, "_requested", None)
    sampled = []

    def reveal_then_swallowed_signal(state, t):
        instructions = reveal(state, t)
        interrupts.request_stop(KeyboardInterrupt)  # what rr's SIGINT handler does, its raise lost
        return instructions

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "swallowed", [], reveal=reveal_then_swallowed_signal,
            sample=lambda *args: sampled.append(args))  # fmt: skip
    assert sampled == [] and not (tmp_path / "swallowed" / "iter_1" / "metrics.json").exists()


def test_dpo_pairs_each_forget_sample_with_a_clean_reply_inside_the_loop(tmp_path, cache_dir):
    state, summary = run(
        tmp_path, "dpo", ["stop.max_iterations=1", "release.method=dpo", "sample.alternative_threshold=0.3"]
    )
    # The tiny planted model names the person in (nearly) every reply: the fallback answers stand
    # in when no reply of the iteration was clean.
    forget = read_jsonl(state.files.iteration(1).forget)
    fallback = state.config.sample.fallback_alternatives
    assert forget and all(r["score"] >= 0.3 for r in forget)
    for row in forget:
        score = row["alternative_score"]
        assert (row["alternative"] in fallback) if score is None else (score < 0.3 and row["alternative"])
    stats = json.loads(state.files.iteration(1).release.read_text())
    assert not stats.get("skipped") and stats["steps"] == 4 and summary["history"][0]["kept"]


def test_each_stage_s_seconds_are_in_the_summary_and_the_report(tmp_path, cache_dir):
    def slow_release(state, t):  # made slower on purpose: its seconds must show it, and nothing else's
        time.sleep(0.5)
        return release(state, t)

    overrides = ["stop.forget_threshold=1.0", "stop.min_iterations=1", "stop.max_iterations=1"]
    state, summary = run(tmp_path, "seconds", overrides, release=slow_release)
    (entry,) = summary["history"]
    assert set(entry["seconds"]) == {"reveal", "sample", "release", "evaluate"}
    assert entry["seconds"]["release"] >= 0.5 and all(v > 0 for v in entry["seconds"].values())
    seconds = summary["seconds"]
    assert seconds["release"] == entry["seconds"]["release"]
    assert seconds["baseline"] == summary["baseline"]["seconds"] > 0
    assert seconds["model_load"] == state.model_info["load_seconds"]
    assert seconds["total"] == pytest.approx(sum(v for k, v in seconds.items() if k != "total"), abs=0.05)
    report = state.files.report.read_text()
    assert "Seconds per stage" in report and "| iteration 1 |" in report
    # Every measurement says how repetitive the replies to the forget prompts are.
    for measured in (summary["baseline"], summary["final"], entry):
        assert 0.0 <= measured["repetition"] <= 1.0
    assert "Repetition in the replies to the forget prompts" in report


def test_the_report_warns_when_the_final_model_repeats_itself_far_more_than_the_base(tmp_path, cache_dir):
    overrides = ["stop.forget_threshold=1.0", "stop.min_iterations=1", "stop.max_iterations=1"]
    _, summary = run(tmp_path, "collapse", overrides)
    level = {**summary, "final": {**summary["final"], "repetition": summary["baseline"]["repetition"]}}
    assert "**Warning:**" not in report_markdown(level)
    collapsed = {
        **summary,
        "final": {**summary["final"], "repetition": summary["baseline"]["repetition"] + 0.5},
    }
    assert "may be a collapse" in report_markdown(collapsed)
    older = {**summary, "baseline": {k: v for k, v in summary["baseline"].items() if k != "repetition"}}
    assert "Repetition" not in report_markdown(older)  # a run measured before the figure existed


@pytest.mark.parametrize(
    "texts, expected",
    [
        (["someone someone someone someone someone"], 0.75),  # 4 bigrams, 1 unique
        (["the cat sat on the mat"], 0.0),
        (["a b a b", "x y z"], (1 - 2 / 3) / 2),  # [ab, ba, ab] and [xy, yz]
        (["one", ""], 0.0),  # no bigram anywhere: nothing repeats
    ],
)
def test_repetition_is_the_share_of_repeated_word_bigrams(texts, expected):
    assert repetition(texts) == pytest.approx(expected)
