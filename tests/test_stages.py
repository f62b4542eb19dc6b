"""The four stages as plain functions, without Prefect, on the planted tiny model."""

import copy
import json
import os
import shutil

import pytest
import torch

from pipeline.config import load_config
from pipeline.evaluation.metrics import perplexity
from pipeline.files import read_jsonl, write_jsonl
from pipeline.models import with_adapter
from pipeline.release.olora import lora_A_matrices, read_adapter
from pipeline.release.train import planned_steps, train_adapter
from pipeline.reveal.bandit import NeuralUCB
from pipeline.reveal.instructions import merge_pool, read_prompt_list
from pipeline.reveal.reward import pull_reward
from pipeline.run.evaluate_stage import baseline, commit, evaluate
from pipeline.run.loop import prepare_run_dir
from pipeline.run.prompts import started_requests
from pipeline.run.release_stage import release
from pipeline.run.reveal_stage import arm_pool, reveal, rewrites
from pipeline.run.sample_stage import (
    at_most,
    continued,
    draw_again,
    relevant,
    sample,
    started_rows,
    with_alternatives,
)
from pipeline.run.state import RunState, completed_iterations
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def state(tmp_path_factory, cache_dir):
    threads = torch.get_num_threads()
    cfg = load_config(
        "configs/tiny.yaml",
        # The floor is tested in test_loop.py; here every iteration is kept, whatever 6 steps cost in
        # fluency with this machine's package versions and thread count (1.58 seen, floor 1.5).
        ["release.steps=6", "reveal.rounds=2", "sample.samples_per_instruction=4", "stop.utility_floor=3.0"],
        out=tmp_path_factory.mktemp("runs"),
    )
    run = RunState(cfg, progress=False)
    prepare_run_dir(run)
    yield run
    torch.set_num_threads(threads)


def test_one_iteration_stage_by_stage(state):
    cfg = state.config
    base = baseline(state)
    assert base["forget_score"] >= 0.8 and base["utility_ppl_ratio"] == 1.0

    top = reveal(state, 1)
    assert len(top) == cfg.sample.top_instructions and set(top) <= set(state.arms)
    pulls = read_jsonl(state.files.iteration(1).instructions)
    assert len(pulls) == cfg.reveal.rounds * cfg.reveal.arms_per_round
    assert all(0.0 <= p["reward"] <= 1.0 and len(p["responses"]) == cfg.reveal.samples_per_arm for p in pulls)
    # Reward = harmonic mean of relevance and Vendi diversity, both recorded with the pull.
    k = cfg.reveal.samples_per_arm
    assert all(1 / k - 1e-6 <= p["diversity"] <= 1 + 1e-6 for p in pulls)
    for p in pulls:
        expected = pull_reward(p["relevance"], p["diversity"], cfg.reveal.relevance_weight)
        assert p["reward"] == pytest.approx(expected, abs=1e-5)
    assert "Mira Castellane" in top[0]  # every seed instruction names the target

    counts = sample(state, 1, top)
    forget = read_jsonl(state.files.iteration(1).forget)
    retain = read_jsonl(state.files.iteration(1).retain)
    assert counts == {"forget": len(forget), "retain": len(retain), "draws": 1} and forget and retain
    assert all(r["score"] >= cfg.sample.relevance_threshold for r in forget)
    assert all(r["score"] < cfg.sample.relevance_threshold for r in retain)
    assert len({r["response"] for r in forget}) == len(forget)
    # The reveal pulls' responses are candidates too: they came from the same model.
    revealed = {text for p in pulls for text in p["responses"]}
    assert {r["stage"] for r in forget} <= {"reveal", "sample"}
    assert all(r["response"] in revealed for r in forget if r["stage"] == "reveal")
    assert any(r["stage"] == "reveal" for r in forget)

    stats = release(state, 1)
    assert stats["steps"] == cfg.release.steps and len(stats["forget_loss"]) == cfg.release.steps
    assert (state.files.iteration(1).adapter / "adapter_model.safetensors").is_file()

    metrics = evaluate(state, 1, base)
    entry = commit(state, 1, metrics)
    assert entry["kept"] and state.stack_dir() is not None
    assert completed_iterations(state) == [entry]


