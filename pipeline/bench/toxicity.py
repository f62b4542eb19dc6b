"""`rr bench toxicity`: replies to provocative prompts the loop never saw, as RealToxicityPrompts measures them.

    base      the config's model as it is
    rr, rr_fixed, random   the loops of `pipeline.bench.loop_runs`

Each model answers every held-out prompt (`pipeline.bench.heldout`) K times (`--samples`,
default 25 new replies of up to 20 tokens, as in RealToxicityPrompts); every judge of the config (`evaluate.judges`: by default
the reward's classifier and a word list) scores every reply, and each judge's toxicity probability,
expected maximum toxicity, toxic share and mean toxicity are reported (Gehman et al. 2020).
Utility: perplexity on generic text relative to the base model, and the answer rate on simple
questions. With `--seeds N` the whole pipeline (loop and measurement draws) runs N times; every
figure is mean ± sd over the seeds, and the notes say which differences are inside the spread.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pipeline.bench import loop_runs
from pipeline.bench.heldout import read_prompts
from pipeline.bench.methods import TOXICITY_METHODS, parse_methods, require_toxicity_target
from pipeline.bench.results import claim_out_dir, write_results
from pipeline.bench.retain import UTILITY_TEXT, measure_retain, read_retain_sets, retain_vs_base
from pipeline.bench.seeds import aggregate, flatten, spread_note
from pipeline.config import RunConfig
from pipeline.evaluation.metrics import expected_max_of_k, scores_by_prompt, toxicity_metrics
from pipeline.models import device_name
from pipeline.run.preflight import check_names
from pipeline.sampling.base import SamplingParams
from pipeline.sampling.hf import HFSampler
from pipeline.scoring.judges import make_judges

FIXED_INSTRUCTION = loop_runs.FIXED_INSTRUCTIONS["toxicity"]
# Saved with every measurement; raise it when `measure` changes: older parts are measured again
# (the loops are not run again).
MEASUREMENT_VERSION = 2
METHODS = TOXICITY_METHODS


@dataclass(frozen=True)
class Decoding:
    """How the benchmark samples its replies: K replies of up to `max_new_tokens` at `top_p`, by
    default as RealToxicityPrompts (Gehman et al. 2020: 25 generations of 20 tokens, nucleus 0.9).
    The temperature is the config's `evaluate.temperature`; `batch_size` changes the speed only."""

    samples: int = 25
    max_new_tokens: int = 20
    top_p: float = 0.9
    batch_size: int = 64

    def __post_init__(self) -> None:
        if not 0 < self.top_p <= 1:
            raise ValueError(f"toxicity benchmark: top_p must be in (0, 1], got {self.top_p}")
        for name in ("samples", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"toxicity benchmark: {name} must be at least 1, got {getattr(self, name)}")


FIGURES = [  # (key in a judge's figures, column title, format)
    ("toxicity_probability", "tox. prob.", ".3f"),
    ("expected_max_toxicity", "exp. max tox.", ".3f"),
    ("toxic_share", "toxic share", ".3f"),
    ("mean_toxicity", "mean tox.", ".3f"),
]


def columns(judges: list[str]) -> list[tuple[str, str, str]]:
    """The table's columns: every judge's four figures, then utility and cost."""
    return [
        *[(f"judges.{j}.{key}", f"{title} ({j})", fmt) for j in judges for key, title, fmt in FIGURES],
        ("utility_ppl_ratio", "ppl ratio", ".3f"),
        ("answer_rate", "answer rate", ".3f"),
        ("kept_answer_rate", "base answers kept", ".3f"),
        ("forget_samples", "forget samples", "d"),
        ("generated_tokens", "generated tokens", "d"),
        ("wall_s", "wall s", "d"),
    ]


def method_config(config: RunConfig, method: str, seed: int, out: Path) -> RunConfig:
    require_toxicity_target(config.target.kind)
    return loop_runs.method_config(config, method, seed, out)


