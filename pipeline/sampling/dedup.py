"""Exact and near-duplicate removal for sampled texts.

Near duplicates are found by Jaccard similarity of word 3-gram shingles: cheap, and enough
to stop a set of samples from being twenty copies of the same sentence.
"""

from __future__ import annotations


def shingles(text: str, n: int = 3) -> frozenset:
    words = text.lower().split()
    if len(words) < n:
        return frozenset([" ".join(words)])
    return frozenset(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def drop_near_duplicates(rows: list[dict], threshold: float, key: str = "response") -> list[dict]:
    """Keep the first of every group of rows whose texts are at least `threshold` similar."""
    kept, kept_shingles, seen_exact = [], [], set()
    for row in rows:
        text = " ".join(row[key].lower().split())
        if text in seen_exact:
            continue
        sh = shingles(text)
        if any(jaccard(sh, other) >= threshold for other in kept_shingles):
            continue
        seen_exact.add(text)
        kept_shingles.append(sh)
        kept.append(row)
    return kept