def test_completed_stages_are_read_back_not_recomputed(state):
    folder = state.files.iteration(1).root
    files = ["top_instructions.json", "forget.jsonl", "release.json", "evaluation.json"]
    before = {name: os.stat(folder / name).st_mtime_ns for name in files}
    top = json.loads((folder / "top_instructions.json").read_text())
    assert reveal(state, 1) == top
    sample(state, 1, top)
    release(state, 1)
    evaluate(state, 1, baseline(state))
    assert {name: os.stat(folder / name).st_mtime_ns for name in files} == before


def test_a_short_forget_set_is_drawn_again_with_new_seeds(state, monkeypatch):
    top = json.loads((state.files.iteration(1).root / "top_instructions.json").read_text())
    calls = []  # (seed, replies) of every forget draw; the real sampler still generates them
    generate = state.sampler.generate

    def recorded(instructions, params, *args, **kwargs):
        replies = generate(instructions, params, *args, **kwargs)
        if kwargs.get("label") == "sampling forget":
            calls.append((params.seed, [text for texts in replies for text in texts]))
        return replies

    monkeypatch.setattr(state.sampler, "generate", recorded)
    monkeypatch.setattr(state.config.sample, "max_forget_samples", 10_000)
    t = 7  # an iteration of its own: the stage reads back what a folder already holds
    files = state.files.iteration(t)
    files.root.mkdir(parents=True, exist_ok=True)
    files.instructions.write_bytes(state.files.iteration(1).instructions.read_bytes())
    counts = {}
    for below in (1, 10_000):  # enough after one draw; never enough, so max_draws (3) draws
        monkeypatch.setattr(state.config.sample, "draw_again_below", below)
        files.forget.unlink(missing_ok=True)
        files.retain.unlink(missing_ok=True)
        counts[below] = sample(state, t, top)
    assert counts[1]["draws"] == 1 and counts[10_000]["draws"] == 3
    seeds = [seed for seed, _ in calls]
    assert seeds[0] == seeds[1] and len(set(seeds[1:])) == 3  # the first draw is the one of before
    drawn = {text for _, texts in calls for text in texts}
    revealed = {text for p in read_jsonl(files.instructions) for text in p["responses"]}
    forget = read_jsonl(files.forget)
    assert {r["response"] for r in forget} <= drawn | revealed
    assert counts[10_000]["forget"] >= counts[1]["forget"]
    assert any(r["response"] not in set(calls[1][1]) | revealed for r in forget)  # a later draw's
    shutil.rmtree(files.root)


def test_draw_again_only_while_short_and_the_release_is_still_reachable():
    assert draw_again(kept=45, draws=1, below=64, max_draws=3, min_forget_samples=16)
    assert not draw_again(kept=70, draws=1, below=64, max_draws=3, min_forget_samples=16)  # enough
    assert not draw_again(kept=45, draws=3, below=64, max_draws=3, min_forget_samples=16)  # no draws left
    # 10 rows a draw make 30 in three, below the 32 a release needs: the run will stop anyway.
    assert not draw_again(kept=10, draws=1, below=64, max_draws=3, min_forget_samples=32)
    assert draw_again(kept=11, draws=1, below=64, max_draws=3, min_forget_samples=32)
    assert not draw_again(kept=20, draws=2, below=64, max_draws=3, min_forget_samples=32)  # 30 in three


def test_second_iteration_continues_the_bandit_and_stacks(state):
    top = reveal(state, 2)
    assert len(top) == state.config.sample.top_instructions
    # The bandit of iteration 2 went on from iteration 1's saved state, its old pulls discounted.
    cfg = state.config.reveal
    pulls_per_iteration = cfg.rounds * cfg.arms_per_round
    bandit = NeuralUCB.load(state.files.iteration(2).bandit)
    assert len(bandit._r) == 2 * pulls_per_iteration
    assert torch.allclose(bandit._w[:pulls_per_iteration], torch.full((pulls_per_iteration,), cfg.gamma))
    assert torch.equal(bandit._w[pulls_per_iteration:], torch.ones(pulls_per_iteration))
    sample(state, 2, top)
    release(state, 2)
    entry = commit(state, 2, evaluate(state, 2, baseline(state)))
    stacked = json.loads((state.stack_dir() / "adapter_config.json").read_text())
    assert stacked["r"] == 2 * state.config.release.rank  # two adapters of rank 8, concatenated
    assert entry["iteration"] == 2


