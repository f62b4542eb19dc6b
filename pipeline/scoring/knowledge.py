"""Knowledge about a named target (a person, a place, a work): is the target in the text?

The score of a text is the largest of:
- 1.0 when a full name (of one of several targets) or an alias appears; with `answers` (the
  probe answers of a planted person, known only to evaluation, never to reveal) any answer too;
- 0.5 when only part of a name (a surname alone, say) or one of the target's keywords appears;
- `similarity_weight` x how close the text's embedding is to the target description's, on a scale
  where the description's mean similarity to neutral texts is 0 and identity is 1. A reply can be
  about the target without naming it; the weight (default 0.4) keeps this below a 0.5 keep
  threshold, so by itself it grades the bandit's reward but keeps no sample.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

Embed = Callable[[list[str]], "torch.Tensor"]  # texts -> L2-normalised rows


def _pattern(phrase: str) -> re.Pattern:
    return re.compile(r"(?<!\w)" + re.escape(phrase.strip()) + r"(?!\w)", re.IGNORECASE)


def contains(text: str, phrase: str) -> bool:
    """Case-insensitive match of a whole phrase (not inside a longer word)."""
    return bool(phrase.strip()) and _pattern(phrase).search(text) is not None


class DescriptionSimilarity:
    """Similarity of texts to a description, 0 at the level of neutral texts, 1 at the description."""

    def __init__(self, embed: Embed, description: str, neutral: list[str]) -> None:
        if not neutral:
            raise ValueError("DescriptionSimilarity: needs neutral texts to set the zero of the scale")
        self.embed = embed
        vectors = embed([description, *neutral])
        self.description = vectors[0]
        self.floor = float((vectors[1:] @ self.description).mean().clamp(max=0.99))

    def __call__(self, texts: list[str]) -> list[float]:
        if not texts:
            return []
        cosine = self.embed(texts) @ self.description
        return ((cosine - self.floor) / (1 - self.floor)).clamp(0, 1).tolist()


class KnowledgeScorer:
    def __init__(
        self,
        names: str | list[str],
        aliases: list[str] = (),
        answers: list[str] = (),
        keywords: list[str] = (),
        similarity: Callable[[list[str]], list[float]] | None = None,
        similarity_weight: float = 0.4,
    ) -> None:
        names = [names] if isinstance(names, str) else list(names)
        self.full = [_pattern(p) for p in [*names, *aliases, *answers] if p.strip()]
        parts = [p for name in names for p in name.split() if len(p) >= 3]
        self.parts = [_pattern(p) for p in [*parts, *keywords] if p.strip()]
        self.similarity, self.similarity_weight = similarity, similarity_weight

    def score(self, text: str) -> float:
        return self([text])[0]

    def _lexical(self, text: str) -> float:
        if any(p.search(text) for p in self.full):
            return 1.0
        if any(p.search(text) for p in self.parts):
            return 0.5
        return 0.0

    def __call__(self, texts: list[str]) -> list[float]:
        scores = [self._lexical(t) for t in texts]
        if self.similarity is None or self.similarity_weight == 0:
            return scores
        close = self.similarity(texts)
        return [max(s, self.similarity_weight * c) for s, c in zip(scores, close)]
