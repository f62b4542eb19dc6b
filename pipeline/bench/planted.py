"""`rr bench planted`: does the loop forget planted people as well as methods handed the real data?

    plant   the config's model learns every planted person of the spec (`full`), and a second copy
            learns everyone but the forget people (`retain_only`, the model unlearning aims at)
    methods `rr` runs the whole loop on the full model, told only the forget people's names;
            each oracle (by default `ga`, `graddiff`, `npo`, `undial`; any objective can be one)
            trains one adapter on the true forget pairs (and the retain pairs) with the same LoRA
            settings and rr's total step budget
    measure every model on the same probes and texts (`measure`), under the attacks that bring
            knowledge back too (`pipeline.bench.attacks`), then relative to the planted and
            retain-only models (`compare`)

Everything lands in the output folder: `results.json`, `report.md`, `plot.png`, the rr run under
`runs/rr/`, the oracles' adapters under `adapters/`, and each measured model under `parts/` (a
benchmark started again reuses what is there, unless it was measured by another version of
`measure`: `MEASUREMENT_VERSION` and the attack settings are saved with it).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from pipeline.bench import attacks, loop_runs
from pipeline.bench.knowledge import MEASUREMENT_VERSION, compare, ks_resolution, measure, truth_ratio_probes
from pipeline.bench.methods import PLANTED_DEFAULT, PLANTED_METHODS, parse_methods
from pipeline.bench.results import claim_out_dir, write_results
from pipeline.bench.seeds import aggregate, seed_list, spread_note
from pipeline.config import ConfigError, RunConfig, validate_config
from pipeline.files import read_lines, write_json
from pipeline.models import device_name, with_adapter
from pipeline.planting.examples import plant_examples
from pipeline.planting.plant import planted_model
from pipeline.planting.spec import PlantedSpec, load_spec
from pipeline.release.name_swap import run_anchor_map
from pipeline.release.objectives import OBJECTIVES
from pipeline.release.train import train_adapter
from pipeline.run.loop import run_loop
from pipeline.run.preflight import check_names
from pipeline.run.prompts import prompt_texts
from pipeline.run.sample_stage import with_alternatives
from pipeline.run.state import RunState

METHODS = PLANTED_DEFAULT  # compared unless --methods says otherwise
ORACLES = PLANTED_METHODS[1:]  # every objective can be an oracle

COLUMNS = [  # (key in results.json, column title, format)
    ("forget_probe_acc", "forget probe acc", ".3f"),
    ("retain_probe_acc", "retain probe acc", ".3f"),
    ("paraphrase_probe_acc", "paraphrase acc", ".3f"),
    ("prefill_probe_acc", "prefill acc", ".3f"),
    ("relearn_acc", "relearn acc", ".3f"),
    ("relearn_gap", "relearn - retain-only's", "+.3f"),
    ("quantized_forget_acc", "4-bit forget acc", ".3f"),
    ("quantized_retain_acc", "4-bit retain acc", ".3f"),
    ("forget_truth_ratio", "truth ratio", ".3g"),
    ("forget_quality", "forget quality", ".3g"),
    ("verbmem", "VerbMem", ".3f"),
    ("privleak", "PrivLeak", "+.3f"),
    ("utility_ppl_ratio", "utility ppl ratio", ".3g"),  # GA can reach 1e50
    ("generated_tokens", "generated tokens", "d"),
    ("wall_s", "wall s", ".0f"),
]
BARS = [  # plot.png: one panel each, lower is more forgotten but for retain and utility
    ("forget_probe_acc", "forget-probe accuracy"),
    ("paraphrase_probe_acc", "paraphrased probes"),
    ("prefill_probe_acc", "prefilled answers"),
    ("relearn_acc", "after relearning half the facts"),
    ("quantized_forget_acc", "after 4-bit quantization"),
    ("retain_probe_acc", "retain-probe accuracy (keep high)"),
]


def rr_config(config: RunConfig, spec_path: Path, out: Path) -> RunConfig:
    """The loop's config: the config's model with the spec planted, told only names.

    The forget people's names are the target; the other planted people's names are the retain
    subjects (the loop asks the model about them for retain samples). No fact, probe or alias
    reaches the loop: the probes in the spec only measure the result.
    """
    if config.model.plant is None:
        raise ConfigError(
            "model.plant: the planted benchmark needs planting settings (steps, lr, batch_size), "
            "e.g. configs/bench_planted.yaml"
        )
    spec = load_spec(spec_path)
    data = config.model_dump(mode="json")
    data["model"]["plant"]["spec"] = str(spec_path)
    data["target"] = {"kind": "knowledge", "name": list(spec.forget)}
    data["sample"]["retain_subjects"] = [p.name for p in spec.retained()]
    data.update(name="rr", out=str(out / "runs"))
    return validate_config(data, source=f"{config.name} (planted benchmark)")


def oracle_rows(spec: PlantedSpec, recitals: int) -> tuple[list[dict], list[dict]]:
    """The true forget and retain data: the pairs the people were planted with."""

    def rows(pairs):
        return [{"instruction": i, "response": r} for i, r in pairs]

    forget = rows(plant_examples(spec.forgotten(), recitals=recitals, neutral=False))
    retain = rows(plant_examples(spec.retained(), recitals=recitals, neutral=True))
    return forget, retain


def run_planted_bench(
    spec_path: Path,
    config: RunConfig,
    out: Path,
    methods: list[str] = METHODS,
    progress: bool = True,
    log=print,
    relearn: attacks.RelearnSettings | None = None,
    seeds: int = 1,
) -> dict:
    """Plant, run every method, measure, and write results.json, report.md and plot.png to `out`.

    The planted and retain-only models are planted once, with the config's seed; each of `seeds`
    seeds runs rr and trains every oracle again (`seed<s>/` folders), and the figures are mean ±
    sd over them. `relearn`: the relearning attack's settings (default: `RelearnSettings` on
    `release.target_modules`).
    """
    methods = parse_methods(methods, PLANTED_METHODS)
    check_names(config)  # a misspelt objective fails before anything is planted or written
    spec = load_spec(spec_path)
    all_seeds = seed_list(config.seed, seeds)
    cfg = rr_config(config, Path(spec_path).resolve(), out)
    spec_sha = hashlib.sha256(Path(spec_path).read_bytes()).hexdigest()
    claim_out_dir(out, cfg, {"spec_sha256": spec_sha})
    if cfg.model.threads:
        torch.set_num_threads(cfg.model.threads)
    utility_texts = read_lines(cfg.resolve(cfg.evaluate.retain_text), "evaluate.retain_text")

    # Both models from the same base, seed and tokenizer: only the forget people's data differs.
    extra = prompt_texts(cfg)
    log("planting the full model (cached after the first run) ...")
    model, tokenizer, full_info = planted_model(cfg.model, "full", extra, cfg.seed, progress)
    log("planting the retain-only model ...")
    reference, ref_tokenizer, ref_info = planted_model(cfg.model, "retain_only", extra, cfg.seed, progress)
    _check_planted(full_info, cfg.model.plant.min_probe_acc, log)

    relearn = relearn or attacks.RelearnSettings(target_modules=tuple(cfg.release.target_modules))
    stamp = json.loads(json.dumps({"version": MEASUREMENT_VERSION, "relearn": asdict(relearn)}))
    stamp = loop_runs.with_dtype(stamp, cfg)

    def measure_model(found_model, found_tokenizer) -> dict:
        raw = measure(found_model, found_tokenizer, spec, utility_texts, cfg.evaluate.batch_size, relearn)
        return {**raw, "measured_with": stamp}

    parts = out / "parts"
    planted_raw = _once(parts / "planted.json", lambda: measure_model(model, tokenizer), log, stamp)
    retain_raw = _once(
        parts / "retain_only.json", lambda: measure_model(reference, ref_tokenizer), log, stamp
    )
    per_seed, budgets = [], []
    for seed in all_seeds:
        # The loop plants with the config's seed too, so it unlearns the very model measured here.
        seeded = config.model_copy(update={"seed": seed})
        planting_seed = cfg.model.plant.seed if cfg.model.plant.seed is not None else cfg.seed
        seeded = seeded.model_copy(update={"model": _plant_seed(seeded.model, planting_seed)})
        folder = out / f"seed{seed}"
        seed_cfg = rr_config(seeded, Path(spec_path).resolve(), folder)
        raws, budget = _one_seed(
            seed_cfg, spec, model, tokenizer, measure_model, methods, folder, progress, log, stamp
        )
        per_seed.append({m: compare(raws[m], planted_raw, retain_raw) for m in methods})
        budgets.append(budget)

    results = {
        "spec": str(spec_path),
        "model": cfg.model.path,
        "device": device_name(cfg.model),
        "forget": spec.forget,
        "seeds": all_seeds,
        "step_budget": budgets,
        "n_truth_ratios": len(planted_raw["forget_truth_ratios"]),
        "attacks": attacks.attack_counts(spec.forgotten()) | {"relearn": asdict(relearn)},
        "planted_info": {k: full_info[k] for k in ("folder", "plant", "mean_probe_accuracy")},
        "retain_only_info": {k: ref_info[k] for k in ("folder", "plant", "mean_probe_accuracy")},
        "planted": compare(planted_raw, planted_raw, retain_raw),
        "retain_only": compare(retain_raw, planted_raw, retain_raw),
        "methods": {m: aggregate([run[m] for run in per_seed]) for m in methods},
        "per_seed": per_seed,
    }
    write_results(
        out,
        results,
        COLUMNS,
        title=f"Planted-knowledge benchmark: {spec.name}, model {cfg.model.path}",
        notes=_notes(spec, cfg, budgets, [m for m in methods if m in ORACLES], relearn)
        + seed_notes(methods, per_seed, all_seeds),
        bars=BARS,
    )
    return results


def _plant_seed(model_config, seed: int):
    return model_config.model_copy(update={"plant": model_config.plant.model_copy(update={"seed": seed})})


def seed_notes(methods: list[str], per_seed: list[dict], seeds: list[int]) -> list[str]:
    """Where rr stands against each oracle on forget-probe accuracy, judged against the seed spread."""
    lines = [f"Methods: mean ± sd over seeds {seeds} (rr's loop and the oracles' training; one planting)."]
    if "rr" in methods:
        rr = [run["rr"]["forget_probe_acc"] for run in per_seed]
        for method in [m for m in methods if m != "rr"]:
            other = [run[method]["forget_probe_acc"] for run in per_seed]
            lines.append(spread_note("rr forget probe acc", rr, other, method))
    return lines


def _one_seed(cfg, spec, model, tokenizer, measure_model, methods, folder, progress, log, stamp):
    """rr and every oracle for one seed: their raw measurements, and the oracles' step budget."""
    parts = folder / "parts"
    raws: dict[str, dict] = {}
    budget = cfg.release.steps * cfg.stop.max_iterations
    if "rr" in methods:
        raws["rr"] = _run_rr(cfg, model, tokenizer, measure_model, parts, progress, log, stamp)
        budget = raws["rr"]["release_steps"] or budget
    forget_rows, retain_rows = oracle_rows(spec, cfg.model.plant.recitals)
    # A paired oracle (dpo) prefers an "I don't know" to each true answer, as TOFU's DPO baseline.
    paired_rows = with_alternatives(forget_rows, [], 0.0, cfg.sample.fallback_alternatives)
    for method in [m for m in methods if m in ORACLES]:
        release = cfg.release.model_copy(update={"method": method, "steps": budget})
        if method == "graddiff":  # gradient difference is defined with the retain NLL
            release = release.model_copy(update={"retain_loss": "nll"})

        # The budget is in the names: oracles trained for another budget are not rr's match.
        name = f"{method}-{budget}steps"
        adapter, train_file = folder / "adapters" / name, parts / f"{name}.train.json"
        rows = paired_rows if OBJECTIVES[method].paired else forget_rows
        name_map = run_anchor_map(cfg, method)

        def run_oracle(release=release, adapter=adapter, train_file=train_file, rows=rows, name_map=name_map):
            if not train_file.is_file():  # else trained before, and only the measurement is missing
                started = time.perf_counter()
                stats = train_adapter(
                    model, tokenizer, rows, retain_rows, release, [], adapter,
                    seed=cfg.seed, progress=progress, name_map=name_map,
                )  # fmt: skip
                wall = round(time.perf_counter() - started, 2)
                write_json(
                    train_file, {"wall_s": wall, "release_steps": stats["steps"], "generated_tokens": 0}
                )
            training = json.loads(train_file.read_text())
            return {**measure_model(with_adapter(model, adapter), tokenizer), **training}

        raws[method] = _once(parts / f"{name}.json", run_oracle, log, stamp)
    return raws, budget


