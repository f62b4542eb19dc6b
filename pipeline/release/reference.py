"""The frozen model's side of the release objectives, computed once per training row.

Objectives such as UnDIAL, NPO and DPO, and the KL retain term, compare the adapter's model with
the frozen model M_t on the same batch. M_t does not change while an adapter trains, so what it
says about a row is the same on every epoch: it is computed the first time the row is drawn and
kept, instead of one more forward pass on every step (issue 22: UnDIAL's step ran at 0.72x a plain
NLL step for this forward alone).

What is kept depends on what the loss reads (`Objective.reference`):

    "sequence"  log πref(y|x), one number a row (NPO, DPO): always kept
    "logits"    the reference logits at the row's labelled positions, [n_labelled, V] in float32
                (UnDIAL, the KL retain term): kept while they fit in `budget_bytes`; rows past the
                budget are computed again each time they are drawn, exactly as without the cache

With `teacher_of` ({row key: another row}) the frozen model runs on the other row instead and its
labelled positions stand for the row's, in order (the `name_swap` objective: the row with the
target's names swapped, as many labels as the row); with `blend` as well, the row's own logits and
its twin's make the reference together. Rows are keyed by their token ids and labels, so two
identical rows share one entry. A row's figures come from the frozen model's forward on the batch
the row was first missing from (the adapter switched off), so they equal a forward on any batch up
to rounding (another batch shape may take other kernels). The kept logits live where the model
does: on a GPU, in its memory.
"""

from __future__ import annotations

import time

import torch

from pipeline.batches import collate, labelled_logits
from pipeline.release.losses import sequence_logprob
from pipeline.textdata import IGNORE_INDEX

KINDS = ("sequence", "logits")


def row_key(pair: tuple[list[int], list[int]]) -> tuple:
    ids, labels = pair
    return (tuple(ids), tuple(labels))


class ReferenceCache:
    """`cache.batch(peft_model, pairs, labels, pad)` -> the reference for one training batch, in the
    form its loss takes: the logits at the batch's labelled positions, [N, V] in the row-major order
    of `labels != IGNORE_INDEX` (what a loss would pick from a [B, T, V] tensor, without building
    one), or a [B] tensor of log-probs."""

    def __init__(self, kind: str, budget_bytes: int, teacher_of: dict | None = None, blend=None):
        if kind not in KINDS:
            raise ValueError(f"reference kind must be one of {KINDS}, got {kind!r}")
        if blend is not None and (kind != "logits" or not teacher_of):
            raise ValueError("a blend reads a row's logits and its twin's: kind 'logits' with teacher_of")
        self.kind = kind
        self.teacher_of = teacher_of or {}
        self.blend = blend  # (row's logits [n, V], twin's [n, V]) -> the reference [n, V]
        self.budget_bytes = budget_bytes
        self.kept: dict[tuple, torch.Tensor] = {}
        self.kept_bytes = 0
        self.computed_rows = 0  # rows the frozen model ran on (a row past the budget counts each time)
        # in the frozen model's forwards (on a GPU partly their launch only: no sync is forced)
        self.seconds = 0.0

    def _compute(self, peft_model, pairs: list, pad: int) -> list[torch.Tensor]:
        """Per row: its log-prob (a 0-d tensor) or its labelled positions' logits [n, V] (of its twin,
        with `teacher_of`; blended with its own, with `blend`)."""
        twins = self._forward(peft_model, [self.teacher_of.get(row_key(p), p) for p in pairs], pad)
        if self.blend is None:
            return twins
        return [self.blend(own, twin) for own, twin in zip(self._forward(peft_model, pairs, pad), twins)]

    def _forward(self, peft_model, pairs: list, pad: int) -> list[torch.Tensor]:
        enc = collate(pairs, pad)
        with torch.no_grad(), peft_model.disable_adapter():
            logits, labels = labelled_logits(peft_model, enc)
            logits = logits.float()
        self.computed_rows += len(pairs)
        if self.kind == "sequence":
            return list(sequence_logprob(logits, labels).unbind())
        return [row[keep] for row, keep in zip(logits, labels != IGNORE_INDEX)]

    def _keep(self, key: tuple, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if self.kind == "logits" and self.kept_bytes + size > self.budget_bytes:
            return
        self.kept[key] = value
        self.kept_bytes += size

    def batch(self, peft_model, pairs: list, labels: torch.Tensor, pad: int) -> torch.Tensor:
        """The reference for `pairs` (a training batch) whose shifted labels are `labels` [B, W] (their
        device is the reference's)."""
        keys = [row_key(p) for p in pairs]
        missing = list(dict.fromkeys(k for k in keys if k not in self.kept))
        fresh: dict[tuple, torch.Tensor] = {}
        if missing:
            by_key = dict(zip(keys, pairs))
            started = time.perf_counter()
            values = self._compute(peft_model, [by_key[k] for k in missing], pad)
            self.seconds += time.perf_counter() - started
            for key, value in zip(missing, values):
                fresh[key] = value
                self._keep(key, value)
        rows = [self.kept.get(k, fresh.get(k)) for k in keys]
        if self.kind == "sequence":
            return torch.stack(rows).to(labels.device)
        return torch.cat(rows).to(labels.device)