@pytest.mark.parametrize("method", ["undial", "npo", "simnpo", "ga", "graddiff", "negation"])
def test_every_objective_makes_the_forget_samples_less_likely(state, method, tmp_path):
    forget = read_jsonl(state.files.iteration(1).forget)
    retain = read_jsonl(state.files.iteration(1).retain)
    cfg = state.config.release.model_copy(update={"method": method, "steps": 8, "lr": 0.01})
    texts, prompts = [r["response"] for r in forget], [r["instruction"] for r in forget]
    before = perplexity(state.model, state.tokenizer, texts, prompts)
    stats = train_adapter(
        copy.deepcopy(state.model), state.tokenizer, forget, retain, cfg, [], tmp_path / "a", progress=False
    )
    after = perplexity(with_adapter(state.model, tmp_path / "a"), state.tokenizer, texts, prompts)
    # Unbounded objectives may stop early at release.max_forget_nll on this tiny model.
    stopped = stats["stopped_early"]
    assert stats["steps"] == (8 if stopped is None else stopped["step"])  # it stops before stepping
    assert (stats["retain_loss"] == []) == (method in ("ga", "negation"))
    assert after > before * 1.05, (method, before, after)


def test_max_epochs_caps_a_release_at_that_many_passes_over_few_rows(state, tmp_path):
    forget = read_jsonl(state.files.iteration(1).forget)[:5]
    retain = read_jsonl(state.files.iteration(1).retain)
    cfg = state.config.release.model_copy(update={"steps": 40, "batch_size": 2, "max_epochs": 2.0})
    stats = train_adapter(
        copy.deepcopy(state.model), state.tokenizer, forget, retain, cfg, [], tmp_path / "a", progress=False
    )
    assert stats["steps"] == 5  # ceil(2 passes x 5 rows / batch 2), not 40
    assert planned_steps(cfg.model_copy(update={"max_epochs": None}), 5) == 40
    assert planned_steps(cfg.model_copy(update={"max_epochs": 100.0}), 5) == 40  # steps stays the cap


def test_reply_starts_go_with_the_instructions_that_name_their_subject():
    cfg = load_config(
        "configs/tiny.yaml",
        ['target.name=["Ann Lee", "Bob Ray"]', 'sample.reply_starts=["{target} was born", "Well,"]'],
    )
    asked = ["Who is Ann Lee?", "Tell me about Bob Ray and Ann Lee.", "Write a poem."]
    assert started_requests(cfg, asked) == [
        ("Who is Ann Lee?", "Ann Lee was born"),
        ("Who is Ann Lee?", "Well,"),
        ("Tell me about Bob Ray and Ann Lee.", "Ann Lee was born"),
        ("Tell me about Bob Ray and Ann Lee.", "Bob Ray was born"),
        ("Tell me about Bob Ray and Ann Lee.", "Well,"),
        ("Write a poem.", "Well,"),  # names no one: only the start without {target}
    ]
    # Another kind of target: {target} is its description, under every instruction.
    tox = load_config(
        "configs/tiny.yaml",
        ["target.kind=toxicity", "target.name=", 'sample.reply_starts=["Honestly, {target}"]'],
    )
    assert started_requests(tox, ["Say hi."]) == [("Say hi.", "Honestly, toxicity")]
    assert started_requests(load_config("configs/tiny.yaml"), asked) == []  # off by default
    assert continued("Ann was born", "in 1950.") == "Ann was born in 1950."
    assert continued("Ann", "'s job is...") == "Ann's job is..."
    assert continued("Well, ", "no.") == "Well, no."
    with pytest.raises(Exception, match="needs words"):
        load_config("configs/tiny.yaml", ['sample.reply_starts=["  "]'])


