"""`rr bench reveal`: does the bandit find revealing instructions faster than chance?

Three ways to spend the same generation budget (the responses one iteration of the loop draws:
its reveal pulls plus its sample stage) on the same pool of seed instructions:

    neuralucb  the loop's own reveal stage (the bandit), then its sample stage
    random     every pull's instruction drawn uniformly from the pool
    best_seed  the one seed instruction whose responses were most relevant in a separate pass over
               all seeds; picked with hindsight, and the picking pass is not counted in its budget

Every method's responses go through the loop's own filter (relevance threshold, near-duplicates).
Reported: relevant samples kept per 1,000 generated tokens, their diversity (Vendi score / n),
and the forget score after one release trained on them (same retain samples, same release
settings, evaluation on the same held-out prompts or probes with the same seed). Each method
runs `repeats` times with different sampling and bandit seeds; the table gives the mean and the
spread (sample standard deviation).
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path

from pipeline.bench.methods import REVEAL_METHODS
from pipeline.bench.results import claim_out_dir, write_results
from pipeline.config import ConfigError, RunConfig, validate_config
from pipeline.files import write_json, write_jsonl
from pipeline.models import device_name
from pipeline.reveal.features import embed_texts
from pipeline.reveal.reward import vendi_score
from pipeline.run.measure import measure
from pipeline.run.preflight import check_names
from pipeline.run.prompts import run_prompts
from pipeline.run.release_stage import release
from pipeline.run.reveal_stage import reveal
from pipeline.run.sample_stage import forget_rows, release_ready, relevant, retain_rows, revealed_rows
from pipeline.run.state import RunState

METHODS = REVEAL_METHODS

COLUMNS = [
    ("kept_per_1k_tokens", "kept/1k tok", ".2f"),
    ("kept_per_1k_tokens_sd", "sd", ".2f"),
    ("ratio_to_random", "x random", ".2f"),
    ("relevant_kept", "kept", ".1f"),
    ("mean_relevance", "relevance", ".3f"),
    ("diversity", "Vendi/n", ".3f"),
    ("forget_score", "forget", ".3f"),
    ("forget_score_sd", "sd", ".3f"),
    ("utility_ppl_ratio", "ppl ratio", ".3f"),
    ("generated_tokens", "tokens", ".0f"),
]
COLUMN_NOTE = (
    "Columns: relevant samples kept per 1,000 generated tokens (mean, sd over repeats, ratio to random); "
    "relevant samples kept; mean relevance of all responses; Vendi score of the kept samples / their "
    "number; forget score after one release (mean, sd); utility perplexity / base model's; tokens generated."
)


def generation_budget(config: RunConfig, n_arms: int) -> int:
    """Responses one iteration draws for the forget side: reveal pulls plus the sample stage."""
    r, s = config.reveal, config.sample
    pulls = r.rounds * min(r.arms_per_round, n_arms) * r.samples_per_arm
    return pulls + min(s.top_instructions, n_arms) * s.samples_per_instruction


def bench_config(config: RunConfig, method: str, repeat: int, out: Path) -> RunConfig:
    data = config.model_dump(mode="json")
    data.update(name=f"{method}-{repeat}", out=str(out / "runs"))
    # One iteration: instructions rewritten now would only be pulled in the next one.
    data["reveal"]["rewrite_top"] = 0
    return validate_config(data, source=f"{config.name} (reveal benchmark, {method})")


def collect(method: str, state: RunState) -> tuple[list[dict], int, dict]:
    """The scored responses `method` draws with the budget, the tokens they cost, and what it chose."""
    cfg = state.config
    budget = generation_budget(cfg, len(state.arms))
    chosen: dict = {}
    if method == "best_seed":  # the picking pass comes first and is not counted
        best, relevance = pick_best_seed(state)
        chosen = {"best_seed": best, "seed_relevance": {k: round(v, 4) for k, v in relevance.items()}}
    before = state.sampler.generated_tokens
    if method == "neuralucb":
        top = reveal(state, 1)
        rows = revealed_rows(state, 1) + forget_rows(state, 1, top)
        chosen = {"top_instructions": top}
    elif method == "random":
        rng = random.Random(state.seed(1, "reveal"))
        per_pull = cfg.reveal.samples_per_arm
        picks = [state.arms[rng.randrange(len(state.arms))] for _ in range(budget // per_pull)]
        rows = forget_rows(state, 1, picks, n=per_pull)
    elif method == "best_seed":
        rows = forget_rows(state, 1, [chosen["best_seed"]], n=budget)
    else:
        raise ValueError(f"collect: unknown method {method!r}")
    return rows, state.sampler.generated_tokens - before, chosen


def pick_best_seed(state: RunState) -> tuple[str, dict[str, float]]:
    """The seed instruction with the most relevant responses in a pass over all of them."""
    n = state.config.reveal.samples_per_arm
    rows = forget_rows(state, 0, state.arms, n=n)  # iteration 0: seeds apart from the measured draws
    relevance = {
        arm: statistics.fmean(r["score"] for r in rows if r["instruction"] == arm) for arm in state.arms
    }
    return max(state.arms, key=lambda arm: relevance[arm]), relevance


def run_one(config: RunConfig, method: str, repeat: int, out: Path, base: dict, progress: bool, log) -> dict:
    """One method, one repeat: draw, filter, release once, measure."""
    state = RunState(bench_config(config, method, repeat, out), progress, repeat=repeat)
    files = state.files.iteration(1)
    files.root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows, tokens, chosen = collect(method, state)
    kept = relevant(state, rows)
    log(f"{method} (repeat {repeat}): {len(rows)} responses, {tokens} tokens, {len(kept)} relevant kept")
    # As the loop's sample stage hands them to the release (dpo's chosen replies and all).
    write_jsonl(files.forget, release_ready(state, kept, rows))
    write_jsonl(files.retain, retain_rows(state, 1))
    stats = release(state, 1)
    after = base if stats.get("skipped") else measure(state, files.stack, base["utility_ppl"])
    vendi = (
        vendi_score(embed_texts(state.model, state.tokenizer, [r["response"] for r in kept])) if kept else 0.0
    )
    return {
        "responses": len(rows),
        "generated_tokens": tokens,
        "relevant_kept": len(kept),
        "kept_per_1k_tokens": 1000 * len(kept) / max(tokens, 1),
        "mean_relevance": statistics.fmean(r["score"] for r in rows) if rows else 0.0,
        "vendi": vendi,
        "diversity": vendi / len(kept) if kept else 0.0,
        "forget_score": after["forget_score"],
        "utility_ppl_ratio": after["utility_ppl"] / base["utility_ppl"],
        **({"retain_probe_acc": after["retain_probe_acc"]} if "retain_probe_acc" in after else {}),
        "release_forget_samples": stats.get("n_forget", 0),
        "wall_s": round(time.perf_counter() - started, 2),
        **chosen,
    }


def summarise(runs: list[dict]) -> dict:
    """Mean over repeats of every number, and the spread of the two headline ones."""
    numbers = [k for k, v in runs[0].items() if isinstance(v, int | float) and not isinstance(v, bool)]
    summary = {k: statistics.fmean(run[k] for run in runs) for k in numbers}
    for key in ("kept_per_1k_tokens", "forget_score"):
        summary[f"{key}_sd"] = statistics.stdev(run[key] for run in runs) if len(runs) > 1 else 0.0
    summary["repeats"] = len(runs)
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in summary.items()}


def run_reveal_bench(
    config: RunConfig,
    out: Path,
    methods: list[str] = METHODS,
    repeats: int = 3,
    progress: bool = True,
    log=print,
) -> dict:
    if repeats < 1:
        raise ConfigError(f"--repeats: need at least 1, got {repeats}")
    check_names(config)
    claim_out_dir(out, config, {"repeats": repeats})
    parts = out / "parts"
    base_file = parts / "base.json"
    if base_file.is_file():
        base = json.loads(base_file.read_text())
    else:
        log("measuring the model before any release ...")
        state = RunState(bench_config(config, "base", 0, out), progress)
        base = measure(state, None, None)
        write_json(base_file, base)
    runs: dict[str, list[dict]] = {}
    for method in methods:
        for repeat in range(repeats):
            path = parts / f"{method}-{repeat}.json"
            if not path.is_file():  # a benchmark started again keeps what it measured
                write_json(path, run_one(config, method, repeat, out, base, progress, log))
            runs.setdefault(method, []).append(json.loads(path.read_text()))
    rows = {m: summarise(r) for m, r in runs.items()}
    if "random" in rows:
        for metrics in rows.values():
            metrics["ratio_to_random"] = (
                round(metrics["kept_per_1k_tokens"] / rows["random"]["kept_per_1k_tokens"], 4)
                if rows["random"]["kept_per_1k_tokens"]
                else None
            )
    results = {
        "model": config.model.path,
        "device": device_name(config.model),
        "target": config.target.model_dump(),
        "budget_responses": generation_budget(config, len(run_prompts(config)[0])),
        "repeats": repeats,
        "base": {"forget_score": base["forget_score"], "utility_ppl_ratio": 1.0},
        "methods": rows,
        "runs": runs,
    }
    write_results(
        out,
        results,
        COLUMNS,
        title=f"Reveal benchmark: {config.target.kind} target on model {config.model.path}",
        notes=_notes(config, results),
        x=("kept_per_1k_tokens", "relevant samples kept per 1,000 generated tokens"),
        y=("forget_score", "forget score after one release"),
        x_cap=None,
    )
    return results


def _notes(config: RunConfig, results: dict) -> list[str]:
    r, s = config.reveal, config.sample
    notes = [
        COLUMN_NOTE,
        f"Budget: {results['budget_responses']} responses of at most {s.generation.max_new_tokens} tokens per "
        f"method ({r.rounds} bandit rounds x {r.arms_per_round} arms x {r.samples_per_arm} responses, plus "
        f"{s.top_instructions} instructions x {s.samples_per_instruction}); mean of {results['repeats']} repeats.",
        f"Kept: relevance >= {s.relevance_threshold} and no near-duplicate (Jaccard {s.near_duplicate_jaccard}). "
        f"Reveal reward: relevance weight {r.relevance_weight}.",
        f"Forget score after one release ({config.release.method}, {config.release.steps} steps) on at most "
        f"{s.max_forget_samples} of the kept samples; base model: {results['base']['forget_score']:.3f}.",
    ]
    if "best_seed" in results["methods"]:
        notes.append(
            "best_seed is picked with hindsight from a separate pass over every seed instruction; that pass "
            "is not counted in its tokens."
        )
    return notes