def measure(
    model, tokenizer, config: RunConfig, heldout: dict, judges: dict, decoding: Decoding, seed: int,
    progress: bool = False,
) -> dict:  # fmt: skip
    """`decoding.samples` seeded replies to each held-out prompt, every judge's figures on them, and utility.

    The replies are kept in the result, so a judge added later scores them without new samples.
    """
    cfg = config.evaluate
    prompts = heldout["prompts"]
    sampler = HFSampler(model, tokenizer, decoding.batch_size, progress=progress)
    params = SamplingParams(
        n=decoding.samples, max_new_tokens=decoding.max_new_tokens, temperature=cfg.temperature,
        top_p=decoding.top_p, seed=seed + 7,
    )  # fmt: skip
    replies = sampler.generate(
        [p.instruction for p in prompts],
        params,
        label="held-out replies",
        prefills=[p.prefill for p in prompts],
    )
    raw: dict = {"reply_texts": replies, "replies": sum(len(group) for group in replies), "judges": {}}
    score_replies(raw, prompts, judges, heldout["judge_configs"], cfg.toxic_threshold)
    raw.update(measure_retain(model, tokenizer, sampler, heldout, batch_size=cfg.batch_size))
    return raw


def score_replies(raw: dict, prompts: list, judges: dict, configs: dict, threshold: float) -> bool:
    """Score `raw`'s replies by every judge that has not scored them as configured now (`configs`:
    name -> its settings and the threshold); True if any was (re)scored."""
    judged_with = raw.setdefault("judged_with", {})
    wanted = {name: {**configs[name], "threshold": threshold} for name in judges}
    missing = [name for name in judges if name not in raw["judges"] or judged_with.get(name) != wanted[name]]
    for name in missing:
        grouped = scores_by_prompt(judges[name], raw["reply_texts"])
        figures = toxicity_metrics(grouped, threshold)
        for style in sorted({p.style for p in prompts}):
            figures[style] = toxicity_metrics(
                [g for g, p in zip(grouped, prompts) if p.style == style], threshold
            )
        raw["judges"][name] = figures
        judged_with[name] = wanted[name]
    return bool(missing)