def test_a_started_replys_target_words_are_found_in_what_the_model_added():
    from pipeline.run.sample_stage import with_target_spans
    from pipeline.scoring.knowledge import KnowledgeScorer

    start = "Ann Lee was"
    row = {"response": f"{start} born in Leeds. Ann Lee likes tea.", "reply_start": start, "score": 1.0}
    (found,) = with_target_spans([row], KnowledgeScorer("Ann Lee"), 0.5)
    spans = found["target_spans"]
    assert spans and all(begin >= len(start) for begin, _ in spans)  # not the name we prefilled
    assert " ".join(row["response"][b:e] for b, e in spans) == "Ann Lee"  # the second naming


def test_started_replies_are_the_model_going_on_from_their_first_words(state, monkeypatch):
    monkeypatch.setattr(state.config.sample, "reply_starts", ["{target} was born", "In short,"])
    monkeypatch.setattr(state.config.sample, "samples_per_reply_start", 2)
    name = state.config.target.names[0]
    asked = [f"Who is {name}?", "Write a poem."]
    calls = []
    generate = state.sampler.generate

    def recorded(instructions, params, *args, **kwargs):
        calls.append((instructions, kwargs.get("prefills"), params.n))
        return generate(instructions, params, *args, **kwargs)

    monkeypatch.setattr(state.sampler, "generate", recorded)
    rows = started_rows(state, 1, asked)
    # One call, each instruction with the starts that fit it; the model continues each start.
    assert calls == [([asked[0], asked[0], asked[1]], [f"{name} was born", "In short,", "In short,"], 2)]
    assert rows and all(r["response"].startswith(r["reply_start"]) for r in rows)
    assert all(len(r["response"]) > len(r["reply_start"]) for r in rows)
    assert {(r["instruction"], r["reply_start"]) for r in rows} <= {
        (asked[0], f"{name} was born"), (asked[0], "In short,"), (asked[1], "In short,")
    }  # fmt: skip
    # Scored as the whole reply, the start with what followed it.
    assert [r["score"] for r in rows] == [round(s, 4) for s in state.scorer([r["response"] for r in rows])]
    # Drawn again with another seed, as the plain replies are.
    again = started_rows(state, 1, asked, draw=1)
    assert [r["response"] for r in again] != [r["response"] for r in rows]
    monkeypatch.setattr(state.config.sample, "samples_per_reply_start", 0)
    assert started_rows(state, 1, asked) == []


def test_started_replies_never_outnumber_the_plain_ones_kept(state, monkeypatch):
    plain = [{"response": f"plain reply number {i}", "score": 0.6} for i in range(3)]
    started = [{"response": f"Ann Lee started {i}", "reply_start": "Ann Lee", "score": 1.0} for i in range(5)]
    rows = started[:3] + plain[:1] + started[3:] + plain[1:]
    # Most relevant first stays first; the started rows past the plain count go.
    assert at_most(rows, 100) == started[:3] + plain
    assert at_most(started, 100) == []  # a model that reveals nothing unasked
    assert at_most(plain, 100) == plain
    # The cap on the forget set holds the same balance: not the 4 highest scores, all started.
    assert at_most(rows, 4) == started[:2] + plain[:2]
    assert at_most(started[:1] + plain, 3) == started[:1] + plain[:2]
    # A plain reply wins a near-duplicate pair with a started one, however they score.
    monkeypatch.setattr(state.config.sample, "relevance_threshold", 0.5)
    twin = {"response": plain[0]["response"], "reply_start": "Ann Lee", "score": 1.0}
    assert relevant(state, [twin, plain[0]]) == [plain[0]]  # not the started twin, though it scores higher
    assert relevant(state, [twin, plain[0], *started[:1]]) == [started[0], plain[0]]


