"""Token-id pairs (`pipeline.textdata.encode_pair`) as model inputs: padded or packed batches, and the
model's logits at the positions that predict a label.
"""

from __future__ import annotations

import inspect
import itertools
import weakref

import torch

from pipeline.row_attention import base_model, packed_rows
from pipeline.textdata import IGNORE_INDEX, encode_pair, pad_id


def collate(pairs: list[tuple[list[int], list[int]]], pad: int) -> dict[str, torch.Tensor]:
    """Right-padded batch of `encode_pair` results: input_ids, attention_mask, labels [B, T]."""
    width = max(len(ids) for ids, _ in pairs)
    input_ids = torch.full((len(pairs), width), pad, dtype=torch.long)
    labels = torch.full((len(pairs), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(pairs):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        attention_mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def encode_pairs(
    tokenizer, instructions: list[str], responses: list[str], max_length: int = 256
) -> dict[str, torch.Tensor]:
    """Right-padded batch of prompt+response+EOS; labels are -100 on the prompt and the padding.

    Labels are *unshifted* (HF convention): position t of `labels` is the token at position t.
    If a pair is longer than `max_length`, the response is cut, never the prompt.
    """
    if len(instructions) != len(responses):
        raise ValueError("instructions and responses must have the same length")
    pairs = [encode_pair(tokenizer, i, r, max_length) for i, r in zip(instructions, responses)]
    return collate(pairs, pad_id(tokenizer))


def shifted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align logits with the tokens they predict: logits[:, t] then predicts labels[:, t].

    The labels move one to the left (the last position predicts nothing: IGNORE_INDEX) rather
    than the logits being cut: a [B, T-1, V] slice is not contiguous, and every loss over it
    would copy the whole vocabulary-wide tensor (measured 135 -> 92 ms for one NLL forward and
    backward at 4 x 100 x 49,152).
    """
    ignore = torch.full_like(labels[:, :1], IGNORE_INDEX)
    return logits, torch.cat([labels[:, 1:], ignore], dim=1)


def _takes_logits_to_keep(model) -> bool:
    base = base_model(model)
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def labelled_logits(model, enc: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's logits and the labels they predict, over only the positions that predict a label.

    Prompt positions predict nothing that is scored, and the LM head is the widest layer of a
    small model (576 -> 49,152 for SmolLM2-135M) with the largest activations, so the model is asked
    for logits only where they predict a label (transformers' `logits_to_keep`).

    A batch of several rows runs packed (`packed_logits`): the rows one after another in one
    sequence, each attending only to itself, so no padding is computed; a batch of more than
    PACK_MAX_TOKENS tokens as several such sequences, consecutive rows up to that many tokens each.
    Row i of the result holds row i's positions from the one before its first label on, in order,
    then zero logits labelled IGNORE_INDEX: the losses read labelled positions only, so they take
    either layout. A model is packed only once one batch gave the same log-probabilities both ways
    (`packs_rows`); otherwise the batch runs padded (`window_logits`).
    """
    if enc["input_ids"].shape[0] == 1 or not _right_padded(enc) or not packs_rows(model, enc):
        return window_logits(model, enc)
    return packed_logits(model, enc, PACK_MAX_TOKENS)


# A long batch is packed into several sequences of at most this many tokens: where transformers'
# attention spans a whole packed sequence (a model not on sdpa: N^2 work and kept activations), this
# bounds it; on sdpa the rows are attended one at a time (`pipeline.row_attention`) and packs of 2048
# measured no faster (1.13x and 0.91x the Trainer against 1.16x and 0.88x: issue 22). Before that,
# in `make demo` (dpo: 8-row batches of ~700 tokens) one packed sequence made the release no faster
# and the peak 4.3 -> 5.5 GB; 4-row batches of ~350 tokens packed (with the fused AdamW) ran 1.01-1.05x the Trainer where
# padded ran 0.94x (`rr bench train`).
PACK_MAX_TOKENS = 512


def _packs(lengths: list[int], max_tokens: int) -> list[slice]:
    """Consecutive runs of rows of at most `max_tokens` tokens together (a longer row alone)."""
    groups, start, total = [], 0, 0
    for i, n in enumerate(lengths):
        if i > start and total + n > max_tokens:
            groups.append(slice(start, i))
            start, total = i, 0
        total += n
    return [*groups, slice(start, len(lengths))]


def _right_padded(enc: dict[str, torch.Tensor]) -> bool:
    """Every row's tokens come first, then its padding (`collate`'s batches; not a left-padding tokenizer's)."""
    return bool((enc["attention_mask"].diff(dim=1) <= 0).all())


def window_logits(model, enc: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """`labelled_logits` on the padded batch: logits [B, W, V] from the first position of any row
    that predicts a label on (a model without `logits_to_keep` computes them all, then they are cut)."""
    labels = enc["labels"]
    labelled = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    # logits[:, t] predicts token t + 1, so the window opens one before the first labelled token.
    start = max(int(labelled[0]) - 1, 0) if len(labelled) else labels.shape[1] - 1
    inputs = {k: enc[k].to(model.device) for k in ("input_ids", "attention_mask")}
    if _takes_logits_to_keep(model):
        # Positions as a tensor, not a count: transformers then gathers them into a new
        # contiguous tensor instead of slicing a view, and torch's CPU bfloat16 matmul takes a slow
        # path for the LM head on a strided view (forward and backward 3.6x slower: issue 22).
        window = torch.arange(start, labels.shape[1], device=model.device)
        logits = model(**inputs, logits_to_keep=window).logits
    else:
        logits = model(**inputs).logits[:, start:].contiguous()
    return shifted(logits, labels[:, start:].to(model.device))


def packed_logits(
    model, enc: dict[str, torch.Tensor], max_tokens: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`labelled_logits` with the batch's rows packed into one sequence, without their padding; with
    `max_tokens`, into one sequence for each run of consecutive rows of at most that many tokens.

    Position ids restart at 0 on every row, no attention mask is passed and no cache is kept:
    transformers then masks attention to each row's own tokens (`find_packed_sequence_indices`),
    and a model on `sdpa` attention computes it one row at a time (`pipeline.row_attention`).
    """
    real = enc["attention_mask"].bool()
    lengths = real.sum(dim=1).tolist()
    rows = enc["labels"][real].split(lengths)  # each row's labels, without padding, in order
    ids = enc["input_ids"][real].split(lengths)
    starts, predicted = [], []
    for n, labels in zip(lengths, rows):
        labelled = (labels != IGNORE_INDEX).nonzero()
        starts.append(max(int(labelled[0]) - 1, 0) if len(labelled) else n - 1)
        predicted.append(labels[starts[-1] + 1 :])  # what positions start .. n-2 predict
    row_logits = []
    for group in _packs(lengths, max_tokens or sum(lengths)):
        offsets = [0, *itertools.accumulate(lengths[group])][:-1]
        keep = [torch.arange(o + s, o + n - 1) for o, s, n in zip(offsets, starts[group], lengths[group])]
        keep_index = torch.cat(keep).to(model.device)
        inputs = {
            "input_ids": torch.cat(ids[group]).unsqueeze(0).to(model.device),
            "position_ids": torch.cat([torch.arange(n) for n in lengths[group]])
            .unsqueeze(0)
            .to(model.device),
            "use_cache": False,
        }
        with packed_rows(model, lengths[group]) as rows:
            if _takes_logits_to_keep(model):
                logits = model(**inputs, **rows, logits_to_keep=keep_index).logits[0]
            else:
                logits = model(**inputs, **rows).logits[0, keep_index]
        row_logits += logits.split([len(k) for k in keep])
    padded = torch.nn.utils.rnn.pad_sequence(row_logits, batch_first=True)
    labels = torch.nn.utils.rnn.pad_sequence(predicted, batch_first=True, padding_value=IGNORE_INDEX)
    return padded, labels.to(model.device)


# {model: whether packed rows give its padded batch's log-probabilities}; weak, so a model goes
# when its last user drops it.
_PACKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def packs_rows(model, enc: dict[str, torch.Tensor]) -> bool:
    """Whether `model` computes packed rows (`packed_logits`) as it computes them padded.

    Decided once per model on its first batch of several rows with a label: an architecture whose
    attention ignores position ids, or an old transformers, would let rows read each other and
    train on nonsense, silently. Such a model (or one whose forward is random: dropout) runs padded.
    """
    base = base_model(model)
    if base in _PACKS:
        return _PACKS[base]
    if not {"position_ids", "use_cache"} <= set(inspect.signature(base.forward).parameters):
        _PACKS[base] = False  # no way to tell it where each row starts
        return False
    if not (enc["labels"] != IGNORE_INDEX).any():
        return False  # nothing to compare on: decide on a later batch
    with torch.no_grad():
        logits, labels = window_logits(model, enc)
        window, packed = _label_logprobs(logits, labels), _label_logprobs(*packed_logits(model, enc))
    # Measured on SmolLM2-135M, mean |difference| over 8 rows: 1e-6 in float32, 0.02 in bfloat16
    # (other kernels, rounded at every layer); rows that read each other moved it by 0.7.
    tolerance = 1e-3 if logits.dtype == torch.float32 else 0.1
    _PACKS[base] = window.shape == packed.shape and bool((window - packed).abs().mean() < tolerance)
    return _PACKS[base]


def _label_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Every label's log-probability, rows in order, positions in order ([n_labels])."""
    keep = labels != IGNORE_INDEX
    return torch.log_softmax(logits[keep].float(), dim=-1).gather(-1, labels[keep].unsqueeze(-1)).squeeze(-1)
