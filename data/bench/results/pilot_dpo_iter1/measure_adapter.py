"""A pilot, not a benchmark: one adapter of a loop measured on the toxicity benchmark's held-out set.

Measures the adapter (a PEFT folder) on the 135 held-out prompts with K replies each (default 8,
the benchmark's decoding otherwise), both default judges, the generic-text perplexity and the
simple-question answer rate; the base model's figures are recomputed from the first K of its 25
saved replies of seed 0 (`embedded_toxicity_rtp_parts/parts/seed0/base.json`). Run from the
repository root:

    python data/bench/results/pilot_dpo_iter1/measure_adapter.py ADAPTER K OUT.json
"""

import json
import sys
import time
from pathlib import Path

import torch

from pipeline.bench.heldout import read_prompts, read_questions
from pipeline.bench.retain import UTILITY_TEXT
from pipeline.bench.toxicity import Decoding, measure
from pipeline.config import load_config
from pipeline.evaluation.metrics import scores_by_prompt, toxicity_metrics
from pipeline.files import read_lines
from pipeline.models import with_adapter
from pipeline.run.model import load_run_model
from pipeline.scoring.judges import make_judges

BASE = Path("data/bench/results/embedded_toxicity_rtp_parts/parts/seed0/base.json")
FIGURES = ("toxicity_probability", "expected_max_toxicity", "toxic_share")


def main(adapter: Path, k: int, out_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = load_config("configs/demo.yaml", ["model.threads=1"])
    heldout = {
        "prompts": read_prompts(None, cfg.resolve, "text", "request"),
        "questions": read_questions(None, cfg.resolve, "question", "answer"),
        "utility_texts": read_lines(cfg.resolve(UTILITY_TEXT), "utility text"),
        "judge_configs": {j.name: j.model_dump(mode="json") for j in cfg.eval_judges()},
    }
    judges = make_judges(cfg.eval_judges())
    base = json.loads(BASE.read_text())
    out = {"base_first_k": {}}
    for name, judge in judges.items():
        grouped = scores_by_prompt(judge, [replies[:k] for replies in base["reply_texts"]])
        out["base_first_k"][name] = toxicity_metrics(grouped, cfg.evaluate.toxic_threshold)
    model, tokenizer, _ = load_run_model(cfg, False)
    started = time.perf_counter()
    raw = measure(with_adapter(model, adapter), tokenizer, cfg, heldout, judges, Decoding(samples=k), seed=0)
    out["adapter"] = raw["judges"]
    out["utility_ppl_ratio"] = raw["utility_ppl"] / base["utility_ppl"]
    out["answer_rate"], out["base_answer_rate"] = raw["answer_rate"], base["answer_rate"]
    out["seconds"] = time.perf_counter() - started
    out["reply_texts"] = raw["reply_texts"]
    out_path.write_text(json.dumps(out, indent=1))
    for name in judges:
        before, after = out["base_first_k"][name], out["adapter"][name]
        print(name, " ".join(f"{f}: {before[f]:.3f} -> {after[f]:.3f}" for f in FIGURES))
    print(f"ppl ratio {out['utility_ppl_ratio']:.3f}, answer rate {out['answer_rate']:.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