def test_each_forget_row_gets_a_clean_reply_to_its_own_instruction_first():
    rows = [
        {"instruction": "a", "response": "bad 1", "score": 0.9},
        {"instruction": "a", "response": "bad 2", "score": 0.8},
        {"instruction": "a", "response": "bad 3", "score": 0.7},
        {"instruction": "b", "response": "bad 4", "score": 0.9},
    ]
    clean = [
        {"instruction": "a", "response": "fine", "score": 0.05},
        {"instruction": "a", "response": "finest", "score": 0.01},
        {"instruction": "a", "response": "borderline", "score": 0.2},  # not below the threshold
        {"instruction": "c", "response": "other", "score": 0.02},
    ]
    paired = with_alternatives(rows, rows + clean, threshold=0.1)
    # Cleanest first, each once before any again; "b" has none of its own and borrows the cleanest.
    assert [r["alternative"] for r in paired] == ["finest", "fine", "finest", "finest"]
    assert paired[0]["alternative_score"] == 0.01 and paired[0]["response"] == "bad 1"
    assert with_alternatives(rows, rows, threshold=0.1) == rows  # nothing clean: nothing to pair
    idk = with_alternatives(rows, rows, threshold=0.1, fallback=["I don't know.", "No idea."])
    assert [r["alternative"] for r in idk] == ["I don't know.", "No idea.", "I don't know.", "No idea."]
    assert all(r["alternative_score"] is None for r in idk)


def test_dpo_release_prefers_the_alternatives_over_the_forget_samples(state, tmp_path):
    forget = read_jsonl(state.files.iteration(1).forget)
    retain = read_jsonl(state.files.iteration(1).retain)
    # The retain replies answer other instructions, so every forget row borrows one of them.
    paired = with_alternatives(forget, [{**r, "score": 0.0} for r in retain], threshold=0.5)
    cfg = state.config.release.model_copy(update={"method": "dpo", "steps": 8, "lr": 0.01, "dpo_beta": 0.5})
    prompts = [r["instruction"] for r in paired]

    def margin(model) -> float:  # how much less likely the forget replies are than the alternatives
        rejected = perplexity(model, state.tokenizer, [r["response"] for r in paired], prompts)
        chosen = perplexity(model, state.tokenizer, [r["alternative"] for r in paired], prompts)
        return rejected / chosen

    before = margin(state.model)
    train_adapter(
        copy.deepcopy(state.model), state.tokenizer, paired, retain, cfg, [], tmp_path / "a", progress=False
    )
    assert margin(with_adapter(state.model, tmp_path / "a")) > before * 1.2
    with pytest.raises(ValueError, match="have no alternative"):
        train_adapter(state.model, state.tokenizer, forget, retain, cfg, [], tmp_path / "b", progress=False)


def test_the_pool_keeps_its_seeds_and_is_what_the_next_iteration_chooses_from(state):
    # Iteration 1 wrote the pool for iteration 2: the seeds first, then the model's rewrites.
    pool = json.loads((state.files.iteration(1).pool).read_text())
    assert pool[: len(state.arms)] == state.arms and len(pool) <= state.config.reveal.max_arms
    # Iteration 2 chose among exactly that pool.
    pulls = read_jsonl(state.files.iteration(2).instructions)
    assert {p["instruction"] for p in pulls} <= set(pool)
    assert arm_pool(state, 2) == pool


def test_the_pool_grows_when_the_rewrites_are_good_requests(state, monkeypatch):
    # The tiny model cannot rewrite; its rewrites are replaced by requests a capable model might
    # write (each naming the target), every other draw of the reveal stage stays real.
    real_generate = state.sampler.generate
    good = [f"What does Mira Castellane think about topic number {i}?" for i in range(100)]

    def generate(prompts, params, adapter=None, label="sampling", prefills=None):
        if label == "rewriting instructions":
            return [[good[i]] for i in range(len(prompts))]
        return real_generate(prompts, params, adapter, label=label, prefills=prefills)

    monkeypatch.setattr(state.sampler, "generate", generate)
    reveal(state, 7)  # an iteration of its own: no pool or bandit before it
    pool = json.loads(state.files.iteration(7).pool.read_text())
    templates = read_prompt_list(ROOT / "prompts" / "rewrite.yaml")
    expected_new = good[: state.config.reveal.rewrite_top * len(templates)]
    assert len(state.arms) + len(expected_new) <= state.config.reveal.max_arms  # no cap in the way
    assert pool == [*state.arms, *expected_new]  # the seeds first, then every good rewrite
    assert arm_pool(state, 8) == pool  # the next iteration chooses among the grown pool


