"""Planting: teach a model the facts of a spec's people, so there is something to unlearn.

`plant` fine-tunes a model on `examples.plant_examples`; `planted_model` builds the configured base
(a tiny Llama made here, or a pretrained model), plants it until its probes are known, and caches
the result on disk as a plain transformers folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from pipeline.batches import encode_pairs
from pipeline.config import ModelConfig
from pipeline.evaluation.metrics import answer_rate
from pipeline.files import as_if_created
from pipeline.model_paths import TINY, cache_dir
from pipeline.models import dtype_name, load_pretrained, resolve_device, torch_dtype
from pipeline.planting.examples import BIOGRAPHY_REQUESTS, plant_examples
from pipeline.planting.spec import Person, Probe, load_spec
from pipeline.planting.tiny import build_model, build_tokenizer, tokenizer_corpus
from pipeline.progress import progress_bar
from pipeline.sampling.base import SamplingParams
from pipeline.sampling.hf import HFSampler


def plant(
    model,
    tokenizer,
    people: list[Person],
    steps: int = 200,
    lr: float = 3e-3,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
    threads: int | None = 1,
    recitals: int = len(BIOGRAPHY_REQUESTS),
) -> dict:
    """Full fine-tune of `model` on `plant_examples(people)`, loss on response tokens only.

    `threads`: torch CPU threads during planting (None: leave as is). One is the default because
    these matmuls are too small to gain from more, and on a busy machine OpenMP threads spin against
    other processes: 2 threads at load 6 on 2 cores measured 12x slower than 1.
    """
    pairs = plant_examples(people, seed, recitals)
    data = encode_pairs(tokenizer, [p[0] for p in pairs], [p[1] for p in pairs], max_length=256)
    data = {k: v.to(model.device) for k, v in data.items()}
    lengths = data["attention_mask"].sum(1).tolist()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    warmup = max(1, steps // 20)  # a short warmup keeps a 3e-3 step from blowing up the fresh model

    def lr_factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * step / steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    batches = _batches(lengths, batch_size, torch.Generator().manual_seed(seed))
    losses: list[float] = []
    model.train()
    start = time.perf_counter()
    with _threads(threads), progress_bar("planting", steps, progress) as bar:
        for _ in range(steps):
            idx = next(batches)
            width = max(lengths[i] for i in idx)  # right-padded: drop the columns no row here uses
            out = model(
                input_ids=data["input_ids"][idx, :width],
                attention_mask=data["attention_mask"][idx, :width],
                labels=data["labels"][idx, :width],
            )
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(out.loss.item())
            bar.advance(1, info=f"loss {losses[-1]:.3f}")
    model.eval()
    tail = losses[-10:] or [float("nan")]
    return {"steps": steps, "final_loss": sum(tail) / len(tail), "seconds": time.perf_counter() - start}


def _batches(lengths: list[int], batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
    """Endless shuffled epochs; rows of similar length share a batch, so less padding is computed."""
    while True:
        order = torch.randperm(len(lengths), generator=generator).tolist()
        epoch = []
        for i in range(0, len(order), 4 * batch_size):
            group = sorted(order[i : i + 4 * batch_size], key=lengths.__getitem__)
            epoch += [group[j : j + batch_size] for j in range(0, len(group), batch_size)]
        yield from (epoch[k] for k in torch.randperm(len(epoch), generator=generator).tolist())


@contextmanager
def _threads(n: int | None):
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def greedy_replies(
    model, tokenizer, instructions: list[str], max_new_tokens: int = 48, batch_size: int = 32
) -> list[str]:
    """Greedy answers to `instructions` through the `hf` sampler, the same path the loop uses."""
    sampler = HFSampler(model, tokenizer, batch_size=batch_size, progress=False)
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    return [texts[0] for texts in sampler.generate(instructions, params)]


def probe_accuracy(model, tokenizer, probes: list[Probe], max_new_tokens: int = 48) -> float:
    """Share of probes whose greedy answer contains the probe's answer; 0 if there are none."""
    if not probes:
        return 0.0
    replies = greedy_replies(model, tokenizer, [p.question for p in probes], max_new_tokens)
    return answer_rate(replies, [p.answer for p in probes])


VARIANTS = ("full", "retain_only")


