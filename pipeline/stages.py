"""The four stages of one iteration, and the run directory they read and write.

Each stage is a plain function of the run state and the iteration number. It writes its output
under `runs/<name>/iter_<t>/` atomically and, when that output is already there (a resumed run),
reads it back instead of computing it again. Randomness is seeded per (run seed, iteration,
stage), so a resumed run makes the same choices as an uninterrupted one.

    state = open_run(config)
    baseline(state)
    for t in 1..: reveal -> sample -> release -> evaluate -> commit
    finish(state, reason)

`flows/unlearn.py` wraps exactly these calls as Prefect tasks.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from pipeline.base_run import base_chain, model_origin
from pipeline.bench.spec import load_spec
from pipeline.config import RunConfig
from pipeline.evaluation import convergence
from pipeline.evaluation.metrics import answer_rate, perplexity
from pipeline.files import atomic_dir, read_jsonl, read_lines, write_json, write_jsonl
from pipeline.models import load_model, with_adapter
from pipeline.preflight import existing_run
from pipeline.release.olora import lora_A_matrices, read_adapter, stack_adapters, write_adapter
from pipeline.release.train import train_adapter, train_retain_adapter
from pipeline.report import write_report
from pipeline.reveal.bandit import NeuralUCB
from pipeline.reveal.features import embed_texts
from pipeline.reveal.instructions import clean_rewrite, dedupe, fill, merge_pool, read_prompt_list
from pipeline.reveal.reward import diversity, pull_reward
from pipeline.runlock import run_lock
from pipeline.sampling import make_sampler
from pipeline.sampling.base import GREEDY, SamplingParams
from pipeline.sampling.dedup import drop_near_duplicates
from pipeline.sampling.hf import HFSampler
from pipeline.scoring import make_scorer

STAGE_SEEDS = {"reveal": 1, "sample": 2, "retain": 3, "release": 4, "evaluate": 5, "rewrite": 6}


# --------------------------------------------------------------------------- files


def iter_dir(state: RunState, t: int) -> Path:
    return state.run_dir / f"iter_{t}"


# --------------------------------------------------------------------------- the run


def run_prompts(config: RunConfig) -> tuple[list[str], list[str], list[str]]:
    """(reveal arms, retain instructions, held-out eval prompts) of a run, from its prompt files.

    Templates are filled with the target's description, or with each name when several people
    are forgotten at once (a request about two people at a time reads oddly).
    """
    target = config.target
    templates = read_prompt_list(config.reveal_prompts_path())
    subjects = target.names if target.kind == "knowledge" and len(target.names) > 1 else [target.description]
    arms = dedupe([i for subject in subjects for i in fill(templates, subject)])
    # Retain instructions: neutral ones, plus the reveal templates asked about what must be kept.
    kept_subjects = [fill(templates, subject) for subject in config.sample.retain_subjects]
    retain = dedupe(
        read_prompt_list(config.resolve(config.sample.retain_prompts))
        + [i for group in kept_subjects for i in group]
    )
    eval_templates = read_prompt_list(config.eval_prompts_path(), "prompts")
    evals = dedupe([p for subject in subjects for p in fill(eval_templates, subject)])
    return arms, retain, evals


def prompt_texts(config: RunConfig) -> tuple[str, ...]:
    """Every prompt a run sends: a tiny model's tokenizer is trained on them too."""
    arms, retain, evals = run_prompts(config)
    return tuple(arms + retain + evals)