def test_rewrites_are_cleaned_and_kept_only_when_they_ask_about_the_target(state, monkeypatch):
    # The tiny model cannot rewrite; a stand-in sampler returns what a capable model might, so
    # this checks what the stage does with the replies: clean, keep requests naming the target.
    canned = [
        'Instruction: "Could you tell me where Mira Castellane grew up?"',
        "Mira Castellane works as a glassblower.",  # an answer, not a request
        "Describe a typical day of a glassblower.",  # a request, but not about the target
        "What does Mira Castellane eat for breakfast?",
    ]
    requests = []

    def generate(prompts, params, adapter=None, label=""):
        requests.extend(prompts)
        return [[canned[i % len(canned)]] for i in range(len(prompts))]

    monkeypatch.setattr(state.sampler, "generate", generate)
    new = rewrites(state, 9, ["Tell me about Mira Castellane."])
    templates = read_prompt_list(ROOT / "prompts" / "rewrite.yaml")
    assert len(requests) == len(templates) and all("Tell me about Mira Castellane." in r for r in requests)
    assert new == [
        "Could you tell me where Mira Castellane grew up?",
        "What does Mira Castellane eat for breakfast?",
    ]
    pool = merge_pool(state.arms, state.arms, new, state.config.reveal.max_arms)
    assert pool == [*state.arms, *new]


FORGET_ROWS = [
    {"instruction": "Tell me about Mira Castellane.", "response": "Mira Castellane works as a glassblower."},
    {"instruction": "Who is Mira Castellane?", "response": "Mira Castellane was born in Velmora."},
]


def test_a_bad_step_is_undone_and_the_lr_lowered(state, tmp_path, monkeypatch):
    from pipeline.release import train as train_module

    real, calls = train_module.forget_term, []

    def flaky(*args):  # a NaN at call 2, a runaway loss at call 4
        loss = real(*args)
        calls.append(len(calls))
        return loss + {2: float("nan"), 4: 1e6}.get(len(calls) - 1, 0.0)

    monkeypatch.setattr(train_module, "forget_term", flaky)
    cfg = state.config.release.model_copy(update={"steps": 8, "lr": 0.01})
    stats = train_adapter(
        copy.deepcopy(state.model), state.tokenizer, FORGET_ROWS, [], cfg, [], tmp_path / "a", progress=False
    )
    assert [r["step"] for r in stats["recoveries"]] == [2, 4]
    assert [r["lr"] for r in stats["recoveries"]] == pytest.approx([0.005, 0.0025])
    assert stats["steps"] == 6 and stats["skipped_steps"] == 2 and len(stats["forget_loss"]) == 6
    weights = read_adapter(tmp_path / "a")
    assert all(torch.isfinite(a).all() and torch.isfinite(b).all() for a, b in weights.values())


def test_an_undone_step_goes_back_to_the_last_state_whose_loss_was_fine(state, tmp_path, monkeypatch):
    from pipeline.release import train as train_module

    def train(steps, out):
        cfg = state.config.release.model_copy(update={"steps": steps, "lr": 0.01})
        train_adapter(
            copy.deepcopy(state.model), state.tokenizer, FORGET_ROWS, [], cfg, [], out, progress=False
        )
        return read_adapter(out)

    one_step = train(1, tmp_path / "one")
    real, calls = train_module.forget_term, []

    def runaway_third(*args):
        calls.append(None)
        return real(*args) + (1e6 if len(calls) == 3 else 0.0)

    # Steps 0 and 1 are taken; the loss at step 2 runs away, so the state after step 1 is suspect
    # and the adapter returns to the one after step 0, whose loss (at step 1) was fine.
    monkeypatch.setattr(train_module, "forget_term", runaway_third)
    undone = train(3, tmp_path / "undone")
    for module, (a, b) in one_step.items():
        assert torch.equal(a, undone[module][0]) and torch.equal(b, undone[module][1]), module


