"""The unlearning objectives, chosen by name (`release.method`): one table, one row per objective.

A row says everything the release loop (`pipeline.release.train`) needs to know of an objective:

- `forget_loss(cfg, logits, labels, reference)`: the loss on a forget batch (`pipeline.release.losses`);
  `reference` is what the frozen model says about the same batch, or None when not needed;
- `reference`: what that is: "logits" (its logits, shaped like `logits`, zero where no label is) or "sequence" (its
  log-probability of each row's response, [B]); computed once per row (`pipeline.release.reference`);
- `takes_retain`: add the retain term (`release.retain_loss`, weighted by `release.retain_weight`);
- `unbounded`: the loss has no floor, so training stops once the forget NLL passes `release.max_forget_nll`;
- `on_trained(peft_model, cfg)`: applied to the trained adapter before it is saved, or None;
- `paired`: the forget batch is its rows' responses followed by their `alternative`s (the model's
  own replies to the same instructions that the target scorer finds clean, `sample.alternative_threshold`);
- `swaps_names`: the reference is the frozen model on each row with the target's names swapped for
  invented ones (`pipeline.release.name_swap`), at the row's tokens outside the names.

To add an objective: write its loss in `losses.py` (a docstring with the equation and the paper), then
add one row to `OBJECTIVES`. `release.method` accepts every key of the table.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.config import ConfigError
from pipeline.textdata import IGNORE_INDEX


def _deferred(name: str) -> Callable:
    """`pipeline.release.losses.<name>`, imported on its first call: the input checks read this
    table's flags before any model loads, and a refused config should not wait for torch."""

    def call(*args, **kwargs):
        return getattr(importlib.import_module("pipeline.release.losses"), name)(*args, **kwargs)

    return call


dpo_loss, ga_loss, kl_to_ref, nll_loss, npo_loss, simnpo_loss, undial_loss = map(_deferred, (
    "dpo_loss", "ga_loss", "kl_to_ref", "nll_loss", "npo_loss", "simnpo_loss", "undial_loss"
))  # fmt: skip


@dataclass(frozen=True)
class Objective:
    forget_loss: Callable  # (cfg: ReleaseConfig, logits, labels, reference | None) -> scalar tensor
    reference: str | None = None  # None, "logits" or "sequence"
    takes_retain: bool = True
    unbounded: bool = False
    on_trained: Callable | None = None  # (peft_model, cfg) -> None
    paired: bool = False
    swaps_names: bool = False


def negate(peft_model, cfg) -> None:
    """Task arithmetic (Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023, arXiv
    2212.04089): ΔW = B·A learned the forget data, so −λ·ΔW removes it (λ = `release.negation_scale`)."""
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            param.data.mul_(-cfg.negation_scale)  # .data: an in-place edit autograd need not see


OBJECTIVES: dict[str, Objective] = {
    "undial": Objective(
        lambda cfg, logits, labels, ref: undial_loss(logits, labels, ref, beta=cfg.beta), reference="logits"
    ),
    "npo": Objective(
        lambda cfg, logits, labels, ref: npo_loss(logits, labels, ref, beta=cfg.npo_beta),
        reference="sequence",
        unbounded=True,
    ),
    "simnpo": Objective(
        lambda cfg, logits, labels, ref: simnpo_loss(
            logits, labels, beta=cfg.simnpo_beta, delta=cfg.simnpo_delta
        ),
        unbounded=True,
    ),
    # The forget response rejected, a clean reply of the model's own to the same instruction chosen.
    "dpo": Objective(
        lambda cfg, logits, labels, ref: dpo_loss(logits, labels, ref, beta=cfg.dpo_beta),
        reference="sequence",
        paired=True,
    ),
    # Who's Harry Potter's generic predictions (knowledge targets): what the frozen model says of
    # the same reply about a name it never saw, distilled in place of what it says about the target.
    "name_swap": Objective(
        lambda cfg, logits, labels, ref: kl_to_ref(logits, ref, labels != IGNORE_INDEX),
        reference="logits",
        swaps_names=True,
    ),
    # Gradient difference: ascent on the forget batch, the retain term on the retain batch.
    "graddiff": Objective(lambda cfg, logits, labels, ref: ga_loss(logits, labels), unbounded=True),
    "ga": Objective(
        lambda cfg, logits, labels, ref: ga_loss(logits, labels), takes_retain=False, unbounded=True
    ),
    # Learn the forget data by NLL, then apply the adapter negated.
    "negation": Objective(
        lambda cfg, logits, labels, ref: nll_loss(logits, labels), takes_retain=False, on_trained=negate
    ),
}

# Not a release method: the retain adapter *learns* its rows by NLL (`train.train_retain_adapter`).
LEARN = Objective(lambda cfg, logits, labels, ref: nll_loss(logits, labels), takes_retain=False)


def objective_named(name: str) -> Objective:
    """The objective `release.method` names; ConfigError listing the known ones otherwise."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ConfigError(
            f"release.method: {name!r} is not an objective; choose from {', '.join(OBJECTIVES)}"
        ) from None