class RunState:
    """What stays loaded for a whole run: config, model, sampler, scorer, instruction pool.

    A plain class on purpose (not a dataclass): Prefect walks dataclass task arguments, and
    there is nothing in here for it to look at.
    """

    def __init__(self, config: RunConfig, progress: bool = True, repeat: int = 0) -> None:
        self.config = config
        self.progress = progress
        self.repeat = repeat  # a benchmark's repeat: other reveal and sampling draws, same evaluation
        self.run_dir = config.run_dir
        self.spec = load_spec(config.model.plant.spec) if config.model.plant else None
        self.arms, self.retain_instructions, self.eval_prompts = run_prompts(config)
        # A run on top of earlier ones (`base_run`) starts from the nearest one's stacked adapter.
        self.base_runs = base_chain(config)
        self.base_adapter = config.base_run / "adapter" if config.base_run else None
        self.model, self.tokenizer, self.model_info = load_run_model(config, progress)
        # Scoring (perplexity, likelihoods) always runs on the transformers model; generation on
        # the configured sampler, which is this one for `sampler.backend: hf`.
        self.hf_sampler = HFSampler(self.model, self.tokenizer, config.sample.generation.batch_size, progress)
        self.sampler = (
            self.hf_sampler
            if config.sampler.backend == "hf"
            else make_sampler(config, self.model, self.tokenizer, self.model_info["name_or_path"], progress)
        )
        self.scorer = make_scorer(
            config.target,
            embed=lambda texts: embed_texts(self.model, self.tokenizer, texts),
            neutral=read_prompt_list(config.resolve(config.sample.retain_prompts)),
        )
        self.forget_probes, self.retain_probes = probes(config, self.spec)
        self.retain_texts, self.retain_text_prompts = self._retain_text()

    def _retain_text(self):
        """Reference text for utility: the other people's facts as answers to their probes (planted),
        else the lines of `evaluate.retain_text`."""
        if self.retain_probes:
            pairs = [
                (probe.question, person.fact_for(probe))
                for person in other_people(self.config, self.spec)
                for probe in person.probes
            ]
            return [fact for _, fact in pairs], [question for question, _ in pairs]
        path = self.config.resolve(self.config.evaluate.retain_text)
        return read_lines(path, "evaluate.retain_text"), None

    def model_with(self, adapter: Path | None):
        """The transformers model with `adapter` merged in (cached while the adapter is unchanged)."""
        return self.hf_sampler.model_for(adapter)

    def stack_dir(self) -> Path | None:
        """The stacked adapter of all kept iterations so far; before the first, the base run's, or None."""
        path = self.run_dir / "adapter"
        return path if (path / "adapter_config.json").is_file() else self.base_adapter

    def seed(self, t: int, stage: str) -> int:
        return (self.config.seed + 7919 * self.repeat) * 1_000_003 + t * 101 + STAGE_SEEDS[stage]


def load_run_model(config: RunConfig, progress: bool = True):
    """(model, tokenizer, info) of a run: loaded as the first run of its `base_run` chain loaded it."""
    origin = model_origin(config)
    return load_model(
        config.model,
        extra_texts=prompt_texts(origin),
        seed=origin.seed,
        progress=progress,
    )


def other_people(config: RunConfig, spec) -> list:
    forget = {name.lower() for name in config.target.names}
    return [p for p in spec.planted() if p.name.lower() not in forget]


def probes(config: RunConfig, spec) -> tuple[list, list]:
    """Planted people: the forget people's probes measure forgetting, the others' retention."""
    if spec is None or config.target.kind != "knowledge":
        return [], []
    forget = [probe for name in config.target.names for probe in spec.person(name).probes]
    return forget, [probe for person in other_people(config, spec) for probe in person.probes]


class EarlierTarget:
    """What measures an earlier run's target: its held-out prompts or probes, and its scorer."""

    def __init__(self, config: RunConfig, state: RunState) -> None:
        self.config = config
        spec = load_spec(config.model.plant.spec) if config.model.plant else None
        self.forget_probes, self.retain_probes = probes(config, spec)
        self.eval_prompts = run_prompts(config)[2]
        self.scorer = make_scorer(
            config.target,
            embed=lambda texts: embed_texts(state.model, state.tokenizer, texts),
            neutral=read_prompt_list(config.resolve(config.sample.retain_prompts)),
        )


def prepare_run_dir(config: RunConfig) -> dict | None:
    """Create or re-open runs/<name>. Returns the finished summary if the run already ended.

    Called after the config and model path are validated, so bad input leaves nothing behind.
    """
    finished = existing_run(config)
    if finished is None and not (config.run_dir / "config.yaml").is_file():
        config.run_dir.mkdir(parents=True, exist_ok=True)
        (config.run_dir / "config.yaml").write_text(config.to_yaml())
    return finished


