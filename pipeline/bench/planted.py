"""`rr bench planted`: does the loop forget planted people as well as methods handed the real data?

    plant   the config's model learns every planted person of the spec (`full`), and a second copy
            learns everyone but the forget people (`retain_only`, the model unlearning aims at)
    methods `rr` runs the whole loop on the full model, told only the forget people's names;
            each oracle (by default `ga`, `graddiff`, `npo`, `undial`; any objective can be one)
            trains one adapter on the true forget pairs (and the retain pairs) with the same LoRA
            settings and rr's total step budget
    measure every model on the same probes and texts (`measure`), then relative to the planted
            and retain-only models (`compare`)

Everything lands in the output folder: `results.json`, `report.md`, `plot.png`, the rr run under
`runs/rr/`, the oracles' adapters under `adapters/`, and each measured model under `parts/` (a
benchmark started again reuses what is there).
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import time
from pathlib import Path

import torch

from pipeline.bench.methods import PLANTED_DEFAULT, PLANTED_METHODS, parse_methods
from pipeline.bench.metrics import (
    auc,
    forget_quality,
    min_k_percent_score,
    privleak,
    truth_ratios,
    verbmem,
)
from pipeline.bench.results import claim_out_dir, write_results
from pipeline.config import ConfigError, RunConfig, validate_config
from pipeline.evaluation.metrics import perplexity
from pipeline.files import read_lines, write_json
from pipeline.models import with_adapter
from pipeline.planting.examples import plant_examples
from pipeline.planting.plant import planted_model, probe_accuracy
from pipeline.planting.spec import Person, PlantedSpec, Probe, load_spec
from pipeline.release.objectives import OBJECTIVES
from pipeline.release.train import train_adapter
from pipeline.run.loop import run_loop
from pipeline.run.preflight import check_names
from pipeline.run.prompts import prompt_texts
from pipeline.run.state import RunState

METHODS = PLANTED_DEFAULT  # compared unless --methods says otherwise
ORACLES = PLANTED_METHODS[1:]  # every objective can be an oracle

COLUMNS = [  # (key in results.json, column title, format)
    ("forget_probe_acc", "forget probe acc", ".3f"),
    ("retain_probe_acc", "retain probe acc", ".3f"),
    ("forget_truth_ratio", "truth ratio", ".3g"),
    ("forget_quality", "forget quality", ".3g"),
    ("verbmem", "VerbMem", ".3f"),
    ("privleak", "PrivLeak", "+.3f"),
    ("utility_ppl_ratio", "utility ppl ratio", ".3g"),  # GA can reach 1e50
    ("generated_tokens", "generated tokens", "d"),
    ("wall_s", "wall s", ".0f"),
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


def measure(model, tokenizer, spec: PlantedSpec, utility_texts: list[str], batch_size: int = 8) -> dict:
    """What one model knows: the raw measurements, before they are compared with other models."""
    forget_probes = [probe for person in spec.forgotten() for probe in person.probes]
    retain_probes = [probe for person in spec.retained() for probe in person.probes]
    forget_facts = [fact for person in spec.forgotten() for fact in person.facts]
    recital_requests = [f"Tell me about {person.name}." for person in spec.forgotten() for _ in person.facts]
    sentences = [
        sentence_probe(person, p) for person in spec.forgotten() for p in person.probes if p.distractors
    ]
    ratios = truth_ratios(model, tokenizer, sentences)
    raw = {
        "forget_probe_acc": probe_accuracy(model, tokenizer, forget_probes),
        "retain_probe_acc": probe_accuracy(model, tokenizer, retain_probes),
        "forget_truth_ratios": ratios,
        "forget_truth_ratio": statistics.fmean(ratios) if ratios else None,
        "verbmem": verbmem(model, tokenizer, forget_facts, questions=recital_requests),
        "utility_ppl": perplexity(model, tokenizer, utility_texts, batch_size=batch_size),
        "mia_auc": None,
    }
    if spec.held_out():
        # Min-K% membership attack: forget facts (members) against unseen ones, each as the reply
        # to a request about its person, the form the facts were planted in.
        def scores(people):
            return [
                min_k_percent_score(model, tokenizer, fact, prompt=f"Tell me about {person.name}.")
                for person in people
                for fact in person.facts
            ]

        raw["mia_auc"] = auc(scores(spec.forgotten()), scores(spec.held_out()))
    return raw


def sentence_probe(person: Person, probe: Probe) -> Probe:
    """The probe as whole sentences: its fact against the fact with each distractor in place of the answer.

    TOFU compares a paraphrased answer with perturbed ones; a planted model learned whole facts as
    replies, so a bare answer word is an unlikely reply whether true or false, and the ratio would
    measure the phrasing instead of the knowledge.
    """
    fact = person.fact_for(probe)
    answer = re.compile(re.escape(probe.answer), re.IGNORECASE)
    return Probe(
        question=probe.question,
        answer=fact,
        distractors=[answer.sub(lambda _, d=d: d, fact, count=1) for d in probe.distractors],
    )


def compare(raw: dict, planted: dict, retain_only: dict) -> dict:
    """The benchmark's metrics of one model, from its measurements and the two references'."""
    metrics = {k: v for k, v in raw.items() if k != "forget_truth_ratios"}
    metrics["forget_quality"] = (
        forget_quality(raw["forget_truth_ratios"], retain_only["forget_truth_ratios"])
        if raw["forget_truth_ratios"]
        else None
    )
    metrics["privleak"] = (
        privleak(raw["mia_auc"], retain_only["mia_auc"]) if raw["mia_auc"] is not None else None
    )
    metrics["utility_ppl_ratio"] = raw["utility_ppl"] / planted["utility_ppl"]
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}


def run_planted_bench(
    spec_path: Path,
    config: RunConfig,
    out: Path,
    methods: list[str] = METHODS,
    progress: bool = True,
    log=print,
) -> dict:
    """Plant, run every method, measure, and write results.json, report.md and plot.png to `out`."""
    methods = parse_methods(methods, PLANTED_METHODS)
    check_names(config)  # a misspelt objective fails before anything is planted or written
    spec = load_spec(spec_path)
    cfg = rr_config(config, Path(spec_path).resolve(), out)
    spec_sha = hashlib.sha256(Path(spec_path).read_bytes()).hexdigest()
    claim_out_dir(out, cfg, {"spec_sha256": spec_sha})
    if cfg.model.threads:
        torch.set_num_threads(cfg.model.threads)
    utility_texts = read_lines(cfg.resolve(cfg.evaluate.retain_text), "evaluate.retain_text")
    parts = out / "parts"

    # Both models from the same base, seed and tokenizer: only the forget people's data differs.
    extra = prompt_texts(cfg)
    log("planting the full model (cached after the first run) ...")
    model, tokenizer, full_info = planted_model(cfg.model, "full", extra, cfg.seed, progress)
    log("planting the retain-only model ...")
    reference, ref_tokenizer, ref_info = planted_model(cfg.model, "retain_only", extra, cfg.seed, progress)
    _check_planted(full_info, cfg.model.plant.min_probe_acc, log)

    def measure_model(found_model, found_tokenizer) -> dict:
        return measure(found_model, found_tokenizer, spec, utility_texts, cfg.evaluate.batch_size)

    planted_raw = _once(parts / "planted.json", lambda: measure_model(model, tokenizer), log)
    retain_raw = _once(parts / "retain_only.json", lambda: measure_model(reference, ref_tokenizer), log)

    raws: dict[str, dict] = {}
    budget = cfg.release.steps * cfg.stop.max_iterations
    if "rr" in methods:
        raws["rr"] = _run_rr(cfg, model, tokenizer, measure_model, parts, progress, log)
        budget = raws["rr"]["release_steps"] or budget
    forget_rows, retain_rows = oracle_rows(spec, cfg.model.plant.recitals)
    for method in [m for m in methods if m in ORACLES]:
        release = cfg.release.model_copy(update={"method": method, "steps": budget})
        if method == "graddiff":  # gradient difference is defined with the retain NLL
            release = release.model_copy(update={"retain_loss": "nll"})

        # The budget is in the names: oracles trained for another budget are not rr's match.
        name = f"{method}-{budget}steps"
        adapter, train_file = out / "adapters" / name, parts / f"{name}.train.json"

        def run_oracle(release=release, adapter=adapter, train_file=train_file) -> dict:
            if not train_file.is_file():  # else trained before, and only the measurement is missing
                started = time.perf_counter()
                stats = train_adapter(
                    model, tokenizer, forget_rows, retain_rows, release, [], adapter,
                    seed=cfg.seed, progress=progress,
                )  # fmt: skip
                wall = round(time.perf_counter() - started, 2)
                write_json(
                    train_file, {"wall_s": wall, "release_steps": stats["steps"], "generated_tokens": 0}
                )
            training = json.loads(train_file.read_text())
            return {**measure_model(with_adapter(model, adapter), tokenizer), **training}

        raws[method] = _once(parts / f"{name}.json", run_oracle, log)

    results = {
        "spec": str(spec_path),
        "model": cfg.model.path,
        "forget": spec.forget,
        "step_budget": budget,
        "planted_info": {k: full_info[k] for k in ("folder", "plant", "mean_probe_accuracy")},
        "retain_only_info": {k: ref_info[k] for k in ("folder", "plant", "mean_probe_accuracy")},
        "planted": compare(planted_raw, planted_raw, retain_raw),
        "retain_only": compare(retain_raw, planted_raw, retain_raw),
        "methods": {m: compare(raws[m], planted_raw, retain_raw) for m in methods},
    }
    write_results(
        out,
        results,
        COLUMNS,
        title=f"Planted-knowledge benchmark: {spec.name}, model {cfg.model.path}",
        notes=_notes(spec, cfg, budget, [m for m in methods if m in ORACLES]),
        x=("utility_ppl_ratio", "utility: perplexity / planted model's"),
        y=("forget_probe_acc", "forget-probe accuracy"),
    )
    return results


def _once(path: Path, compute, log) -> dict:
    """`compute()` saved to `path`; a benchmark started again reads it back instead."""
    if path.is_file():
        return json.loads(path.read_text())
    log(f"measuring {path.stem} ...")
    raw = compute()
    write_json(path, raw)
    return raw


def _run_rr(cfg, model, tokenizer, measure_model, parts, progress, log) -> dict:
    path, loop_path = parts / "rr.json", parts / "rr_loop.json"
    if path.is_file():
        return json.loads(path.read_text())
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


def _notes(spec: PlantedSpec, cfg: RunConfig, budget: int, oracles: list[str]) -> list[str]:
    release = cfg.release
    alone = [m for m in oracles if not OBJECTIVES[m].takes_retain]
    with_term = [m for m in oracles if OBJECTIVES[m].takes_retain and m != "graddiff"]
    given = [
        *([f"{', '.join(alone)}: the forget pairs only"] if alone else []),
        *(["graddiff: NLL on the retain pairs too"] if "graddiff" in oracles else []),
        *([f"{', '.join(with_term)}: the config's retain term ({release.retain_loss}, weight "
           f"{release.retain_weight})"] if with_term else []),
    ]  # fmt: skip
    return [
        f"Forget: {', '.join(spec.forget)} ({len(spec.retained())} planted people retained, "
        f"{len(spec.held_out())} held out for PrivLeak).",
        f"All methods: LoRA rank {release.rank} on {', '.join(release.target_modules)}; lr {release.lr}; "
        f"batch {release.batch_size}. The oracles train {budget} steps, rr's total over its iterations.",
        *([f"Oracles get the true data; {'; '.join(given)}."] if given else []),
        "rr's wall time and generated tokens are its whole loop (reveal, sample, release and its own "
        "evaluation); an oracle's wall time is its training only.",
        "forget quality: KS-test p-value of the forget truth ratios against the retain-only model's "
        "(higher is better). PrivLeak: relative gap of the Min-K% attack's AUC to the retain-only "
        "model's (0 is best). Utility: perplexity on generic text relative to the planted model.",
    ]
