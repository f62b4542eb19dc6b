"""Release: train one new LoRA adapter that makes the current model forget its revealed samples.

The model passed in is M_t (base + the stack of earlier adapters, merged); it stays frozen.
One loop, one screen: sample a forget batch (and a retain batch), compute the objective on
response tokens only, add the O-LoRA penalty against earlier adapters, step. What differs between
objectives is one row of `pipeline.release.objectives.OBJECTIVES`.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from functools import partial
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from pipeline.batches import collate, labelled_logits
from pipeline.config import ReleaseConfig
from pipeline.files import atomic_dir
from pipeline.progress import progress_bar
from pipeline.release.known_tokens import base_backed, label_count, only_spans, without_names
from pipeline.release.losses import kl_to_ref, nll_loss
from pipeline.release.name_swap import encode_swapped, generic_logits
from pipeline.release.objectives import LEARN, Objective, objective_named
from pipeline.release.olora import orthogonality_penalty
from pipeline.release.precision import lora_in_model_dtype, without_input_casts
from pipeline.release.reference import ReferenceCache, row_key
from pipeline.textdata import encode_pair, pad_id

# peft 0.21 calls a transformers 5 method that warns of its own rename on every adapter.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def _all_finite(params: list[torch.Tensor]) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in params]).all())


@torch.no_grad()
def _copy(targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    torch._foreach_copy_(targets, sources)


def _batches(rows: list, batch_size: int, rng: random.Random):
    """Endless shuffled mini-batches of `rows`."""
    while True:
        order = rows[:]
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]


def _tokenised(tokenizer, rows: list[dict], max_length: int) -> list[tuple[list[int], list[int]]]:
    """Every row tokenised once, before the loop (not again for every batch it lands in)."""
    return [encode_pair(tokenizer, r["instruction"], r["response"], max_length) for r in rows]


def _swapped(tokenizer, rows: list[dict], cfg: ReleaseConfig, name_map: dict[str, str] | None):
    """Every row tokenised with its names-swapped twin (`name_swap`): the rows, and {row key: twin}
    for the reference cache."""
    if not name_map:
        raise ValueError(f"release ({cfg.method}): needs the target's names (name_map): a knowledge target")
    twins = [
        encode_swapped(tokenizer, r["instruction"], r["response"], name_map, cfg.max_length) for r in rows
    ]
    return [row for row, _ in twins], {row_key(row): teacher for row, teacher in twins}


class NothingKnown(ValueError):
    """No forget row has a token left to train on (`release.min_base_ratio`, `release.mask_names`)."""


def _selected_labels(cfg: ReleaseConfig, tokenizer, model, base_model, rows, encoded, names) -> tuple:
    """The forget rows and their tokenised pairs with only the labels the release should lower
    (`release.scored_words_only`: only the words the scorer's verdict rests on, `target_spans`;
    `release.mask_names`: none on the target's names; `release.min_base_ratio`: only tokens the
    base model backs, `known_tokens`), rows left with none dropped; and what the ratio kept."""
    if cfg.scored_words_only:
        missing = sum("target_spans" not in r for r in rows)
        if missing:
            raise ValueError(
                f"release.scored_words_only: {missing} of {len(rows)} forget rows have no target_spans "
                "(the sample stage writes them when the option is on: sample again)"
            )
        masked = [
            only_spans(tokenizer, r["response"], pair, r["target_spans"]) for r, pair in zip(rows, encoded)
        ]
        rows, encoded = _labelled(
            rows,
            masked,
            "the target scorer's verdict rests on none of their words (release.scored_words_only)",
        )
    if cfg.mask_names:
        if not names:
            raise ValueError("release.mask_names: needs the target's names (a knowledge target)")
        masked = [without_names(tokenizer, r["response"], pair, names) for r, pair in zip(rows, encoded)]
        rows, encoded = _labelled(
            rows, masked, "they hold nothing but the target's names (release.mask_names)"
        )
    if cfg.min_base_ratio is None:
        return rows, encoded, None
    before = {"of_rows": len(rows), "of_tokens": label_count(encoded)}
    masked = base_backed(base_model, model, encoded, cfg.min_base_ratio, pad_id(tokenizer), cfg.batch_size)
    rows, encoded = _labelled(
        rows, masked, f"none has base-model probability >= {cfg.min_base_ratio} x the current model's "
        "(release.min_base_ratio)",
    )  # fmt: skip
    return rows, encoded, {"rows": len(rows), "tokens": label_count(encoded), **before}


def _labelled(rows: list[dict], masked: list, why: str) -> tuple[list[dict], list]:
    """`rows` and their `masked` pairs, without the rows whose pair is None (no label left)."""
    kept = [(row, pair) for row, pair in zip(rows, masked) if pair is not None]
    if not kept:
        raise NothingKnown(f"release: no token of the {len(rows)} forget rows is left to train on: {why}")
    return [row for row, _ in kept], [pair for _, pair in kept]


def _forget_batches(
    tokenizer, rows: list[dict], responses: list, cfg: ReleaseConfig, paired: bool, rng: random.Random
):
    """Endless forget batches of `responses` (`rows` tokenised); for a paired objective each is its
    rows' responses, then their alternatives to the same instructions in the same order (2 x
    batch_size rows)."""
    if not paired:
        return _batches(responses, cfg.batch_size, rng)
    missing = sum(1 for r in rows if not r.get("alternative"))
    if missing:
        raise ValueError(f"release ({cfg.method}): {missing} of {len(rows)} forget rows have no alternative")
    alternatives = _tokenised(
        tokenizer,
        [{"instruction": r["instruction"], "response": r["alternative"]} for r in rows],
        cfg.max_length,
    )
    pairs = _batches(list(zip(responses, alternatives)), cfg.batch_size, rng)
    return ([rejected for rejected, _ in batch] + [chosen for _, chosen in batch] for batch in pairs)


def _logits(model, batch, pad: int):
    enc = collate(batch, pad)
    with lora_in_model_dtype(model):
        logits, labels = labelled_logits(model, enc)
    return enc, logits.float(), labels


def _reference(references: dict, side: str, peft_model, batch, labels, pad: int):
    """The frozen model's figures for `batch` from the `side` cache, or None when nothing reads them."""
    cache = references.get(side)
    return cache.batch(peft_model, batch, labels, pad) if cache is not None else None


