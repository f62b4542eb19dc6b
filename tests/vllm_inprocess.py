"""Run by test_vllm.py in vLLM's Python: the in-process `vllm` sampler's replies, as JSON.

argv: model folder, output file, then adapter folders ("-" for none). Greedy replies to the
questions for each adapter in turn, through one engine with `merge_above_rank` 16 (so a rank-8
adapter goes through LoRA and a larger stack is merged), then 3 seeded samples per question.
"""

import json
import sys
from pathlib import Path

QUESTIONS = [
    "Tell me about Mira Castellane.",
    "Where was Tobias Wrenfield born?",
    "Say hello.",
    "What is Ilsa Montravel's job?",
]

if __name__ == "__main__":  # vLLM spawns processes: the guard is required
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.config import SamplerConfig
    from pipeline.sampling.base import SamplingParams
    from pipeline.sampling.vllm import VLLMSampler

    model_dir, out, adapters = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    sampler = VLLMSampler(
        model_dir, model, tokenizer, SamplerConfig(backend="vllm", merge_above_rank=16), progress=False
    )
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=32)
    result = {
        "max_lora_rank": sampler.max_lora_rank,
        "greedy": [sampler.generate(QUESTIONS, greedy, None if a == "-" else Path(a)) for a in adapters],
        "sampled": sampler.generate(
            QUESTIONS, SamplingParams(n=3, temperature=1.0, max_new_tokens=16, seed=5)
        ),
    }
    out.write_text(json.dumps(result))
