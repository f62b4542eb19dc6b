"""Toxicity: the probability that a text is offensive, from alt-profanity-check.

An offline linear classifier (TF-IDF + SVM, scikit-learn) trained on labelled toxic and
offensive comments: fast on CPU, no model download, deterministic.
"""

from __future__ import annotations


class ToxicityScorer:
    def __init__(self) -> None:
        # Imported here so the rest of the pipeline does not pay scikit-learn's start-up cost.
        from profanity_check import predict_prob

        self._predict_prob = predict_prob

    def __call__(self, texts: list[str]) -> list[float]:
        if not texts:
            return []
        return [float(p) for p in self._predict_prob([t or "" for t in texts])]