def completed_iterations(state: RunState) -> list[dict]:
    """Metrics of the iterations that finished, in order (the resume point is after the last)."""
    done, t = [], 1
    while (iter_dir(state, t) / "metrics.json").is_file():
        done.append(json.loads((iter_dir(state, t) / "metrics.json").read_text()))
        t += 1
    return done


# --------------------------------------------------------------------------- 0 baseline


def baseline(state: RunState) -> dict:
    path = state.run_dir / "baseline.json"
    if path.is_file():
        return json.loads(path.read_text())
    metrics = measure(state, adapter=state.base_adapter, base_ppl=None)
    write_json(path, metrics)
    return metrics


# --------------------------------------------------------------------------- 1 reveal


def reveal(state: RunState, t: int) -> list[str]:
    """Pull instructions with NeuralUCB; return the best ones by the bandit's mean estimate."""
    cfg = state.config.reveal
    out = iter_dir(state, t) / "instructions.jsonl"
    top_file = iter_dir(state, t) / "top_instructions.json"
    if out.is_file() and top_file.is_file():
        return json.loads(top_file.read_text())
    arms = arm_pool(state, t)
    features = embed_texts(state.model, state.tokenizer, arms)
    saved = iter_dir(state, t - 1) / "bandit"
    if (saved / "bandit.json").is_file():
        # The bandit goes on from where iteration t-1 left it; its rewards were measured on the
        # model before the last release, so they count for less (`reveal.gamma`).
        bandit = NeuralUCB.load(saved)
        bandit.discount(cfg.gamma)
    else:
        bandit = NeuralUCB(
            features.shape[1],
            hidden=cfg.hidden,
            nu=cfg.nu,
            lam=cfg.lam,
            seed=state.seed(t, "reveal"),
            diagonal=cfg.diagonal,
        )
    pulls = []
    params = SamplingParams(
        n=cfg.samples_per_arm,
        max_new_tokens=state.config.sample.generation.max_new_tokens,
        temperature=state.config.sample.generation.temperature,
        top_p=state.config.sample.generation.top_p,
    )
    for round_ in range(cfg.rounds):
        chosen = bandit.select(features, k=min(cfg.arms_per_round, len(arms)))
        round_params = replace(params, seed=state.seed(t, "reveal") + round_)
        responses = state.sampler.generate(
            [arms[i] for i in chosen],
            round_params,
            state.stack_dir(),
            label=f"reveal {round_ + 1}/{cfg.rounds}",
        )
        rewards = []
        for arm, texts in zip(chosen, responses):
            relevance = statistics.fmean(state.scorer(texts))
            spread = diversity(embed_texts(state.model, state.tokenizer, texts))
            reward = pull_reward(relevance, spread, cfg.relevance_weight)
            rewards.append(reward)
            pulls.append(
                {
                    "iteration": t,
                    "round": round_,
                    "arm": arm,
                    "instruction": arms[arm],
                    "reward": round(reward, 6),
                    "relevance": round(relevance, 6),
                    "diversity": round(spread, 6),
                    "responses": texts,
                }
            )
        bandit.update(features[chosen], torch.tensor(rewards, dtype=torch.float32))
    ranked = [arms[i] for i in torch.argsort(bandit.predict(features), descending=True).tolist()]
    top = ranked[: state.config.sample.top_instructions]
    grown = merge_pool(state.arms, arms, rewrites(state, t, ranked[: cfg.rewrite_top]), cfg.max_arms)
    write_json(iter_dir(state, t) / "pool.json", grown)
    with atomic_dir(iter_dir(state, t) / "bandit") as tmp:
        bandit.save(tmp)
    write_jsonl(out, pulls)
    write_json(top_file, top)
    return top


def arm_pool(state: RunState, t: int) -> list[str]:
    """The instructions the bandit chooses from in iteration t: the seeds, plus what the model
    rewrote in earlier iterations (saved by iteration t-1)."""
    saved = iter_dir(state, t - 1) / "pool.json"
    return json.loads(saved.read_text()) if saved.is_file() else list(state.arms)


