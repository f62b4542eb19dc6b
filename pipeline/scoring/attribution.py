"""Which words make a text relevant to the target: the ones the scorer's verdict rests on.

A revealed toxic reply is mostly ordinary words around a few insults. A release that lowers the
whole reply spends most of its push on the ordinary words, and what it learns is "this reply is
unlikely", which held-out prompts in other styles never ask again. `release.scored_words_only`
lowers only the words found here, so that what the adapter learns is the words themselves. On the
embedded model's toxicity it measured worse than whole replies (one seed;
data/bench/results/pilot_tox_wide/), so it is off by default.

Found by greedy deletion, for any scorer (a black box `list[str] -> list[float]`): delete the word
whose deletion lowers the score most, and again, until the text scores below `below` (the
relevance threshold: the text would no longer have been kept), no deletion lowers it, or
`max_words` are gone. Leave-one-out alone misses redundancy: in "Oh shit, you stupid ..." deleting
either insult leaves the text toxic, so neither would count.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Span = tuple[int, int]  # character offsets [start, end) in the text

WORD = re.compile(r"\S+")


def deciding_words(
    scorer: Callable[[list[str]], list[float]],
    text: str,
    below: float,
    max_words: int = 8,
    score: float | None = None,
) -> list[Span]:
    """The spans of the words whose deletion takes `text` below `below`, most deciding first
    (see the module docstring); [] if the text already scores below it or no deletion lowers it.
    `score`: the text's own score where the caller has it (not asked of the scorer again)."""
    words = [m.span() for m in WORD.finditer(text)]
    gone: list[Span] = []
    score = scorer([text])[0] if score is None else score
    while score >= below and len(gone) < max_words:
        left = [w for w in words if w not in gone]
        if not left:
            break
        trials = scorer([_without(text, [*gone, w]) for w in left])
        best = min(range(len(left)), key=trials.__getitem__)
        if trials[best] >= score:  # no single deletion lowers it further
            break
        gone.append(left[best])
        score = trials[best]
    return gone


def target_spans(scorer, texts: list[str], below: float, scores: list[float | None]) -> list[list[Span]]:
    """The spans each text's score rests on: the scorer's own where it can say (an NER scorer
    knows where each entity is: its `spans(texts)`), else `deciding_words`. Greedy deletion cannot
    find them where any one of several spans suffices (two people named: deleting either name leaves
    a person), which is the common case for an entity target."""
    if callable(getattr(scorer, "spans", None)):
        return [sorted(spans) for spans in scorer.spans(texts)]
    return [deciding_words(scorer, text, below, score=score) for text, score in zip(texts, scores)]


def replaced(text: str, spans: list[Span], replacement: str) -> str:
    """`text` with every span replaced by `replacement` (from the end, so that earlier offsets stay valid)."""
    for start, end in sorted(spans, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def _without(text: str, spans: list[Span]) -> str:
    return replaced(text, spans, "")