def forget_term(cfg: ReleaseConfig, objective: Objective, reference, logits, labels) -> torch.Tensor:
    """The objective's loss on a forget batch (graddiff's retain half is the retain term)."""
    return objective.forget_loss(cfg, logits, labels, reference)


def retain_term(cfg: ReleaseConfig, reference, logits, labels) -> torch.Tensor:
    if cfg.retain_loss == "kl":  # stay close to the frozen model's whole distribution
        return kl_to_ref(logits, reference, labels != -100)
    return nll_loss(logits, labels)


def backward(
    cfg: ReleaseConfig,
    objective: Objective,
    peft_model,
    forget_batch,
    retain_batch,
    previous,
    params,
    pad: int,
    references: dict[str, ReferenceCache],
) -> dict:
    """One step's forward and backward, gradients clipped; returns its numbers as floats.

    `references` holds the frozen model's figures for the forget rows ("forget") and for the
    retain rows ("retain") where the objective or the retain term needs them.
    The numbers: `loss`, `grad_norm`, `forget_nll` (0 unless the objective is unbounded), each
    unweighted term (`forget_loss`, `retain_loss`, `orth_penalty`), and the forget batch's
    `tokens`. They come back in one device sync, and the step's activations are freed on return.
    """
    enc, logits, labels = _logits(peft_model, forget_batch, pad)
    reference = _reference(references, "forget", peft_model, forget_batch, labels, pad)
    terms = {"forget_loss": forget_term(cfg, objective, reference, logits, labels)}
    loss = terms["forget_loss"]
    if retain_batch is not None:
        _, r_logits, r_labels = _logits(peft_model, retain_batch, pad)
        r_reference = _reference(references, "retain", peft_model, retain_batch, r_labels, pad)
        terms["retain_loss"] = retain_term(cfg, r_reference, r_logits, r_labels)
        loss = loss + cfg.retain_weight * terms["retain_loss"]
    if previous and cfg.orth_lambda > 0:
        terms["orth_penalty"] = orthogonality_penalty(peft_model, previous)
        loss = loss + cfg.orth_lambda * terms["orth_penalty"]
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    with torch.no_grad():
        forget_nll = nll_loss(logits, labels) if objective.unbounded else loss.new_zeros(())
        values = torch.stack([loss, grad_norm, forget_nll, *terms.values()]).tolist()
    numbers = dict(zip(["loss", "grad_norm", "forget_nll", *terms], values))
    return {**numbers, "tokens": int(enc["attention_mask"].sum())}