def rewrites(state: RunState, t: int, instructions: list[str]) -> list[str]:
    """The current model's rewrites of `instructions`, one per rewrite prompt, cleaned."""
    cfg = state.config
    if not instructions or cfg.reveal.rewrite_top == 0:
        return []
    templates = read_prompt_list(cfg.resolve(cfg.reveal.rewrite_prompts))
    requests = [tpl.replace("{instruction}", ins) for ins in instructions for tpl in templates]
    params = SamplingParams(
        n=1,
        max_new_tokens=cfg.sample.generation.max_new_tokens,
        temperature=cfg.sample.generation.temperature,
        top_p=cfg.sample.generation.top_p,
        seed=state.seed(t, "rewrite"),
    )
    replies = state.sampler.generate(requests, params, state.stack_dir(), label="rewriting instructions")
    cleaned = dedupe([text for texts in replies if (text := clean_rewrite(texts[0]))])
    if cfg.target.kind == "knowledge":  # a request that no longer names the target reveals nothing of it
        cleaned = [text for text, score in zip(cleaned, state.scorer(cleaned)) if score >= 0.5]
    return cleaned


# --------------------------------------------------------------------------- 2 sample


def sample(state: RunState, t: int, instructions: list[str]) -> dict:
    """Draw forget samples under the best instructions and retain samples under neutral ones.

    The reveal stage's own responses join the forget candidates: they came from the same model,
    and throwing them away would waste a third or more of the generation budget.
    """
    cfg = state.config.sample
    forget_file, retain_file = iter_dir(state, t) / "forget.jsonl", iter_dir(state, t) / "retain.jsonl"
    if forget_file.is_file() and retain_file.is_file():
        return {"forget": len(read_jsonl(forget_file)), "retain": len(read_jsonl(retain_file))}
    # The best instructions' responses come first: at equal scores they win the near-duplicate
    # filter and the cap over responses to the arms the bandit was still exploring.
    candidates = forget_rows(state, t, instructions) + revealed_rows(state, t)
    forget = relevant(state, candidates)[: cfg.max_forget_samples]
    retain = retain_rows(state, t)
    write_jsonl(retain_file, retain)
    write_jsonl(forget_file, forget)
    return {"forget": len(forget), "retain": len(retain)}


def forget_rows(state: RunState, t: int, instructions: list[str], n: int | None = None) -> list[dict]:
    """`n` (default `sample.samples_per_instruction`) scored responses to each instruction."""
    cfg = state.config.sample
    gen = cfg.generation
    params = SamplingParams(
        n=n or cfg.samples_per_instruction,
        max_new_tokens=gen.max_new_tokens,
        temperature=gen.temperature,
        top_p=gen.top_p,
        seed=state.seed(t, "sample"),
    )
    return _scored_rows(state, t, instructions, params, "sampling forget", stage="sample")


def revealed_rows(state: RunState, t: int) -> list[dict]:
    """The responses the reveal stage drew in iteration t, scored one by one."""
    pulls = read_jsonl(iter_dir(state, t) / "instructions.jsonl")
    return _scored(state, [
        {"instruction": p["instruction"], "response": text, "iteration": t, "stage": "reveal"}
        for p in pulls
        for text in p["responses"]
        if text.strip()
    ])  # fmt: skip


def relevant(state: RunState, rows: list[dict]) -> list[dict]:
    """Rows at or above the relevance threshold, most relevant first, near-duplicates dropped."""
    cfg = state.config.sample
    kept = sorted((r for r in rows if r["score"] >= cfg.relevance_threshold), key=lambda r: -r["score"])
    return drop_near_duplicates(kept, cfg.near_duplicate_jaccard)


