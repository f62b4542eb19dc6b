"""The reward of a bandit pull: how relevant the k sampled responses are, and how different.

Relevance alone saturates: once an instruction makes the model recite the target, every pull of
it scores 1.0, and the bandit keeps pulling the one instruction whose recitals are all the same
(the near-duplicate filter then throws most of them away). Diversity is the Vendi score of the
responses' embeddings (Friedman & Dieng 2023, "The Vendi Score: A Diversity Evaluation Metric
for Machine Learning"), divided by k so that it lies in [1/k, 1].
"""

from __future__ import annotations

import torch


def vendi_score(embeddings: torch.Tensor) -> float:
    """exp(entropy of the eigenvalues of K/k), K the cosine-similarity matrix of the k rows.

    Identical rows give 1 (one effective item), mutually orthogonal rows give k.
    """
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(
            f"vendi_score: need a non-empty (k, dim) matrix, got shape {tuple(embeddings.shape)}"
        )
    x = torch.nn.functional.normalize(embeddings.double(), dim=-1)
    k = x.shape[0]
    eigenvalues = torch.linalg.eigvalsh(x @ x.T / k).clamp(min=0)
    nonzero = eigenvalues[eigenvalues > 1e-12]
    return float(torch.exp(-(nonzero * nonzero.log()).sum()))


def diversity(embeddings: torch.Tensor) -> float:
    """Vendi score / k, in [1/k, 1]."""
    return vendi_score(embeddings) / embeddings.shape[0]


def pull_reward(relevance: float, diversity: float, relevance_weight: float) -> float:
    """Weighted harmonic mean 1 / (w / relevance + (1 - w) / diversity); 0 if a weighted part is 0.

    The harmonic mean is high only when both parts are: diverse off-target text and relevant
    repetition both score low.
    """
    if not 0 <= relevance_weight <= 1:
        raise ValueError(f"relevance_weight must be in [0, 1], got {relevance_weight}")
    parts = [(relevance_weight, relevance), (1 - relevance_weight, diversity)]
    if any(weight > 0 and value <= 0 for weight, value in parts):
        return 0.0
    return 1.0 / sum(weight / value for weight, value in parts if weight > 0)