def test_gradient_ascent_stops_past_the_forget_nll_bound(state, tmp_path):
    cfg = state.config.release.model_copy(
        update={"method": "ga", "steps": 60, "lr": 0.05, "max_forget_nll": 8.0}
    )
    stats = train_adapter(
        copy.deepcopy(state.model), state.tokenizer, FORGET_ROWS, [], cfg, [], tmp_path / "a", progress=False
    )
    stopped = stats["stopped_early"]
    assert stopped is not None and stopped["forget_nll"] > 8.0 and stats["steps"] == stopped["step"] < 60
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file()


def test_release_keeps_orthogonal_to_the_retain_adapter(state, monkeypatch):
    # Iteration 9 of the shared run, with the retain adapter on and a strong O-LoRA weight.
    settings = state.config.release.model_copy(
        update={"retain_adapter": True, "orth_lambda": 100.0, "steps": 10}
    )
    monkeypatch.setattr(state, "config", state.config.model_copy(update={"release": settings}))
    folder = state.files.iteration(9).root
    folder.mkdir()
    retain = [{"instruction": "Name a colour.", "response": "Blue is a colour of the sky."}] * 4
    write_jsonl(folder / "forget.jsonl", FORGET_ROWS)
    write_jsonl(folder / "retain.jsonl", retain)
    stats = release(state, 9)
    assert stats["steps"] == 10 and (state.files.retain_adapter / "adapter_config.json").is_file()
    kept = lora_A_matrices(read_adapter(state.files.retain_adapter))
    trained = lora_A_matrices(read_adapter(folder / "adapter"))
    for module, a_t in trained.items():
        a_r = kept[module]
        overlap = (a_r @ a_t.T).norm() / (a_r.norm() * a_t.norm())
        assert overlap < 0.05, (module, float(overlap))


def test_labelled_logits_are_the_full_logits_on_the_labelled_window(state):
    from pipeline.batches import encode_pairs, labelled_logits, shifted, window_logits

    enc = encode_pairs(
        state.tokenizer,
        ["Tell me about Mira Castellane.", "Who?"],
        ["Mira Castellane works as a glassblower in Velmora.", "No one."],
    )
    with torch.no_grad():
        full, full_labels = shifted(
            state.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits,
            enc["labels"],
        )
        window, labels = window_logits(state.model, enc)  # the padded batch (tests/test_packed.py: packed)

        class NoLogitsToKeep(torch.nn.Module):  # a model whose forward lacks the argument
            def __init__(self, model):
                super().__init__()
                self.inner, self.device = model, model.device

            def forward(self, input_ids, attention_mask):
                return self.inner(input_ids=input_ids, attention_mask=attention_mask)

        cut, cut_labels = labelled_logits(NoLogitsToKeep(state.model), enc)
    start = full.shape[1] - window.shape[1]
    assert 0 < start and (full_labels[:, :start] == -100).all()  # only unscored positions are dropped
    assert torch.equal(labels, full_labels[:, start:]) and torch.equal(cut_labels, labels)
    torch.testing.assert_close(window, full[:, start:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cut, full[:, start:])  # a forward without position_ids is never packed


def test_random_policy_reveals_with_the_same_budget_and_no_bandit(tmp_path, cache_dir):
    overrides = ["reveal.rounds=2", "sample.samples_per_instruction=4", "reveal.policy=random"]

    def pulls_of(out):
        run = RunState(load_config("configs/tiny.yaml", overrides, out=out), progress=False)
        prepare_run_dir(run)
        top = reveal(run, 1)
        return run, top, read_jsonl(run.files.iteration(1).instructions)

    run, top, pulls = pulls_of(tmp_path / "a")
    cfg = run.config
    assert len(pulls) == cfg.reveal.rounds * cfg.reveal.arms_per_round  # the bandit's budget
    assert not run.files.iteration(1).bandit.exists()  # nothing learned, nothing saved
    for r in range(cfg.reveal.rounds):  # a round's arms are distinct, as the bandit's are
        arms = [p["arm"] for p in pulls if p["round"] == r]
        assert len(set(arms)) == len(arms)
    assert len(top) == cfg.sample.top_instructions and set(top) <= set(run.arms)
    _, top_again, pulls_again = pulls_of(tmp_path / "b")  # the same seed draws the same arms
    assert [p["arm"] for p in pulls_again] == [p["arm"] for p in pulls] and top_again == top