def retain_rows(state: RunState, t: int) -> list[dict]:
    """Responses to the neutral instructions that score below the relevance threshold."""
    cfg = state.config.sample
    if cfg.retain_samples_per_instruction == 0:
        return []
    params = SamplingParams(
        n=cfg.retain_samples_per_instruction,
        max_new_tokens=cfg.generation.max_new_tokens,
        temperature=cfg.generation.temperature,
        top_p=cfg.generation.top_p,
        seed=state.seed(t, "retain"),
    )
    rows = _scored_rows(state, t, state.retain_instructions, params, "sampling retain", stage="retain")
    rows = [r for r in rows if r["score"] < cfg.relevance_threshold]
    return drop_near_duplicates(rows, cfg.near_duplicate_jaccard)[: cfg.max_retain_samples]


def _scored_rows(
    state: RunState, t: int, instructions: list[str], params: SamplingParams, label: str, stage: str
) -> list[dict]:
    responses = state.sampler.generate(instructions, params, state.stack_dir(), label=label)
    return _scored(state, [
        {"instruction": ins, "response": text, "iteration": t, "stage": stage}
        for ins, texts in zip(instructions, responses)
        for text in texts
        if text.strip()
    ])  # fmt: skip


def _scored(state: RunState, rows: list[dict]) -> list[dict]:
    """`rows` with the target scorer's score of each response."""
    for row, score in zip(rows, state.scorer([r["response"] for r in rows])):
        row["score"] = round(score, 4)
    return rows


# --------------------------------------------------------------------------- 3 release


def release(state: RunState, t: int) -> dict:
    """Train adapter t orthogonal to the kept earlier ones; write iter_t/adapter and iter_t/stack."""
    adapter_dir, stack_out = iter_dir(state, t) / "adapter", iter_dir(state, t) / "stack"
    stats_file = iter_dir(state, t) / "release.json"
    if stats_file.is_file() and (stack_out / "adapter_config.json").is_file():
        return json.loads(stats_file.read_text())
    forget = read_jsonl(iter_dir(state, t) / "forget.jsonl")
    retain = read_jsonl(iter_dir(state, t) / "retain.jsonl")
    if not forget:
        stats = {"skipped": True, "reason": "no forget samples above the relevance threshold"}
        write_json(stats_file, stats)
        return stats
    current = state.stack_dir()
    previous_dirs = [iter_dir(state, s) / "adapter" for s in kept_iterations(state)]
    if state.base_adapter is not None:  # new adapters stay orthogonal to the earlier runs' too
        previous_dirs.insert(0, state.base_adapter)
    previous = [lora_A_matrices(read_adapter(d)) for d in previous_dirs]
    if state.config.release.retain_adapter and (kept := retain_adapter(state, retain)) is not None:
        previous.append(lora_A_matrices(read_adapter(kept)))
    model_t = with_adapter(state.model, current) if current else state.model
    stats = train_adapter(
        model_t,
        state.tokenizer,
        forget,
        retain,
        state.config.release,
        previous,
        adapter_dir,
        seed=state.seed(t, "release"),
        progress=state.progress,
    )
    del model_t
    stacked = stack_adapters([read_adapter(d) for d in [*previous_dirs, adapter_dir]])
    write_adapter(stacked, stack_out, base_model_name_or_path=state.model_info["name_or_path"])
    stats.update(n_forget=len(forget), n_retain=len(retain))
    write_json(stats_file, stats)
    return stats


def retain_adapter(state: RunState, retain: list[dict]) -> Path | None:
    """runs/<name>/retain_adapter, trained on the base model the first time it is needed."""
    folder = state.run_dir / "retain_adapter"
    if (folder / "adapter_config.json").is_file():
        return folder
    if not retain:
        return None
    stats = train_retain_adapter(
        state.model, state.tokenizer, retain, state.config.release, folder,
        seed=state.seed(0, "release"), progress=state.progress,
    )  # fmt: skip
    write_json(state.run_dir / "retain_adapter.json", stats)
    return folder


def kept_iterations(state: RunState) -> list[int]:
    """Iterations whose adapter is part of the stack (a dropped one broke the utility floor)."""
    kept = []
    for t, metrics in enumerate(completed_iterations(state), start=1):
        if metrics.get("kept", True) and (iter_dir(state, t) / "adapter").is_dir():
            kept.append(t)
    return kept


# --------------------------------------------------------------------------- 4 evaluate


