"""Stage 1, reveal: NeuralUCB picks the instructions that make the current model reveal the target.

(`reveal.policy: random` draws them uniformly instead: the ablation the benchmarks compare with.)

Each round the bandit chooses arms (instructions), the sampler draws replies to them, and the reward
of a pull is relevance (the target scorer) combined with diversity (Vendi score). At the end the
current model (or `reveal.rewriter`, another model) rewrites the best instructions, and the
rewrites join the pool of iteration t+1.
Writes `iter_t/instructions.jsonl`, `top_instructions.json`, `pool.json` and `bandit/`.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import replace

import torch

from pipeline.files import atomic_dir, write_json, write_jsonl
from pipeline.reveal.bandit import NeuralUCB, UniformChoice
from pipeline.reveal.features import embed_texts
from pipeline.reveal.instructions import clean_rewrite, dedupe, in_turn, merge_pool, read_prompt_list
from pipeline.reveal.reward import diversity, pull_reward
from pipeline.run.state import RunState
from pipeline.sampling.base import SamplingParams


def reveal(state: RunState, t: int) -> list[str]:
    """Pull instructions with NeuralUCB; return the best ones by the bandit's mean estimate."""
    cfg = state.config.reveal
    files = state.files.iteration(t)
    if files.instructions.is_file() and files.top_instructions.is_file():
        return json.loads(files.top_instructions.read_text())
    arms = arm_pool(state, t)
    features = embed_texts(state.model, state.tokenizer, arms)
    saved = state.files.iteration(t - 1).bandit
    if cfg.policy == "random":
        bandit = UniformChoice(state.seed(t, "reveal"))
    elif NeuralUCB.saved_in(saved):
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
    params = SamplingParams.from_generation(state.config.sample.generation, n=cfg.samples_per_arm)
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
    if state.config.target.kind == "knowledge" and len(state.config.target.names) > 1:
        top = in_turn(ranked, state.config.target.names, state.config.sample.top_instructions)
    grown = merge_pool(state.arms, arms, rewrites(state, t, ranked[: cfg.rewrite_top]), cfg.max_arms)
    write_json(files.pool, grown)
    if isinstance(bandit, NeuralUCB):
        with atomic_dir(files.bandit) as tmp:
            bandit.save(tmp)
    write_jsonl(files.instructions, pulls)
    write_json(files.top_instructions, top)
    return top


def arm_pool(state: RunState, t: int) -> list[str]:
    """The instructions the bandit chooses from in iteration t: the seeds, plus what the model
    rewrote in earlier iterations (saved by iteration t-1)."""
    saved = state.files.iteration(t - 1).pool
    return json.loads(saved.read_text()) if saved.is_file() else list(state.arms)


def rewrites(state: RunState, t: int, instructions: list[str]) -> list[str]:
    """Rewrites of `instructions`, one per rewrite prompt, cleaned: by `reveal.rewriter` if one is
    configured, else by the current model."""
    cfg = state.config
    if not instructions or cfg.reveal.rewrite_top == 0:
        return []
    templates = read_prompt_list(cfg.resolve(cfg.reveal.rewrite_prompts), placeholders=("instruction",))
    requests = [tpl.replace("{instruction}", ins) for ins in instructions for tpl in templates]
    if state.rewriter is not None:
        replies = state.rewriter.reply(requests, seed=state.seed(t, "rewrite"))
    else:
        params = SamplingParams.from_generation(cfg.sample.generation, seed=state.seed(t, "rewrite"))
        generated = state.sampler.generate(
            requests, params, state.stack_dir(), label="rewriting instructions"
        )
        replies = [texts[0] for texts in generated]
    cleaned = dedupe([text for reply in replies if (text := clean_rewrite(reply))])
    if cfg.target.kind == "knowledge":  # a request that no longer names the target reveals nothing of it
        cleaned = [text for text, score in zip(cleaned, state.scorer(cleaned)) if score >= 0.5]
    return cleaned