def examples(raw: dict, prompts: list, count: int = 12) -> list[dict]:
    """A spread of the replies, with their prompts, for the report's reader."""
    pairs = [(p, text) for p, group in zip(prompts, raw["reply_texts"]) for text in group]
    step = max(1, len(pairs) // count)
    return [{"prompt": p.text, "style": p.style, "reply": text} for p, text in pairs[::step]]


def relative_to_base(raw: dict, base: dict, judges: dict) -> dict:
    """One seed's figures with the ones that need the same seed's base model: ratios and reductions."""
    figures = {
        k: v for k, v in raw.items() if k not in ("reply_texts", "answered", "judged_with", "measured_with")
    }
    figures["judges"] = {name: dict(found) for name, found in raw["judges"].items() if name in judges}
    figures.update(retain_vs_base(raw, base))
    for judge, found in figures["judges"].items():
        for key in ("toxicity_probability", "expected_max_toxicity"):
            before = base["judges"][judge][key]
            found[f"{key}_reduction"] = 1 - found[key] / before if before else None
    return figures


def judge_floors(judges: dict, clean_texts: list[str], decoding: Decoding) -> dict:
    """Per judge, the expected maximum toxicity of `decoding.samples` replies that are all clean:
    `expected_max_of_k` over pieces of clean generic prose about as long as a reply (3 words for
    every 4 tokens). No unlearning can take a model's expected maximum below its judge's floor,
    so a reduction is read against it."""
    words = " ".join(clean_texts).split()
    size = max(round(0.75 * decoding.max_new_tokens), 1)
    pieces = [" ".join(words[i : i + size]) for i in range(0, len(words) - size + 1, size)] or [
        " ".join(words)
    ]
    floors = {
        name: round(expected_max_of_k(judge(pieces), decoding.samples), 4) for name, judge in judges.items()
    }
    return {"pieces": len(pieces), "words_each": size, "expected_max_toxicity": floors}


def run_toxicity_bench(
    config: RunConfig,
    out: Path,
    methods: list[str] = METHODS,
    seeds: int = 1,
    decoding: Decoding = Decoding(),
    prompts: str | None = None,
    prompt_column: str = "text",
    prompt_style: str = "request",
    questions: str | None = None,
    progress: bool = True,
    log=print,
    question_columns: tuple[str, str] = ("question", "answer"),
) -> dict:
    methods = parse_methods(methods, METHODS)
    require_toxicity_target(config.target.kind)
    check_names(config)
    heldout = {
        "prompts": read_prompts(prompts, config.resolve, prompt_column, prompt_style),
        **read_retain_sets(config.resolve, questions, question_columns),
        "judge_configs": {j.name: j.model_dump(mode="json") for j in config.eval_judges()},
    }
    require_toxicity_target(config.target.kind)
    all_seeds = loop_runs.checked_seeds(config, methods, seeds, out)
    setup = {"prompts": prompts or "shipped", "prompt_column": prompt_column, "prompt_style": prompt_style,
             "questions": questions or "shipped", "samples": decoding.samples,
             "heldout_sha256": _digest(heldout)}  # fmt: skip
    claim_out_dir(out, config, setup)
    judges = make_judges(config.eval_judges())
    threshold = config.evaluate.toxic_threshold
    cfg = config.evaluate
    stamp = {"version": MEASUREMENT_VERSION, "samples": decoding.samples,
             "max_new_tokens": decoding.max_new_tokens, "top_p": decoding.top_p,
             "temperature": cfg.temperature}  # fmt: skip

    prompts = heldout["prompts"]
    log(f"{len(prompts)} held-out prompts x {decoding.samples} replies per model")
    raws = loop_runs.measured_parts(
        config, out, methods, all_seeds, stamp,
        lambda model, tokenizer, seed: measure(model, tokenizer, config, heldout, judges, decoding, seed, progress),
        progress, log,
        refresh=lambda saved: score_replies(saved, prompts, judges, heldout["judge_configs"], threshold),
    )  # fmt: skip
    per_seed = {
        m: [relative_to_base(raws[m][s], raws["base"][s], judges) for s in all_seeds] for m in raws
    }  # fmt: skip
    names = list(judges)
    results = {
        "model": config.model.path,
        "device": device_name(config.model),
        "prompts": setup["prompts"],
        "n_prompts": len(heldout["prompts"]),
        "styles": {
            s: sum(p.style == s for p in heldout["prompts"]) for s in {p.style for p in heldout["prompts"]}
        },
        "n_questions": len(heldout["questions"]),
        "samples_per_prompt": decoding.samples,
        "max_new_tokens": decoding.max_new_tokens,
        "top_p": decoding.top_p,
        "seeds": all_seeds,
        "judges": names,
        "reward_judge": config.target.judge.name,
        "columns": columns(names),
        "base": aggregate(per_seed["base"]),
        "methods": {m: aggregate(per_seed[m]) for m in methods if m != "base"},
        "per_seed": per_seed,
        "examples": {m: examples(raws[m][all_seeds[0]], heldout["prompts"]) for m in raws},
        "judge_floor": judge_floors(judges, heldout["utility_texts"], decoding),
    }
    write_results(
        out,
        results,
        columns(names),
        title=f"Toxicity benchmark: model {config.model.path}",
        notes=notes(results, config, per_seed),
        bars=[(f"judges.{j}.{k}", f"{t} ({j})") for j in names for k, t, _ in FIGURES[:2]]
        + [("utility_ppl_ratio", "perplexity / base"), ("answer_rate", "simple-question answer rate")],
    )
    return results


def _digest(heldout: dict) -> str:
    """What was measured on: other prompts or questions make another benchmark, not a resumable one."""
    lines = [f"{p.style}\t{p.text}" for p in heldout["prompts"]]
    lines += [f"{q.question}\t{'|'.join(q.answers)}" for q in heldout["questions"]]
    return hashlib.sha256("\n".join(lines + heldout["utility_texts"]).encode()).hexdigest()


def notes(results: dict, config: RunConfig, per_seed: dict) -> list[str]:
    styles = ", ".join(f"{n} {s}" for s, n in sorted(results["styles"].items()))
    lines = [
        f"{results['n_prompts']} held-out prompts ({styles}; source: {results['prompts']}), "
        f"{results['samples_per_prompt']} sampled replies each at temperature {config.evaluate.temperature}, "
        f"up to {results['max_new_tokens']} new tokens; seeds {results['seeds']} (loop and measurement draws).",
        f"Judges: {', '.join(results['judges'])}; the loop's reward is {results['reward_judge']}. A reply is toxic "
        f"at {config.evaluate.toxic_threshold} or above. tox. prob.: share of prompts with at least one toxic reply; "
        "exp. max tox.: the mean over prompts of the most toxic reply's score (Gehman et al. 2020).",
        f"Utility: perplexity on held-out generic text ({UTILITY_TEXT}) / base model's; answer rate on "
        f"{results['n_questions']} simple held-out questions (greedy reply contains the answer), and the share "
        "of those the same seed's base answers that are still answered.",
        f"rr_fixed: one hand-written instruction ({FIXED_INSTRUCTION}) with the same samples per iteration; "
        "random: instructions drawn uniformly from the pool. Wall time and generated tokens: the whole loop.",
        "Figures are mean ± sd over the seeds (RealToxicityPrompts' ± is over prompts); its decoding is 25 "
        f"replies of 20 tokens at top-p 0.9, here {results['samples_per_prompt']} of {results['max_new_tokens']} "
        f"at top-p {results['top_p']}, and expected maximum toxicity grows "
        "with all three, so compare these figures with each other, not with the paper's.",
    ]
    floor = results["judge_floor"]
    base_max = {j: results["base"].get(f"judges.{j}.expected_max_toxicity") for j in results["judges"]}
    lines.append(
        f"Each judge's floor: the expected maximum of {results['samples_per_prompt']} pieces of clean generic "
        f"prose ({UTILITY_TEXT}, {floor['pieces']} pieces of {floor['words_each']} words), which no model "
        "can go below: "
        + "; ".join(
            f"{j} {v:.3f}"
            + (
                f" (the base's {base_max[j]:.3f} can fall by at most {1 - v / base_max[j]:.0%})"
                if base_max.get(j)
                else ""
            )
            for j, v in floor["expected_max_toxicity"].items()
        )  # fmt: skip
        + "."
    )

    def seeds_of(method: str, judge: str, figure: str) -> list[float]:
        return [flatten(r)[f"judges.{judge}.{figure}"] for r in per_seed[method]]

    for method in results["methods"]:
        for judge in results["judges"]:
            values = seeds_of(method, judge, "toxicity_probability")
            reference = seeds_of("base", judge, "toxicity_probability")
            lines.append(spread_note(f"{method} tox. prob. ({judge})", values, reference, "base"))
    # The ablations beside the loop: whether choosing instructions made rr's toxicity lower.
    ablations = [m for m in results["methods"] if m != "rr"] if "rr" in results["methods"] else []
    for other in ablations:
        for judge in results["judges"]:
            for figure, label in (
                ("toxicity_probability", "tox. prob."),
                ("expected_max_toxicity", "exp. max"),
            ):
                values, reference = seeds_of("rr", judge, figure), seeds_of(other, judge, figure)
                lines.append(spread_note(f"rr {label} ({judge})", values, reference, other))
    return lines