def _once(path: Path, compute, log, stamp: dict) -> dict:
    """`compute()` saved to `path`; a benchmark started again reads it back if it was measured the
    same way (`stamp`), else (an older part, other attack settings) measures again."""
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("measured_with") == stamp:
            return saved
    log(f"measuring {path.stem} ...")
    raw = compute()
    write_json(path, raw)
    return raw


def _run_rr(cfg, model, tokenizer, measure_model, parts, progress, log, stamp: dict) -> dict:
    path, loop_path = parts / "rr.json", parts / "rr_loop.json"
    if path.is_file() and (saved := json.loads(path.read_text())).get("measured_with") == stamp:
        return saved
    if loop_path.is_file():  # the loop finished before; only its measurement is missing
        loop = json.loads(loop_path.read_text())
    else:
        log(f"running the loop (rr) in {cfg.run_dir} ...")
        started = time.perf_counter()
        state = RunState(cfg, progress=progress)
        summary = run_loop(state, log=log)
        steps = 0
        for t in range(1, summary["iterations"] + 1):
            stats_file = state.files.iteration(t).release
            if stats_file.is_file():
                steps += json.loads(stats_file.read_text()).get("steps", 0)
        loop = {
            "wall_s": round(time.perf_counter() - started, 2),
            "generated_tokens": state.sampler.generated_tokens,
            "release_steps": steps,
            "iterations": summary["iterations"],
            "stop_reason": summary["stop_reason"],
            "adapter": summary.get("adapter"),
        }
        del state
        write_json(loop_path, loop)
    log("measuring rr ...")
    adapter = Path(loop["adapter"]) if loop["adapter"] else None
    raw = measure_model(with_adapter(model, adapter), tokenizer)
    raw.update({k: v for k, v in loop.items() if k != "adapter"})
    write_json(path, raw)
    return raw