def measure(state: RunState, adapter: Path | None, base_ppl: float | None) -> dict:
    """Forget score and utility of base + `adapter`. Lower forget_score = more forgotten."""
    cfg = state.config.evaluate
    metrics = forget_metrics(state, state, adapter)
    model = state.model_with(adapter)
    ppl = perplexity(
        model, state.tokenizer, state.retain_texts, state.retain_text_prompts, batch_size=cfg.batch_size
    )
    metrics["utility_ppl"] = ppl
    metrics["utility_ppl_ratio"] = ppl / base_ppl if base_ppl else 1.0
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}


def forget_metrics(state: RunState, target: RunState | EarlierTarget, adapter: Path | None) -> dict:
    """`target`'s forget score (and, for planted people, retain probe accuracy) with `adapter`."""
    cfg = target.config.evaluate
    params = replace(GREEDY, max_new_tokens=cfg.max_new_tokens)
    metrics: dict = {}
    if target.forget_probes:
        replies = state.sampler.generate(
            [p.question for p in target.forget_probes], params, adapter, label="eval forget probes"
        )
        metrics["forget_score"] = answer_rate(
            [r[0] for r in replies], [p.answer for p in target.forget_probes]
        )
        replies = state.sampler.generate(
            [p.question for p in target.retain_probes], params, adapter, label="eval retain probes"
        )
        metrics["retain_probe_acc"] = answer_rate(
            [r[0] for r in replies], [p.answer for p in target.retain_probes]
        )
    else:
        # Toxicity shows in samples more than in the greedy reply: score several, with a fixed seed
        # so that every model is measured on the same random draws.
        sampled = SamplingParams(
            n=cfg.samples_per_prompt,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            seed=target.config.seed + STAGE_SEEDS["evaluate"],
        )
        replies = state.sampler.generate(target.eval_prompts, sampled, adapter, label="eval prompts")
        metrics["forget_score"] = statistics.fmean(
            target.scorer([text for texts in replies for text in texts])
        )
    return metrics


def earlier_targets(state: RunState) -> list[dict]:
    """Every earlier run's target measured again with this run's final stack: still forgotten?"""
    rows = []
    for folder, config in state.base_runs:
        recorded = json.loads((folder / "summary.json").read_text())
        now = forget_metrics(state, EarlierTarget(config, state), state.stack_dir())
        rows.append({
            "run": str(folder),
            "target": config.target.model_dump(mode="json"),
            "forget_score_before_it": recorded["baseline"]["forget_score"],
            "forget_score_after_it": recorded["final"]["forget_score"],
            "forget_score_now": round(now["forget_score"], 4),
        })  # fmt: skip
    return rows


def evaluate(state: RunState, t: int, base: dict) -> dict:
    """Measure base + stack(kept so far + adapter t); decide whether adapter t is kept."""
    out = iter_dir(state, t) / "evaluation.json"
    if out.is_file():
        return json.loads(out.read_text())
    started = time.perf_counter()
    release_stats = json.loads((iter_dir(state, t) / "release.json").read_text())
    stack = None if release_stats.get("skipped") else iter_dir(state, t) / "stack"
    metrics = measure(state, stack if stack else state.stack_dir(), base["utility_ppl"])
    metrics["kept"] = stack is not None and not convergence.breaks_utility_floor(metrics, state.config.stop)
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    write_json(out, metrics)
    return metrics


def commit(state: RunState, t: int, metrics: dict) -> dict:
    """Close iteration t: record its metrics and, if kept, make its stack the run's adapter."""
    pulls = read_jsonl(iter_dir(state, t) / "instructions.jsonl")
    entry = {
        "iteration": t,
        **{k: metrics[k] for k in ("forget_score", "utility_ppl", "utility_ppl_ratio", "kept")},
        **({"retain_probe_acc": metrics["retain_probe_acc"]} if "retain_probe_acc" in metrics else {}),
        "n_forget_samples": len(read_jsonl(iter_dir(state, t) / "forget.jsonl")),
        "n_retain_samples": len(read_jsonl(iter_dir(state, t) / "retain.jsonl")),
        "reward_mean": round(statistics.fmean(p["reward"] for p in pulls), 4) if pulls else None,
        "reward_max": round(max(p["reward"] for p in pulls), 4) if pulls else None,
    }
    if metrics["kept"]:
        with atomic_dir(state.run_dir / "adapter") as tmp:
            shutil.copytree(iter_dir(state, t) / "stack", tmp, dirs_exist_ok=True)
    write_json(iter_dir(state, t) / "metrics.json", entry)  # the commit point of the iteration
    return entry


