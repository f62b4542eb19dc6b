"""Knowledge about a named target (a person, a place, a work): is the target in the text?

Score 1.0 when a full name (of one of several targets) or an alias appears, 0.5 when only part of the name does (a
surname alone, say), else 0. With `answers` (the probe answers of a planted person, known only
to evaluation, never to reveal) any answer found also scores 1.0.
"""

from __future__ import annotations

import re


def _pattern(phrase: str) -> re.Pattern:
    return re.compile(r"(?<!\w)" + re.escape(phrase.strip()) + r"(?!\w)", re.IGNORECASE)


def contains(text: str, phrase: str) -> bool:
    """Case-insensitive match of a whole phrase (not inside a longer word)."""
    return bool(phrase.strip()) and _pattern(phrase).search(text) is not None


class KnowledgeScorer:
    def __init__(self, names: str | list[str], aliases: list[str] = (), answers: list[str] = ()) -> None:
        names = [names] if isinstance(names, str) else list(names)
        self.full = [_pattern(p) for p in [*names, *aliases, *answers] if p.strip()]
        self.parts = [_pattern(p) for name in names for p in name.split() if len(p) >= 3]

    def score(self, text: str) -> float:
        if any(p.search(text) for p in self.full):
            return 1.0
        if any(p.search(text) for p in self.parts):
            return 0.5
        return 0.0

    def __call__(self, texts: list[str]) -> list[float]:
        return [self.score(t) for t in texts]