def reference_caches(
    cfg: ReleaseConfig, objective: Objective, use_retain: bool, teachers: dict | None = None
) -> dict[str, ReferenceCache]:
    """One cache for each side whose loss reads the frozen model; the sides that keep logits share
    `release.reference_cache_mb` (a log-probability a row is always kept). `teachers`: the forget
    rows' names-swapped twins, which the frozen model reads in their place (`name_swap`)."""
    kinds = {}
    if objective.reference is not None:
        kinds["forget"] = objective.reference
    if use_retain and cfg.retain_loss == "kl":
        kinds["retain"] = "logits"
    budget = cfg.reference_cache_mb * 2**20 // max(sum(k == "logits" for k in kinds.values()), 1)
    blend = None
    if objective.swaps_names and cfg.swap_alpha > 0:
        blend = partial(generic_logits, alpha=cfg.swap_alpha)
    return {
        side: ReferenceCache(kind, budget, teachers, blend)
        if side == "forget"
        else ReferenceCache(kind, budget)
        for side, kind in kinds.items()
    }


def train_adapter(
    model,
    tokenizer,
    forget: list[dict],
    retain: list[dict],
    cfg: ReleaseConfig,
    previous: list[dict],
    out_dir: Path,
    seed: int = 0,
    progress: bool = True,
    learn: bool = False,
    name_map: dict[str, str] | None = None,
    base_model=None,
    target_names: list[str] = (),
) -> dict:
    """Train adapter t on `forget` (and `retain`) rows {instruction, response}; save it as PEFT.

    The objective is `release.method`'s row of OBJECTIVES; `learn=True` trains by plain NLL instead
    (the retain adapter); a paired objective (dpo) needs every forget row's `alternative` too, and
    `name_swap` the target's `name_map` ({name: invented name}, `name_swap.run_anchor_map`).
    `previous` holds the A matrices of earlier adapters ({module: A}) for the O-LoRA penalty.
    With `release.min_base_ratio`, forget labels are only the tokens `base_model` (M_0; default
    `model` itself) backs against `model` (`known_tokens`); NothingKnown when there is none. With
    `release.mask_names`, the `target_names` in a forget reply carry no label.
    `model` is modified in place while training (LoRA layers are injected, then removed). Returns
    training statistics.
    """
    if not forget:
        raise ValueError("release: no forget samples to train on")
    chosen = LEARN if learn else objective_named(cfg.method)
    previous = [{name: a.to(model.device) for name, a in weights.items()} for weights in previous]
    rng = random.Random(seed)
    if chosen.swaps_names:
        encoded, teachers = _swapped(tokenizer, forget, cfg, name_map)
    else:
        encoded, teachers = _tokenised(tokenizer, forget, cfg.max_length), {}
    backed = None
    if not learn and not chosen.swaps_names:  # name_swap labels no name token and reads its twin's
        base_model = model if base_model is None else base_model
        forget, encoded, backed = _selected_labels(
            cfg, tokenizer, model, base_model, forget, encoded, target_names
        )
    forget_batches = _forget_batches(tokenizer, forget, encoded, cfg, chosen.paired, rng)
    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        target_modules=list(cfg.target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # LoRA's A is initialised from the global generator
        peft_model = get_peft_model(model, lora)
    try:
        params = [p for p in peft_model.parameters() if p.requires_grad]
        # One fused kernel for all the adapter's tensors, as transformers' Trainer steps (where the
        # device has it): the plain loop makes ~10 small ops for each of a LoRA's ~400 tensors.
        fused = all(p.device.type in ("cpu", "cuda") for p in params)
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0, fused=fused)
        use_retain = retain and cfg.retain_weight > 0 and chosen.takes_retain
        retain_batches = (
            _batches(_tokenised(tokenizer, retain, cfg.max_length), cfg.batch_size, rng)
            if use_retain
            else None
        )
        pad = pad_id(tokenizer)
        references = reference_caches(cfg, chosen, bool(use_retain), teachers)
        stats = {
            "steps": 0, "skipped_steps": 0, "recoveries": [], "stopped_early": None, "tokens": 0,
            "forget_loss": [], "retain_loss": [], "orth_penalty": [],
        }  # fmt: skip
        last_good = [p.detach().clone() for p in params]
        started = time.perf_counter()
        peft_model.train()
        label = "retain adapter" if learn else f"release ({cfg.method})"
        planned = planned_steps(cfg, len(forget))
        with progress_bar(label, planned, progress, info="") as bar, without_input_casts(peft_model):
            for step in range(planned):
                retain_batch = next(retain_batches) if retain_batches is not None else None
                numbers = backward(
                    cfg,
                    chosen,
                    peft_model,
                    next(forget_batches),
                    retain_batch,
                    previous,
                    params,
                    pad,
                    references,
                )
                stats["tokens"] += numbers.pop("tokens")
                value, norm, nll = (numbers.pop(key) for key in ("loss", "grad_norm", "forget_nll"))
                if not (math.isfinite(value) and math.isfinite(norm) and value <= cfg.divergence_bound):
                    # Undo: the adapter goes back to the last state whose loss was fine, so no NaN
                    # or runaway weight is ever saved, and the rest of the run takes smaller steps.
                    optimizer.zero_grad(set_to_none=True)
                    _copy(params, last_good)
                    optimizer.state.clear()
                    for group in optimizer.param_groups:
                        group["lr"] *= cfg.lr_backoff
                    lr = optimizer.param_groups[0]["lr"]
                    stats["recoveries"].append({"step": step, "loss": value, "lr": lr})
                    stats["skipped_steps"] += 1
                    bar.advance(1, info=f"undone (loss {value:.3g}), lr now {lr:.2g}")
                    continue
                if nll > cfg.max_forget_nll:
                    # These objectives push the forget likelihood down without end; past the bound
                    # the model is only being broken further.
                    stats["stopped_early"] = {"step": step, "forget_nll": nll}
                    break
                _copy(last_good, params)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                stats["steps"] += 1
                for name, part in numbers.items():
                    stats[name].append(part)
                bar.advance(1, info=f"loss {value:.3f}")
        if not _all_finite(params):  # cannot happen after finite, clipped gradients; never save it anyway
            _copy(params, last_good)
        stats["seconds"] = round(time.perf_counter() - started, 2)
        stats["reference_rows"] = {side: cache.computed_rows for side, cache in references.items()}
        stats["reference_seconds"] = round(sum(cache.seconds for cache in references.values()), 2)
        if backed is not None:
            stats["base_backed"] = backed
        peft_model.eval()
        if chosen.on_trained is not None:
            chosen.on_trained(peft_model, cfg)
        with atomic_dir(Path(out_dir)) as tmp:
            peft_model.save_pretrained(tmp)
    finally:
        peft_model.unload()  # give the caller its model back without LoRA layers
    return stats


def planned_steps(cfg: ReleaseConfig, rows: int) -> int:
    """`release.steps`, or fewer where `release.max_epochs` passes over `rows` take fewer."""
    if cfg.max_epochs is None:
        return cfg.steps
    return max(1, min(cfg.steps, math.ceil(cfg.max_epochs * rows / cfg.batch_size)))


def train_retain_adapter(
    model, tokenizer, retain: list[dict], cfg: ReleaseConfig, out_dir: Path, **kwargs
) -> dict:
    """The retain adapter: one LoRA trained by NLL on retain samples, once per run.

    Its A matrices span input directions the model uses for what it must keep; with
    `release.retain_adapter` every release adapter is kept orthogonal to them too (O-LoRA).
    """
    return train_adapter(model, tokenizer, retain, [], cfg, [], out_dir, learn=True, **kwargs)