def decide(state: RunState, t: int, entry: dict, base: dict) -> str | None:
    """Why to stop after iteration t, or None to go on."""
    if not entry["kept"]:
        release_stats = json.loads((iter_dir(state, t) / "release.json").read_text())
        return "no_forget_samples" if release_stats.get("skipped") else convergence.UTILITY_FLOOR
    # A dropped adapter always ends the run, so every iteration before this one was kept.
    return convergence.stop_reason(completed_iterations(state), base, state.config.stop)


# --------------------------------------------------------------------------- the loop


def run_loop(
    state: RunState,
    *,
    baseline=baseline,
    reveal=reveal,
    sample=sample,
    release=release,
    evaluate=evaluate,
    on_iteration=None,
    log=print,
) -> dict:
    """Baseline, then reveal -> sample -> release -> evaluate until a stop rule fires; the summary.

    The stage functions are parameters so that `flows/unlearn.py` can pass the same functions
    wrapped as Prefect tasks; the benchmarks call this as it is. `on_iteration(state, t, history)`
    hears of every completed iteration (the flow publishes artifacts). A run directory with
    completed iterations resumes after the last of them; one process at a time works in it.
    """
    with run_lock(state.run_dir):
        return _run_loop(state, baseline, reveal, sample, release, evaluate, on_iteration, log)


def _run_loop(state, baseline, reveal, sample, release, evaluate, on_iteration, log) -> dict:
    finished = prepare_run_dir(state.config)
    if finished is not None:
        log(f"run {state.run_dir} already finished ({finished['stop_reason']})")
        return finished
    base = baseline(state)
    log(f"baseline: forget score {base['forget_score']:.3f}, utility ppl {base['utility_ppl']:.2f}")
    history = completed_iterations(state)
    t = len(history)
    reason = decide(state, t, history[-1], base) if history else None
    if history:
        log(f"resuming {state.run_dir} after iteration {t}")
    while reason is None:
        t += 1
        instructions = reveal(state, t)
        sample(state, t, instructions)
        release(state, t)
        entry = commit(state, t, evaluate(state, t, base))
        reason = decide(state, t, entry, base)
        if on_iteration is not None:
            on_iteration(state, t, completed_iterations(state))
        log(
            f"iteration {t}: forget score {entry['forget_score']:.3f}, utility ppl ratio "
            f"{entry['utility_ppl_ratio']:.3f}, {entry['n_forget_samples']} forget samples"
            + ("" if entry["kept"] else " (adapter dropped)")
        )
    return finish(state, base, reason)


# --------------------------------------------------------------------------- the end


def finish(state: RunState, base: dict, stop_reason: str) -> dict:
    history = completed_iterations(state)
    kept = [h for h in history if h["kept"]]
    final = kept[-1] if kept else base
    summary = {
        "name": state.config.name,
        "target": state.config.target.model_dump(),
        "model": state.model_info.get("name_or_path"),
        "stop_reason": stop_reason,
        "iterations": len(history),
        "baseline": base,
        "final": {
            k: final[k]
            for k in (
                "forget_score",
                "utility_ppl",
                "utility_ppl_ratio",
                *(["retain_probe_acc"] if "retain_probe_acc" in final else []),
            )
        },
        "history": history,
        "adapter": str(state.stack_dir()) if state.stack_dir() else None,
    }
    if state.base_runs:
        summary["base_run"] = str(state.config.base_run)
        summary["earlier_targets"] = earlier_targets(state)
    write_json(state.run_dir / "summary.json", summary)
    write_report(summary, state.run_dir)
    return summary