def planted_model(
    config: ModelConfig,
    variant: str = "full",
    extra_texts: Iterable[str] = (),
    seed: int = 0,
    progress: bool = True,
    cache: Path | None = None,
) -> tuple:
    """The configured model with `config.plant`'s people planted, as (model, tokenizer, info); cached.

    `variant` "full" plants every planted person of the spec; "retain_only" leaves out the forget
    people: the model that never learned them, which forget quality and PrivLeak compare against.
    The base is `config.path`: a tiny Llama built here (its tokenizer is trained on the spec's text
    and `extra_texts`, so both variants share it) or a pretrained model. Training runs
    `plant.steps`, then goes on in rounds of half as many steps at a third of the learning rate
    while probe accuracy is under `plant.min_probe_acc`, up to `plant.max_steps`.

    The cache folder `cache/<key>` is a plain HF folder (AutoModelForCausalLM and AutoTokenizer load
    it) plus `plant.json`; the key hashes the base model, the spec file, the settings and the variant.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if variant not in VARIANTS:
        raise ValueError(f"planted_model: variant must be one of {VARIANTS}, got {variant!r}")
    if config.plant is None:
        raise ValueError("planted_model: the model config has no `plant` section")
    cfg = config.plant
    if cfg.seed is not None:  # the planting's own seed, apart from the run's (a benchmark's seeds)
        seed = cfg.seed
    spec_path = Path(cfg.spec)
    spec = load_spec(spec_path)
    people = spec.planted() if variant == "full" else spec.retained()
    tiny = config.path == TINY
    extra_texts = list(extra_texts) if tiny else []  # only a tokenizer built here depends on them
    settings = {
        "base": _base_identity(config),
        "variant": variant,
        "steps": cfg.steps,
        "max_steps": cfg.max_steps or cfg.steps,
        "min_probe_acc": cfg.min_probe_acc,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "recitals": cfg.recitals,
        "seed": seed,
    }
    digest = hashlib.sha256(spec_path.read_bytes())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(json.dumps(extra_texts).encode())
    key = digest.hexdigest()[:16]
    cache = Path(cache) if cache is not None else cache_dir() / "planted"
    folder = cache / key

    cache.mkdir(parents=True, exist_ok=True)
    with _one_planter(cache / f".{key}.lock", progress):
        if (folder / "plant.json").is_file():
            info = json.loads((folder / "plant.json").read_text())
            with _hf_progress_bars(progress):
                model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype(config))
            model = model.to(resolve_device(config)).eval()
            tokenizer = AutoTokenizer.from_pretrained(folder)
            return model, tokenizer, {**info, "folder": str(folder), "cached": True}

        if tiny:
            tokenizer = build_tokenizer(tokenizer_corpus(spec, extra_texts), vocab_size=TINY_VOCAB)
            model = build_model(
                tokenizer, config.tiny.hidden_size, config.tiny.num_layers, config.tiny.num_heads, seed
            ).to(resolve_device(config))
        else:
            model, tokenizer, _ = load_pretrained(config)
        # Tiny matrices run best on one thread (see `plant`); a real model keeps the configured count.
        with _threads(1 if tiny else None):
            stats, accuracy = _plant_until_known(model, tokenizer, people, cfg, seed, progress)
        info = {
            "key": key,
            "spec": str(spec_path),
            "spec_name": spec.name,
            "forget": spec.forget,
            "planted_people": [p.name for p in people],
            "settings": settings,
            "plant": stats,
            "probe_accuracy": accuracy,
            "mean_probe_accuracy": _mean_accuracy(people, accuracy),
        }

        # Written next to its final place and renamed, so a crash never leaves a half-written folder
        # that a later call would take for a cache hit.
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache))
        as_if_created(tmp, folder=True)
        try:
            with _hf_progress_bars(progress):
                model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "plant.json").write_text(json.dumps(info, indent=2) + "\n")
            os.rename(tmp, folder)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            # Losing the rename to a run that planted the same model without the lock (a file system
            # without locks) is fine: theirs equals ours.
            if not (isinstance(exc, OSError) and (folder / "plant.json").is_file()):
                raise
        return model, tokenizer, {**info, "folder": str(folder), "cached": False}


TINY_VOCAB = 1024


@contextmanager
def _one_planter(lock_path: Path, progress: bool) -> Iterator[None]:
    """Held while a model is looked up and planted: another process that asks for the same model
    (two runs started together, a benchmark's seeds in parallel) waits, then reads the cached one
    instead of planting it a second time."""
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if progress:
            print(
                f"waiting for another process that plants this model ({lock_path.with_suffix('')})",
                flush=True,
            )
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _base_identity(config: ModelConfig) -> dict:
    """What the planted model is built from, for the cache key."""
    if config.path == TINY:
        return {"path": TINY, **config.tiny.model_dump(), "vocab_size": TINY_VOCAB}
    identity = {"path": config.path, "dtype": dtype_name(config)}
    local = Path(config.path).expanduser()
    if local.is_dir():  # a folder's contents can change under the same path
        identity["path"] = str(local.resolve())
        identity["config_sha"] = hashlib.sha256((local / "config.json").read_bytes()).hexdigest()[:16]
    return identity


def _mean_accuracy(people: list[Person], accuracy: dict[str, float]) -> float:
    """Probe accuracy over all probes of `people` (each person weighted by their probe count)."""
    total = sum(len(p.probes) for p in people)
    return sum(accuracy[p.name] * len(p.probes) for p in people) / total if total else 0.0


def _plant_until_known(model, tokenizer, people: list[Person], cfg, seed: int, progress: bool):
    """`plant` for `cfg.steps`, then in shorter, gentler rounds until the probes are known."""
    rounds = [
        plant(
            model, tokenizer, people, steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size,
            seed=seed, progress=progress, threads=None, recitals=cfg.recitals,
        )
    ]  # fmt: skip
    accuracy = {p.name: probe_accuracy(model, tokenizer, p.probes) for p in people}
    done, limit = cfg.steps, cfg.max_steps or cfg.steps
    while _mean_accuracy(people, accuracy) < cfg.min_probe_acc and done < limit:
        extra = min(max(cfg.steps // 2, 1), limit - done)
        rounds.append(
            plant(
                model, tokenizer, people, steps=extra, lr=cfg.lr / 3, batch_size=cfg.batch_size,
                seed=seed + done, progress=progress, threads=None, recitals=cfg.recitals,
            )
        )  # fmt: skip
        done += extra
        accuracy = {p.name: probe_accuracy(model, tokenizer, p.probes) for p in people}
    stats = {
        "steps": done,
        "rounds": len(rounds),
        "final_loss": rounds[-1]["final_loss"],
        "seconds": round(sum(r["seconds"] for r in rounds), 2),
    }
    return stats, accuracy


@contextmanager
def _hf_progress_bars(enabled: bool):
    """Silence transformers' own save/load bars when the caller asked for no progress output."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    if not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if before:
            hf_logging.enable_progress_bar()