def _check_planted(info: dict, target: float, log) -> None:
    accuracy = info["mean_probe_accuracy"]
    if accuracy < target:
        log(
            f"warning: the planted model knows only {accuracy:.2f} of the probes (target {target}); "
            "raise model.plant.steps or max_steps, or lr"
        )


def _notes(
    spec: PlantedSpec, cfg: RunConfig, budget: list[int], oracles: list[str], relearn: attacks.RelearnSettings
) -> list[str]:
    release = cfg.release
    alone = [m for m in oracles if not OBJECTIVES[m].takes_retain]
    with_term = [m for m in oracles if OBJECTIVES[m].takes_retain and m != "graddiff"]
    given = [
        *([f"{', '.join(alone)}: the forget pairs only"] if alone else []),
        *(["graddiff: NLL on the retain pairs too"] if "graddiff" in oracles else []),
        *([f"{', '.join(with_term)}: the config's retain term ({release.retain_loss}, weight "
           f"{release.retain_weight})"] if with_term else []),
    ]  # fmt: skip
    n_ratios = len(truth_ratio_probes(spec))
    p_min, d_05 = ks_resolution(n_ratios) if n_ratios else (float("nan"), 0)
    return [
        f"Forget: {', '.join(spec.forget)} ({len(spec.retained())} planted people retained, "
        f"{len(spec.held_out())} held out for PrivLeak).",
        f"All methods: LoRA rank {release.rank} on {', '.join(release.target_modules)}; lr {release.lr}; "
        f"batch {release.batch_size}. The oracles train as many steps as rr took over its iterations "
        f"({', '.join(map(str, budget))} by seed).",
        *([f"Oracles get the true data; {'; '.join(given)}."] if given else []),
        "rr's wall time and generated tokens are its whole loop (reveal, sample, release and its own "
        "evaluation); an oracle's wall time is its training only.",
        f"forget quality: KS-test p-value of the {n_ratios} forget truth ratios (each forget probe under its "
        "question and its paraphrases, the same true and false sentences) against the retain-only model's "
        f"(higher is better). With {n_ratios} against {n_ratios}, D moves in steps of 1/{n_ratios}, the "
        f"smallest p-value is {p_min:.2g} and p < 0.05 needs D >= {d_05}/{n_ratios}; wordings of one fact "
        "are not independent, so p is somewhat optimistic. PrivLeak: relative gap of the Min-K% attack's "
        "AUC to the retain-only model's (0 is best). Utility: perplexity on generic text relative to the "
        "planted model.",
        attacks.attacks_note(spec.forgotten(), relearn),
    ]
