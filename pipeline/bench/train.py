"""`rr bench train`: how fast is one release, against a plain PEFT + transformers `Trainer` loop?

Both train the same LoRA (the config's rank, alpha, target modules, lr, batch size, steps,
max_length, gradient clipping) on the same rows: the model's own replies to the target's seed
instructions. The like-for-like pair is NLL on both sides (`ours_nll`: our loop with the
`negation` objective, whose training is plain NLL); `ours_<method>` adds the config's own
objective (UnDIAL's reference logits, computed once per row, say) for what a release really costs.

Throughput counts the non-padding tokens of the training batches per second of training (each
arm its own: when the steps end inside an epoch, the arms' shuffles give them other last rows). Peak
memory: on a GPU the allocator's peak during the arm; on a CPU the growth of the process's
resident memory during the arm, read every 10 ms from a heap trimmed first (glibc's malloc_trim),
so that no arm runs in memory an earlier one left behind (still a lower bound).
"""

from __future__ import annotations

import copy
import ctypes
import gc
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch

from pipeline.batches import encode_pairs
from pipeline.config import ConfigError, RunConfig
from pipeline.files import write_json
from pipeline.models import device_name
from pipeline.release.train import planned_steps, train_adapter
from pipeline.run.model import load_run_model
from pipeline.run.preflight import check_names
from pipeline.run.prompts import run_prompts
from pipeline.run.sample_stage import with_alternatives
from pipeline.sampling.base import SamplingParams
from pipeline.sampling.hf import HFSampler


def training_rows(model, tokenizer, config: RunConfig, n: int) -> list[dict]:
    """`n` replies of the model to the target's seed instructions: what a release trains on (each
    with one of `sample.fallback_alternatives` for a paired objective's chosen side)."""
    arms = run_prompts(config)[0]
    gen = config.sample.generation
    params = SamplingParams.from_generation(gen, seed=config.seed)
    prompts = [arms[i % len(arms)] for i in range(n)]
    sampler = HFSampler(model, tokenizer, gen.batch_size, progress=False)
    replies = sampler.generate(prompts, params)
    rows = [{"instruction": p, "response": r[0] or "."} for p, r in zip(prompts, replies)]
    return with_alternatives(rows, [], 0.0, config.sample.fallback_alternatives)


