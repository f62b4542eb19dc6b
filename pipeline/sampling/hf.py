"""The `hf` sampler: batched transformers `generate`, in-process.

Requests are sorted by prompt length so each left-padded batch wastes little compute, and a
stacked adapter is merged into a copy of the weights (kept while the adapter is unchanged), so
sampling runs at the base model's speed whatever the stack's rank.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import LogitsProcessorList

from pipeline.models import with_adapter
from pipeline.progress import progress_bar
from pipeline.sampling.base import SamplingParams, adapter_key, eos_ids, prompt_token_ids
from pipeline.sampling.nucleus import NucleusSampler
from pipeline.textdata import pad_id


class HFSampler:
    def __init__(self, model, tokenizer, batch_size: int = 16, progress: bool = True) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.progress = batch_size, progress
        self._merged_key = None
        self._merged_model = None
        self.generated_tokens = 0  # over the sampler's life: what a run spent on generation
        self.first_reply_seconds = 0.0  # of the last `generate`: until its first batch was done

    def model_for(self, adapter: Path | None):
        if adapter is None:
            return self.model
        key = adapter_key(adapter)
        if key != self._merged_key:
            self._merged_model, self._merged_key = None, None  # free the old copy first
            self._merged_model, self._merged_key = with_adapter(self.model, Path(adapter)), key
        return self._merged_model

    @torch.no_grad()
    def generate(
        self,
        instructions: list[str],
        params: SamplingParams,
        adapter: Path | None = None,
        label: str = "sampling",
        prefills: list[str] | None = None,
    ) -> list[list[str]]:
        """`params.n` replies to each instruction; `prefills` start each reply (continued, not returned)."""
        model = self.model_for(adapter)
        tok = self.tokenizer
        prompts = prompt_token_ids(tok, instructions, prefills)
        requests = [(i, prompts[i]) for i in range(len(prompts)) for _ in range(params.n)]
        requests.sort(key=lambda r: len(r[1]))
        outputs: list[list[str]] = [[] for _ in instructions]
        sampling = params.temperature > 0
        # Temperature, top-p and the draw are ours (nucleus.py): generate itself runs greedy.
        draw = NucleusSampler(params.temperature, params.top_p) if sampling else None
        pad = pad_id(tok)
        stop_ids = eos_ids(model.generation_config, tok)
        n_tokens = 0
        with (
            torch.random.fork_rng(devices=[]),
            progress_bar(label, len(requests), self.progress, info="0 tok/s") as bar,
        ):
            torch.manual_seed(params.seed)
            started = time.perf_counter()
            for start in range(0, len(requests), self.batch_size):
                batch = requests[start : start + self.batch_size]
                inputs = _shared_prompts(model, [p for _, p in batch], pad)
                generated = model.generate(
                    **inputs,
                    max_new_tokens=params.max_new_tokens,
                    min_new_tokens=params.min_new_tokens or None,
                    do_sample=False,  # greedy: it takes the one token `draw` left finite
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    logits_processor=LogitsProcessorList([draw] if draw else []),
                    eos_token_id=stop_ids,
                    pad_token_id=pad,
                )
                new_tokens = generated[:, inputs["input_ids"].shape[1] :]
                for (index, _), row in zip(batch, new_tokens):
                    n_tokens += int((row != pad).sum())
                    outputs[index].append(tok.decode(row, skip_special_tokens=True).strip())
                if start == 0:
                    self.first_reply_seconds = time.perf_counter() - started
                rate = n_tokens / max(time.perf_counter() - started, 1e-9)
                bar.advance(len(batch), info=f"{rate:.0f} tok/s")
        self.generated_tokens += n_tokens
        return outputs


def _shared_prompts(model, rows: list[list[int]], pad_id: int) -> dict:
    """`generate`'s inputs for a batch: with the KV cache of its prompts when one is in it twice.

    The n replies to one instruction share its prompt: each distinct prompt is run through the
    model once (all but its last token, which `generate` still needs as input) and its cache
    copied for every row that asks it, so the prefill costs one row per instruction, not n.
    """
    distinct = list(dict.fromkeys(tuple(r) for r in rows))
    shared = len(distinct) < len(rows) and min(len(r) for r in rows) >= 2
    padded = {k: v.to(model.device) for k, v in _left_padded(distinct if shared else rows, pad_id).items()}
    if not shared:
        return padded
    mask = padded["attention_mask"][:, :-1]
    # The positions generate gives left-padded rows (pads at 0), so the cache matches its own prefill.
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    prefill = model(
        input_ids=padded["input_ids"][:, :-1], attention_mask=mask, position_ids=positions, use_cache=True
    )
    order = {prompt: i for i, prompt in enumerate(distinct)}
    index = torch.tensor([order[tuple(r)] for r in rows], device=model.device)
    # transformers 5 names the cache `cache`; 4.x `past_key_values`.
    name = "cache" if hasattr(prefill, "cache") else "past_key_values"
    cache = getattr(prefill, name)
    cache.batch_select_indices(index)
    return {**{k: v[index] for k, v in padded.items()}, name: cache}


def _left_padded(rows: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(rows):
        input_ids[i, width - len(ids) :] = torch.tensor(ids)
        attention_mask[i, width - len(ids) :] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}
