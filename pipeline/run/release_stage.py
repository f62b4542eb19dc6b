"""Stage 3, release: train adapter t on the revealed samples, orthogonal to the kept earlier ones.

The model being trained is M_t = base + the stack of kept adapters, frozen; the new LoRA is kept
orthogonal (O-LoRA) to every earlier adapter, the base run's and, with `release.retain_adapter`, a
LoRA that learned the retain samples. Writes `iter_t/adapter/` (this LoRA), `iter_t/stack/` (all
kept ones and this one as one PEFT adapter) and `iter_t/release.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.files import read_jsonl, write_json
from pipeline.release.name_swap import run_anchor_map
from pipeline.release.objectives import objective_named
from pipeline.release.olora import lora_A_matrices, read_adapter, stack_adapters, write_adapter
from pipeline.release.train import NothingKnown, train_adapter, train_retain_adapter
from pipeline.run.rundir import has_adapter
from pipeline.run.state import RunState, kept_iterations


def release(state: RunState, t: int) -> dict:
    """Train adapter t orthogonal to the kept earlier ones; write iter_t/adapter and iter_t/stack."""
    files = state.files.iteration(t)
    if files.release.is_file() and has_adapter(files.stack):
        return json.loads(files.release.read_text())
    forget = read_jsonl(files.forget)
    retain = read_jsonl(files.retain)
    paired = objective_named(state.config.release.method).paired
    trainable = [row for row in forget if row.get("alternative")] if paired else forget
    if not trainable:
        if forget:
            reason = "no alternative to pair the forget samples with (sample.alternative_threshold)"
        else:
            reason = "no forget samples above the relevance threshold"
        return _skipped(files.release, reason)
    least = state.config.release.min_forget_samples
    if len(trainable) < least:  # a release on a handful of rows learns them, not the target
        return _skipped(
            files.release, f"{len(trainable)} forget samples, fewer than release.min_forget_samples ({least})"
        )
    forget = trainable
    current = state.stack_dir()
    previous_dirs = [state.files.iteration(s).adapter for s in kept_iterations(state)]
    if state.base_adapter is not None:  # new adapters stay orthogonal to the earlier runs' too
        previous_dirs.insert(0, state.base_adapter)
    previous = [lora_A_matrices(read_adapter(d)) for d in previous_dirs]
    if state.config.release.retain_adapter and (kept := retain_adapter(state, retain)) is not None:
        previous.append(lora_A_matrices(read_adapter(kept)))
    # The sampler's merged copy of the same stack: training injects its LoRA into it and takes it
    # out again, so one merged copy serves both stages instead of one each.
    model_t = state.model_with(current)
    try:
        stats = train_adapter(
            model_t,
            state.tokenizer,
            forget,
            retain,
            state.config.release,
            previous,
            files.adapter,
            seed=state.seed(t, "release"),
            progress=state.progress,
            name_map=run_anchor_map(state.config),
            base_model=state.model,  # M_0: what the model knew before any release
            target_names=[*state.config.target.names, *state.config.target.aliases],
        )
    except NothingKnown as err:
        return _skipped(files.release, str(err))
    stacked = stack_adapters([read_adapter(d) for d in [*previous_dirs, files.adapter]])
    write_adapter(stacked, files.stack, base_model_name_or_path=state.model_info["name_or_path"])
    stats.update(n_forget=len(forget), n_retain=len(retain))
    write_json(files.release, stats)
    return stats


def _skipped(path: Path, reason: str) -> dict:
    """No adapter this iteration: release.json says why (the loop then stops: no_forget_samples)."""
    stats = {"skipped": True, "reason": reason}
    write_json(path, stats)
    return stats


def retain_adapter(state: RunState, retain: list[dict]) -> Path | None:
    """runs/<name>/retain_adapter, trained on the base model the first time it is needed."""
    folder = state.files.retain_adapter
    if has_adapter(folder):
        return folder
    if not retain:
        return None
    stats = train_retain_adapter(
        state.model, state.tokenizer, retain, state.config.release, folder,
        seed=state.seed(0, "release"), progress=state.progress,
    )  # fmt: skip
    write_json(state.files.retain_adapter_stats, stats)
    return folder