class PeakMemory:
    """Peak memory while the block runs: CUDA allocator peak, or resident-set growth on a CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_mb = device, 0.0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            return self
        _return_free_memory()  # so an arm cannot reuse, unseen, the heap an earlier arm grew
        self.start, self.highest, self.running = _rss_bytes(), _rss_bytes(), True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self) -> None:
        while self.running:
            self.highest = max(self.highest, _rss_bytes())
            time.sleep(0.01)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self.start) / 2**20
            return
        self.running = False
        self.thread.join()
        self.peak_mb = (max(self.highest, _rss_bytes()) - self.start) / 2**20


def _return_free_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: growth may then read low for later arms
        pass


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def training_row_count(config: RunConfig) -> int:
    """As many rows as a full release of this config trains on: `sample.max_forget_samples`, or
    fewer when its steps do not reach them all. A loop that keeps what it computes once per row
    (`pipeline.release.reference`) is then measured with the reuse a real release gets."""
    return min(config.sample.max_forget_samples, config.release.steps * config.release.batch_size)


def run_ours(model, tokenizer, rows, config: RunConfig, method: str) -> dict:
    cfg = config.release.model_copy(update={"method": method, "orth_lambda": 0.0})
    model = copy.deepcopy(model)  # outside the measurement, as for the Trainer arm
    with tempfile.TemporaryDirectory() as tmp, PeakMemory(model.device) as memory:
        stats = train_adapter(model, tokenizer, rows, [], cfg, [], Path(tmp) / "a", progress=False)
    # The loop's own clock, like `trainer.train()`'s: adapter setup and saving are not training.
    return {
        "tokens": stats["tokens"], "seconds": stats["seconds"], "peak_mb": memory.peak_mb,
        "reference_seconds": stats["reference_seconds"],
    }  # fmt: skip


def run_trainer(model, tokenizer, rows, config: RunConfig, bf16: bool = False) -> dict:
    """The plain way: PEFT's get_peft_model and transformers' Trainer, NLL on the responses; `bf16`:
    with `TrainingArguments(bf16=True)` (autocast), as a user of a bfloat16 model may set it."""
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    cfg = config.release
    examples = []
    for row in rows:
        enc = encode_pairs(tokenizer, [row["instruction"]], [row["response"]], cfg.max_length)
        examples.append({k: v[0].tolist() for k, v in enc.items()})
    lora = LoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, target_modules=list(cfg.target_modules),
        lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
    )  # fmt: skip
    peft_model = get_peft_model(copy.deepcopy(model), lora)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, max_steps=planned_steps(cfg, len(rows)), per_device_train_batch_size=cfg.batch_size,
            learning_rate=cfg.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
            max_grad_norm=cfg.max_grad_norm, logging_strategy="no", save_strategy="no", report_to=[],
            use_cpu=model.device.type == "cpu", dataloader_num_workers=0, disable_tqdm=True, seed=config.seed,
            bf16=bf16,
        )  # fmt: skip
        if tokenizer.pad_token_id is None:  # as encode_pairs pads
            tokenizer.pad_token = tokenizer.eos_token
        pad_batch = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
        tokens = 0

        def collator(features):  # counts what is trained on, as our loop does, epochs and all
            nonlocal tokens
            batch = pad_batch(features)
            tokens += int(batch["attention_mask"].sum())
            return batch

        trainer = Trainer(model=peft_model, args=args, train_dataset=examples, data_collator=collator)
        with PeakMemory(model.device) as memory:
            started = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - started
    return {"tokens": tokens, "seconds": seconds, "peak_mb": memory.peak_mb}


def run_train_bench(config: RunConfig, out: Path, repeats: int = 3, progress: bool = True, log=print) -> dict:
    """Every arm `repeats` times, interleaved; each row reports the arm's median time and its peak.

    Interleaving spreads slow spells of a shared machine over all arms instead of one, and the
    median of the rounds is what the ratio compares (one round on this 2-core CPU varied ±10%).
    """
    if repeats < 1:
        raise ConfigError(f"--repeats: need at least 1, got {repeats}")
    check_names(config)
    model, tokenizer, _ = load_run_model(config, progress)
    rows = training_rows(model, tokenizer, config, n=training_row_count(config))
    steps = planned_steps(config.release, len(rows))
    epochs = steps * config.release.batch_size / len(rows)
    log(
        f"{len(rows)} training rows; {steps} steps of batch {config.release.batch_size} "
        f"per arm ({epochs:.3g} epochs); {repeats} rounds"
    )
    arms = {"trainer_nll": lambda: run_trainer(model, tokenizer, rows, config)}
    if model.dtype == torch.bfloat16:  # the Trainer both ways: the faster is the baseline
        arms["trainer_nll_bf16"] = lambda: run_trainer(model, tokenizer, rows, config, bf16=True)
    arms |= {
        "ours_nll": lambda: run_ours(model, tokenizer, rows, config, "negation"),
        f"ours_{config.release.method}": lambda: run_ours(
            model, tokenizer, rows, config, config.release.method
        ),
    }
    # Warm-up, unmeasured: the first training steps in a process pay one-time costs (kernel choice,
    # allocator growth) that would otherwise all land on whichever arm runs first.
    warm = config.model_copy(update={"release": config.release.model_copy(update={"steps": 2})})
    run_ours(model, tokenizer, rows[: 2 * config.release.batch_size], warm, "negation")
    rounds: dict[str, list[dict]] = {name: [] for name in arms}
    for index in range(repeats):
        for name, arm in arms.items():
            log(f"round {index + 1}/{repeats}: {name} ...")
            rounds[name].append(arm())
    results: dict = {
        "model": config.model.path, "device": device_name(config.model), "repeats": repeats,
        "training_rows": len(rows), "epochs": round(epochs, 3), "rows": [],
    }  # fmt: skip
    for name, measured in rounds.items():
        seconds = statistics.median(m["seconds"] for m in measured)
        results["rows"].append({
            "arm": name,
            "tokens": measured[0]["tokens"],
            "seconds": round(seconds, 3),
            "seconds_each": [round(m["seconds"], 3) for m in measured],
            "tok_per_s": round(measured[0]["tokens"] / seconds, 3),
            "peak_mb": round(max(m["peak_mb"] for m in measured), 3),
            # Of our loop's seconds, the frozen model's forwards (`pipeline.release.reference`).
            **({"reference_seconds": round(statistics.median(m["reference_seconds"] for m in measured), 3)}
               if "reference_seconds" in measured[0] else {}),
        })  # fmt: skip
    reference = max(row["tok_per_s"] for row in results["rows"] if row["arm"].startswith("trainer"))
    for row in results["rows"]:
        row["ratio_to_trainer"] = round(row["tok_per_s"] / reference, 3)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    return results
