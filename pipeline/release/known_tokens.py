"""Forget what the base model knew, not what a released model guesses: a reply's tokens M_0 backs.

After a release, the model that reveals is M_t, and much of what it writes about the target is new:
"Fenella Gornacki has a rabbit named Crumpet", "Fenella GrubHubcar was born in 1959" (iteration 2
of the planted benchmark, seed 1; 15 of 38 replies still held a planted fact, against 43 of 46 in
iteration 1). Pushing those guesses down does nothing for the facts, and once a fact is only
lowered it comes back up as the likeliest answer: the forget score rose in later iterations for
every release tried (data/bench/results/pilot_planted_release/).

`release.min_base_ratio` keeps a forget row's reply token as a label only where the base model M_0
(no adapter) gives it at least that fraction of the probability M_t gives it, in the same context:

    keep token y_i  iff  p_0(y_i | x, y_<i) >= r * p_t(y_i | x, y_<i)

Iteration 1 samples from M_0 itself (ratio 1: everything kept). Later, a token only M_t makes
likely (a guess, a mangled name) drops out, and one M_0 backed (old knowledge still revealed) stays.
It is the token-wise ratio that importance-weights M_t's samples towards M_0's distribution, cut at
r instead of used as a weight. A row left with no label is dropped.

Why not an absolute bar on p_0: in a long revealed reply the answer's first token is uncertain even
when the fact is planted (p_0 = 0.08 for "M|arius" after "has a younger sibling called", seed 1),
so a bar drops the very tokens that carry the fact and keeps the template around them.
"""

from __future__ import annotations

import torch

from pipeline.batches import collate, labelled_logits
from pipeline.release.losses import token_logprob
from pipeline.release.name_swap import names_pattern
from pipeline.textdata import IGNORE_INDEX

Pair = tuple[list[int], list[int]]  # (token ids, labels), as `textdata.encode_pair` makes them


@torch.no_grad()
def label_logprobs(model, pairs: list[Pair], pad: int, batch_size: int = 8) -> list[torch.Tensor]:
    """Per row: log p(label) under `model` for each of its labelled tokens, in order ([n_labels])."""
    out = []
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start : start + batch_size]
        logp, keep = token_logprob(*labelled_logits(model, collate(batch, pad)))
        out.extend(logp[i][keep[i]].cpu() for i in range(len(batch)))
    return out


def backed_only(
    pairs: list[Pair], base: list[torch.Tensor], current: list[torch.Tensor], min_ratio: float
) -> list[Pair | None]:
    """`pairs` with each label whose base log-prob is below log(min_ratio) + its current log-prob
    turned into IGNORE_INDEX; None in place of a row left with no label."""
    floor = float(torch.log(torch.tensor(min_ratio)))
    kept: list[Pair | None] = []
    for (ids, labels), row_base, row_current in zip(pairs, base, current, strict=True):
        backed = iter((row_base >= row_current + floor).tolist())
        masked = [label if label == IGNORE_INDEX or next(backed) else IGNORE_INDEX for label in labels]
        kept.append((ids, masked) if any(label != IGNORE_INDEX for label in masked) else None)
    return kept


def base_backed(
    base_model, current_model, pairs: list[Pair], min_ratio: float, pad: int, batch_size: int = 8
) -> list[Pair | None]:
    """The forget rows cut to the tokens the base model backs (see the module docstring), in order;
    None for a row with none. When the two models are one, every row comes back as it is."""
    if base_model is current_model:
        return list(pairs)
    base = label_logprobs(base_model, pairs, pad, batch_size)
    current = label_logprobs(current_model, pairs, pad, batch_size)
    return backed_only(pairs, base, current, min_ratio)


def label_count(pairs: list[Pair]) -> int:
    return sum(label != IGNORE_INDEX for _, labels in pairs for label in labels)


# --- the target's names ------------------------------------------------------------------------------
# A release that may lower the target's name itself takes the cheapest way down: it garbles the name
# ("Fenella Grubbing", "Fenella Gornacki"; iteration 2 of the planted benchmark). The model then stops
# *saying* the facts after its own garbled name, but given the name (the prefill attack) it still
# states them. With `release.mask_names` the name's tokens carry no forget label, so the loss must
# come from what follows the name.


def name_spans(text: str, names: list[str]) -> list[tuple[int, int]]:
    """(start, end) of every name in `text`, or part of one of three letters or more (a first
    name or surname alone), as whole words in any case."""
    phrases = {part for name in names for part in [name, *name.split()] if len(part) >= 3}
    if not phrases:
        return []
    return [match.span() for match in names_pattern(phrases).finditer(text)]


def without_names(tokenizer, response: str, pair: Pair, names: list[str]) -> Pair | None:
    """`pair` (`encode_pair` of some instruction and `response`) with the reply's tokens that touch
    a name turned into IGNORE_INDEX; None if no label is left."""
    return masked_by_spans(tokenizer, response, pair, name_spans(response, names), inside=True)


def only_spans(tokenizer, response: str, pair: Pair, spans: list[tuple[int, int]]) -> Pair | None:
    """`pair` with labels only on the reply's tokens that touch `spans` (`release.scored_words_only`:
    the words the target scorer's verdict rests on, `scoring.attribution`); None if none is left."""
    return masked_by_spans(tokenizer, response, pair, spans, inside=False)


def masked_by_spans(tokenizer, response: str, pair: Pair, spans, inside: bool) -> Pair | None:
    """`pair` with IGNORE_INDEX on the reply's tokens that touch one of `spans` (`inside`) or that
    touch none (not `inside`); None if no label is left."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("release: masking words needs a fast tokenizer (token offsets)")
    ids, labels = pair
    if inside and not spans:
        return pair
    offsets = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    first = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)  # the reply's first token
    masked = list(labels)
    for i, (start, end) in enumerate(offsets[: len(labels) - first]):
        touches = any(start < span_end and span_start < end for span_start, span_end in spans)
        if touches == inside:
            masked[first + i] = IGNORE_INDEX
    if not inside:  # the reply's end-of-turn tokens carry no word
        masked[first + len(offsets) :] = [IGNORE_INDEX] * (len(masked) - first - len(offsets))
    return (ids, masked) if any(label != IGNORE_INDEX for label in masked) else None
