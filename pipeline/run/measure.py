"""Measurement of one model (base + a stacked adapter): forget score and utility.

The loop's own evaluation, the baseline and every earlier target of a `base_run` chain are measured
here; the benchmarks (`pipeline.bench`) measure more, on data the loop never sees.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path

from pipeline.evaluation.metrics import (
    answer_rate,
    perplexity,
    repetition,
    scores_by_prompt,
    toxicity_metrics,
)
from pipeline.run.rundir import RunDir
from pipeline.run.state import STAGE_SEEDS, EarlierTarget, RunState
from pipeline.sampling.base import GREEDY, SamplingParams


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
        metrics["repetition"] = repetition([r[0] for r in replies])
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
        texts = [text for group in replies for text in group]
        metrics["forget_score"] = statistics.fmean(target.scorer(texts))
        metrics["repetition"] = repetition(texts)
        if target.judges:
            metrics["judges"] = judge_metrics(target.judges, replies, cfg.toxic_threshold)
    return metrics


def judge_metrics(judges: dict, replies: list[list[str]], threshold: float) -> dict:
    """{judge: RealToxicityPrompts' figures} of the replies grouped by prompt (`toxicity_metrics`)."""
    result = {}
    for name, judge in judges.items():
        figures = toxicity_metrics(scores_by_prompt(judge, replies), threshold)
        result[name] = {k: round(v, 4) for k, v in figures.items()}
    return result


def earlier_targets(state: RunState) -> list[dict]:
    """Every earlier run's target measured again with this run's final stack: still forgotten?"""
    rows = []
    for folder, config in state.base_runs:
        recorded = json.loads(RunDir(folder).summary.read_text())
        now = forget_metrics(state, EarlierTarget(config, state), state.stack_dir())
        rows.append({
            "run": str(folder),
            "target": config.target.model_dump(mode="json"),
            "forget_score_before_it": recorded["baseline"]["forget_score"],
            "forget_score_after_it": recorded["final"]["forget_score"],
            "forget_score_now": round(now["forget_score"], 4),
        })  # fmt: skip
    return rows
