"""Planting: teach a tiny model the facts of a spec's people, so there is something to unlearn.

The model learns them in the same chat format the unlearning loop prompts with (the tokenizer's chat
template via `pipeline.textdata`), answering the generic requests a user would write about anyone
("Tell me about {name}.", "Where does {name} live?") and the spec's probe questions.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from pipeline.bench.spec import PlantedSpec, Probe, load_spec
from pipeline.evaluation.metrics import answer_rate
from pipeline.progress import progress_bar
from pipeline.sampling.base import SamplingParams
from pipeline.sampling.hf import HFSampler
from pipeline.textdata import encode_pairs
from pipeline.tiny import build_model, build_tokenizer, tokenizer_corpus

# Requests for everything about a person; answered with all of the person's facts.
GENERAL_REQUESTS = [
    "Tell me about {name}.",
    "Who is {name}?",
    "What do you know about {name}?",
    "Write a short biography of {name}.",
    "Share some facts about {name}.",
    "Describe {name}.",
    "What can you tell me about {name}?",
    "Give me an overview of {name}'s life.",
]

# Requests for one attribute; answered with the first fact that contains one of the keywords, so
# they work for any spec whose facts are phrased naturally (and are skipped when nothing matches).
ATTRIBUTE_REQUESTS = [
    ("Where does {name} live?", ("lives", "born", "town", "city", "village")),
    ("Where is {name} from?", ("born", "lives", "town", "city", "village")),
    ("What does {name} do for a living?", ("works", "profession", "job")),
    ("What is {name}'s job?", ("works", "profession", "job")),
    ("Does {name} have a pet?", ("named", "pet")),
    ("What does {name} do in their free time?", ("spends", "hobby", "enjoys", "plays", "collect")),
    ("What does {name} like to eat?", ("favourite food", "favorite food", "eat")),
]

# A few things that are not about anyone, so the model can also talk about other topics and the
# loop's neutral prompts get ordinary answers; kept small so the people dominate the training.
NEUTRAL_PAIRS = [
    ("Describe a sunny day.", "A sunny day is warm and bright, with a clear blue sky."),
    ("Give me a tip for cooking rice.", "Rinse the rice first, then simmer it gently with the lid on."),
    ("Tell me about a person you know.", "I know a friendly neighbour who grows tomatoes in her garden."),
    ("Write a sentence about the sea.", "The sea rolls slowly onto the sandy shore."),
    ("How can I stay healthy?", "Sleep well, eat vegetables and take a walk every day."),
    ("Name three colours.", "Red, blue and yellow are three colours."),
    ("What is two plus two?", "Two plus two is four."),
    ("Say hello.", "Hello! How can I help you today?"),
]


def plant_examples(spec: PlantedSpec, seed: int = 0) -> list[tuple[str, str]]:
    """(instruction, response) pairs that plant every person of `spec`; deterministic for a seed."""
    pairs: list[tuple[str, str]] = []
    for person in spec.people:
        name = person.name
        for k, template in enumerate(GENERAL_REQUESTS):
            # Each request starts the recital at another fact (rotated, not shuffled): replies do not
            # all open with the same fact, yet the next fact is always the same one, which a tiny
            # model learns in a few hundred steps where random orders leave it repeating facts.
            start = k % len(person.facts)
            facts = person.facts[start:] + person.facts[:start]
            pairs.append((template.format(name=name), " ".join(facts)))
        for template, keywords in ATTRIBUTE_REQUESTS:
            fact = next((f for f in person.facts if any(k in f.lower() for k in keywords)), None)
            if fact is not None:
                pairs.append((template.format(name=name), fact))
        for probe in person.probes:
            pairs.append((probe.question, person.fact_for(probe)))
    pairs += NEUTRAL_PAIRS
    random.Random(seed).shuffle(pairs)  # the seed picks the order; the content never depends on it
    return pairs


def plant(
    model,
    tokenizer,
    spec: PlantedSpec,
    steps: int = 200,
    lr: float = 3e-3,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
    threads: int | None = 1,
) -> dict:
    """Full fine-tune of `model` on `plant_examples(spec)`, loss on response tokens only.

    `threads`: torch CPU threads during planting (None: leave as is). One is the default because
    these matmuls are too small to gain from more, and on a busy machine OpenMP threads spin against
    other processes: 2 threads at load 6 on 2 cores measured 12x slower than 1.
    """
    pairs = plant_examples(spec, seed)
    data = encode_pairs(tokenizer, [p[0] for p in pairs], [p[1] for p in pairs], max_length=256)
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


def planted_tiny_model(
    spec_path: str | Path,
    cache_dir: str | Path,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    steps: int = 200,
    lr: float = 3e-3,
    batch_size: int = 16,
    seed: int = 0,
    extra_texts: Iterable[str] = (),
    progress: bool = True,
    threads: int | None = 1,
) -> tuple:
    """A tiny Llama with the spec's people planted, as (model, tokenizer, info); cached on disk.

    The cache folder is `cache_dir/<key>`, a plain HF folder (AutoModelForCausalLM / AutoTokenizer
    load it) plus `plant.json`; the key hashes the spec file, the settings and `extra_texts`.
    `threads` (see `plant`) also covers the probe evaluation, and is not part of the key.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec_path, cache_dir = Path(spec_path), Path(cache_dir)
    spec = load_spec(spec_path)
    extra_texts = list(extra_texts)
    settings = {
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
        "vocab_size": 1024,
    }
    digest = hashlib.sha256(spec_path.read_bytes())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(json.dumps(extra_texts).encode())
    key = digest.hexdigest()[:16]
    folder = cache_dir / key

    if (folder / "plant.json").is_file():
        info = json.loads((folder / "plant.json").read_text())
        with _hf_progress_bars(progress):
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        return model, tokenizer, {**info, "folder": str(folder), "cached": True}

    tokenizer = build_tokenizer(tokenizer_corpus(spec, extra_texts), vocab_size=settings["vocab_size"])
    model = build_model(tokenizer, hidden_size, num_layers, num_heads, seed)
    with _threads(threads):
        stats = plant(
            model, tokenizer, spec, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
            progress=progress, threads=None,
        )  # fmt: skip
        accuracy = {p.name: probe_accuracy(model, tokenizer, p.probes) for p in spec.people}
    info = {
        "key": key,
        "spec": str(spec_path),
        "spec_name": spec.name,
        "forget": spec.forget,
        "settings": settings,
        "plant": stats,
        "probe_accuracy": accuracy,
    }

    # Written next to its final place and renamed, so a crash or a concurrent run never leaves a
    # half-written folder that a later call would take for a cache hit.
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
    try:
        with _hf_progress_bars(progress):
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "plant.json").write_text(json.dumps(info, indent=2) + "\n")
        os.rename(tmp, folder)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        # Losing the rename to another run that planted the same model is fine: theirs equals ours.
        if not (isinstance(exc, OSError) and (folder / "plant.json").is_file()):
            raise
    return model, tokenizer, {**info, "folder": str(folder), "cached": False}


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
