"""The loops a benchmark compares with the base model, one config per method and seed.

    rr        the whole loop, its instructions chosen by the NeuralUCB bandit
    rr_fixed  the same loop with one hand-written instruction (`FIXED_INSTRUCTIONS`, per target kind)
              instead of the bandit's pool, drawing as many samples per iteration
    random    the same loop with every instruction drawn uniformly from the pool
              (`reveal.policy: random`), the same budget

`run_method` runs one of them (or loads the base model) and saves what the loop cost; the toxicity
and code benchmarks measure what it returns.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pipeline.bench.seeds import seed_list
from pipeline.config import ConfigError, RunConfig, validate_config
from pipeline.files import write_json
from pipeline.models import dtype_name
from pipeline.run.loop import run_loop
from pipeline.run.model import load_run_model
from pipeline.run.state import RunState

# rr_fixed's one instruction, per target kind: the ablation shows what choosing instructions adds.
FIXED_INSTRUCTIONS = {
    "toxicity": Path("data/bench/toxicity_fixed_instruction.yaml"),
    "code": Path("data/bench/code_fixed_instruction.yaml"),
    "entity": Path("data/bench/entity_fixed_instruction.yaml"),
}


def method_config(config: RunConfig, method: str, seed: int, out: Path) -> RunConfig:
    """The loop's config for one method and seed; rr_fixed samples as much from its one instruction."""
    data = config.model_dump(mode="json")
    data.update(name=f"{method}-seed{seed}", seed=seed, out=str(out / "runs"))
    if method == "rr_fixed":
        fixed = FIXED_INSTRUCTIONS.get(config.target.kind)
        if fixed is None:
            raise ConfigError(
                f"--methods: rr_fixed has no fixed instruction for a {config.target.kind} target"
            )
        sample = data["sample"]
        sample["samples_per_instruction"] *= sample["top_instructions"]
        sample["top_instructions"] = 1
        data["reveal"]["prompts"] = str(config.resolve(fixed))
    elif method == "random":
        data["reveal"]["policy"] = "random"
    return validate_config(data, source=f"{config.name} (benchmark, {method}, seed {seed})")


def checked_seeds(config: RunConfig, methods: list[str], seeds: int, out: Path) -> list[int]:
    """The benchmark's seeds, once every method's config for every seed is known to be valid:
    a bad combination fails before anything is written."""
    all_seeds = seed_list(config.seed, seeds)
    for seed in all_seeds:
        for method in methods:
            if method != "base":
                method_config(config, method, seed, out)
    return all_seeds


def run_method(config: RunConfig, method: str, seed: int, out: Path, progress: bool, log) -> tuple:
    """(model, tokenizer, loop figures) of one method and seed: the base model, or the loop's result.

    The loop's figures are saved once it ends (`parts/seed<s>/<method>_loop.json`): a loop that is
    only read back generates nothing, so its cost would otherwise be recorded as zero.
    """
    if method == "base":  # the seed's own base: a planted model is planted with the seed
        model, tokenizer, _ = load_run_model(config.model_copy(update={"seed": seed}), progress)
        return model, tokenizer, {"generated_tokens": 0, "wall_s": 0.0}
    run_config = method_config(config, method, seed, out)
    loop_path = out / "parts" / f"seed{seed}" / f"{method}_loop.json"
    started = time.perf_counter()
    state = RunState(run_config, progress)
    if loop_path.is_file():
        loop = json.loads(loop_path.read_text())
    else:
        log(f"running the loop ({method}, seed {seed}) in {run_config.run_dir} ...")
        summary = run_loop(state, log=log)
        loop = {
            "wall_s": round(time.perf_counter() - started, 2),
            "generated_tokens": state.sampler.generated_tokens,
            "iterations": summary["iterations"],
            "stop_reason": summary["stop_reason"],
            "forget_samples": sum(h["n_forget_samples"] for h in summary["history"]),
            "seconds": summary.get("seconds"),
        }
        write_json(loop_path, loop)
    return state.model_with(state.stack_dir()), state.tokenizer, loop


def with_dtype(stamp: dict, config: RunConfig) -> dict:
    """`stamp` with the dtype the models are measured in: a part measured in bfloat16 is not
    another's in float32. Parts of before the dtype was recorded were float32 and carry none."""
    dtype = dtype_name(config.model)
    return stamp if dtype == "float32" else {**stamp, "dtype": dtype}


def measured_parts(config, out: Path, methods: list[str], seeds: list[int], stamp: dict, measure,
                   progress: bool, log, refresh=None) -> dict[str, dict[int, dict]]:  # fmt: skip
    """{method: {seed: raw}} for base and every method: read back from `parts/seed<s>/<method>.json`
    when measured the same way (`stamp`), else run (`run_method`) and measured now.

    `measure(model, tokenizer, seed) -> dict` measures one model; `refresh(saved) -> bool` may
    update a part read back (e.g. a judge added since) and says whether it changed.
    """
    raws: dict[str, dict[int, dict]] = {m: {} for m in dict.fromkeys(["base", *methods])}
    stamp = with_dtype(stamp, config)
    for seed in seeds:
        for method in raws:
            path = out / "parts" / f"seed{seed}" / f"{method}.json"
            saved = json.loads(path.read_text()) if path.is_file() else None
            if saved is not None and saved.get("measured_with") == stamp:  # measured before: kept
                if refresh is not None and refresh(saved):
                    write_json(path, saved)
                raws[method][seed] = saved
                continue
            model, tokenizer, raw = run_method(config, method, seed, out, progress, log)
            log(f"measuring {method} (seed {seed}) ...")
            raw.update(measure(model, tokenizer, seed))
            raw["measured_with"] = stamp
            write_json(path, raw)
            raws[method][seed] = raw
            del model
    return raws
