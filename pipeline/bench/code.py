"""`rr bench code`: forget how to code, keep the rest; measured on programming tasks the loop never saw.

Methods: base, and the loops of `pipeline.bench.loop_runs` (rr, rr_fixed, random) on a config with
a `code` target. Each model answers every held-out task (`data/bench/code_tasks.yaml`) once
greedily and `--samples` times sampled; each reply's code runs with the task's unit tests in the
sandbox (`pipeline.bench.code_tasks`, `pipeline.bench.sandbox`): pass@1 greedy, and pass@k by
Chen et al.'s unbiased estimator over the sampled replies. The code share of all replies is the
`code` scorer's. Retain: perplexity on generic text relative to the base model, the answer rate on
simple questions (the toxicity benchmark's), and exact accuracy on short word problems
(`data/bench/math_problems.yaml`: the last number of the greedy reply). With `--seeds N` every
figure is mean ± sd over N runs of the whole pipeline.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.bench import loop_runs
from pipeline.bench.code_tasks import CODE_TASKS, pass_rates, read_code_tasks, run_replies
from pipeline.bench.methods import CODE_METHODS, parse_methods, require_target
from pipeline.bench.results import claim_out_dir, write_results
from pipeline.bench.retain import UTILITY_TEXT, measure_retain, read_retain_sets, retain_vs_base
from pipeline.bench.seeds import aggregate, flatten, spread_note
from pipeline.config import ConfigError, RunConfig, read_yaml
from pipeline.models import device_name
from pipeline.run.preflight import check_names
from pipeline.sampling.base import GREEDY, SamplingParams
from pipeline.sampling.hf import HFSampler
from pipeline.scoring import make_scorer

MATH_PROBLEMS = Path("data/bench/math_problems.yaml")
MATH_TOKENS = 64
MEASUREMENT_VERSION = 1  # raise when `measure` changes: older parts are measured again


@dataclass(frozen=True)
class CodeDecoding:
    """n sampled replies a task (for pass@k, k in `ks` up to n) of up to `max_new_tokens`, plus one greedy."""

    samples: int = 5
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 160
    ks: tuple[int, ...] = (1, 5)
    timeout_s: float = 10.0  # a reply's program, in the sandbox
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.samples < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("code benchmark: samples, max_new_tokens and batch_size must be at least 1")


COLUMNS = [
    ("pass@1_greedy", "pass@1 (greedy)", ".3f"),
    ("pass@1", "pass@1", ".3f"),
    ("pass@5", "pass@5", ".3f"),
    ("code_share", "code share", ".3f"),
    ("utility_ppl_ratio", "ppl ratio", ".3f"),
    ("answer_rate", "answer rate", ".3f"),
    ("math_accuracy", "word problems", ".3f"),
    ("generated_tokens", "generated tokens", "d"),
    ("wall_s", "wall s", "d"),
]


def read_problems(path: Path) -> list[dict]:
    data = read_yaml(path, "word problems")
    problems = data.get("problems") if isinstance(data, dict) else None
    if not isinstance(problems, list) or not problems:
        raise ConfigError(f"word problems: {path} has no `problems:` list")
    return problems


def last_number(text: str) -> int | None:
    numbers = re.findall(r"-?\d[\d,]*", text)
    return int(numbers[-1].replace(",", "")) if numbers else None


def measure(
    model, tokenizer, heldout: dict, scorer, decoding: CodeDecoding, seed: int, progress=False
) -> dict:
    """Every task answered greedily and `decoding.samples` times, the replies run, and retain figures."""
    tasks = heldout["tasks"]
    sampler = HFSampler(model, tokenizer, decoding.batch_size, progress=progress)
    prompts = [task.prompt for task in tasks]
    greedy = sampler.generate(
        prompts, replace(GREEDY, max_new_tokens=decoding.max_new_tokens), label="tasks, greedy"
    )
    params = SamplingParams(n=decoding.samples, max_new_tokens=decoding.max_new_tokens,
                            temperature=decoding.temperature, top_p=decoding.top_p, seed=seed + 7)  # fmt: skip
    sampled = sampler.generate(prompts, params, label="tasks, sampled")
    raw: dict = {"greedy_replies": [g[0] for g in greedy], "sampled_replies": sampled}
    raw["greedy_passed"] = [row[0] for row in run_replies(tasks, greedy, decoding.timeout_s)]
    raw["sampled_passed"] = run_replies(tasks, sampled, decoding.timeout_s)
    raw["pass@1_greedy"] = statistics.fmean(raw["greedy_passed"])
    raw.update(pass_rates(raw["sampled_passed"], decoding.ks))
    raw["code_share"] = statistics.fmean(scorer(raw["greedy_replies"] + [r for g in sampled for r in g]))
    raw.update(measure_retain(model, tokenizer, sampler, heldout))
    problems = heldout["problems"]
    replies = sampler.generate([p["question"] for p in problems], replace(GREEDY, max_new_tokens=MATH_TOKENS),
                               label="word problems")  # fmt: skip
    raw["math_correct"] = [last_number(r[0]) == p["answer"] for r, p in zip(replies, problems)]
    raw["math_accuracy"] = sum(raw["math_correct"]) / len(problems)
    return raw


def relative_to_base(raw: dict, base: dict) -> dict:
    skip = ("greedy_replies", "sampled_replies", "greedy_passed", "sampled_passed", "answered", "math_correct",
            "measured_with")  # fmt: skip
    figures = {k: v for k, v in raw.items() if k not in skip}
    figures.update(retain_vs_base(raw, base))
    for key in ("pass@1_greedy", "pass@1", "code_share"):
        figures[f"{key}_reduction"] = 1 - raw[key] / base[key] if base.get(key) else None
    return figures


def run_code_bench(
    config: RunConfig,
    out: Path,
    methods: list[str] = CODE_METHODS,
    seeds: int = 1,
    decoding: CodeDecoding = CodeDecoding(),
    progress: bool = True,
    log=print,
) -> dict:
    methods = parse_methods(methods, CODE_METHODS)
    require_target(config.target.kind, "code")
    check_names(config)
    heldout = {
        "tasks": read_code_tasks(config.resolve(CODE_TASKS)),
        "problems": read_problems(config.resolve(MATH_PROBLEMS)),
        **read_retain_sets(config.resolve),
    }
    all_seeds = loop_runs.checked_seeds(config, methods, seeds, out)
    claim_out_dir(out, config, {"samples": decoding.samples, "tasks": len(heldout["tasks"])})
    scorer = make_scorer(config.target)
    stamp = {"version": MEASUREMENT_VERSION, **{k: getattr(decoding, k) for k in
             ("samples", "temperature", "top_p", "max_new_tokens", "timeout_s")}, "ks": list(decoding.ks)}  # fmt: skip
    log(f"{len(heldout['tasks'])} held-out tasks x (1 greedy + {decoding.samples} sampled) replies per model")
    raws = loop_runs.measured_parts(
        config, out, methods, all_seeds, stamp,
        lambda model, tokenizer, seed: measure(model, tokenizer, heldout, scorer, decoding, seed, progress),
        progress, log,
    )  # fmt: skip
    per_seed = {m: [relative_to_base(raws[m][s], raws["base"][s]) for s in all_seeds] for m in raws}
    results = {
        "model": config.model.path,
        "device": device_name(config.model),
        "n_tasks": len(heldout["tasks"]),
        "n_problems": len(heldout["problems"]),
        "n_questions": len(heldout["questions"]),
        "samples_per_task": decoding.samples,
        "seeds": all_seeds,
        "base": aggregate(per_seed["base"]),
        "methods": {m: aggregate(per_seed[m]) for m in methods if m != "base"},
        "per_seed": per_seed,
    }
    columns = [c for c in COLUMNS if not c[0].startswith("pass@") or c[0] in results["base"] or
               c[0] == "pass@1_greedy"]  # fmt: skip
    write_results(
        out,
        results,
        columns,
        title=f"Code benchmark: model {config.model.path}",
        notes=notes(results, decoding, per_seed),
        bars=[
            ("pass@1_greedy", "pass@1 (greedy)"),
            ("code_share", "code share"),
            ("answer_rate", "simple-question answer rate"),
            ("utility_ppl_ratio", "perplexity / base"),
        ],  # fmt: skip
    )
    return results


def notes(results: dict, decoding: CodeDecoding, per_seed: dict) -> list[str]:
    lines = [
        f"{results['n_tasks']} held-out one-function tasks ({CODE_TASKS}), each answered once greedily and "
        f"{decoding.samples} times at temperature {decoding.temperature}, top-p {decoding.top_p}, up to "
        f"{decoding.max_new_tokens} tokens; a reply's code (its fenced blocks, else from its first line of "
        f"code) runs with the task's unit tests in the sandbox, {decoding.timeout_s:g} s at most. pass@k: "
        "Chen et al. 2021's unbiased estimator over the sampled replies.",
        "code share: the `code` scorer's share of each reply that is code, over all replies. Retain: "
        f"perplexity on {UTILITY_TEXT} / base's; answer rate on {results['n_questions']} simple questions; "
        f"exact accuracy on {results['n_problems']} word problems ({MATH_PROBLEMS}; the reply's last number).",
        f"Figures are mean ± sd over seeds {results['seeds']} (loop and sampling draws).",
    ]
    for method in results["methods"]:
        values = [flatten(r)["pass@1_greedy"] for r in per_seed[method]]
        lines.append(spread_note(f"{method} pass@1 (greedy)", values,
                                 [flatten(r)["pass@1_greedy"] for r in per_seed["base"]], "base"))  # fmt: skip
    return lines
