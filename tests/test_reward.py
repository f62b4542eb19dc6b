"""The bandit's reward: Vendi diversity of a pull's responses and its harmonic mean with relevance."""

import math

import pytest
import torch

from pipeline.planting.tiny import build_model, build_tokenizer
from pipeline.reveal.features import embed_texts
from pipeline.reveal.reward import diversity, pull_reward, vendi_score


def test_identical_responses_count_once():
    row = torch.randn(1, 16)
    assert vendi_score(row.repeat(5, 1)) == pytest.approx(1.0, abs=1e-9)
    assert diversity(row.repeat(5, 1)) == pytest.approx(1 / 5, abs=1e-9)


def test_orthogonal_responses_count_k_times():
    assert vendi_score(torch.eye(4)[:, :4] * 3.0) == pytest.approx(4.0, abs=1e-9)
    assert diversity(torch.eye(6)) == pytest.approx(1.0, abs=1e-9)


def test_two_clusters_give_two_and_the_scale_does_not_matter():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    # Two orthogonal groups of equal size: K/k has eigenvalues 1/2, 1/2, so exp(entropy) = 2.
    assert vendi_score(torch.stack([a, a, 5 * b, b])) == pytest.approx(2.0, abs=1e-9)
    # Two vectors at angle θ: eigenvalues (1 ± cos θ) / 2.
    c = math.cos(1.0)
    lam = [(1 + c) / 2, (1 - c) / 2]
    expected = math.exp(-sum(x * math.log(x) for x in lam))
    assert vendi_score(torch.tensor([[1.0, 0.0], [c, math.sin(1.0)]])) == pytest.approx(
        expected, rel=1e-6
    )  # float32 input


def test_vendi_needs_a_matrix():
    with pytest.raises(ValueError, match="non-empty"):
        vendi_score(torch.zeros(0, 3))


def test_reward_is_the_weighted_harmonic_mean():
    assert pull_reward(1.0, 0.25, 0.5) == pytest.approx(1 / (0.5 / 1.0 + 0.5 / 0.25))
    assert pull_reward(0.6, 0.3, 0.8) == pytest.approx(1 / (0.8 / 0.6 + 0.2 / 0.3))
    assert pull_reward(1.0, 1.0, 0.3) == pytest.approx(1.0)
    assert pull_reward(0.0, 1.0, 0.5) == 0.0  # off-target text earns nothing, however diverse
    assert pull_reward(0.7, 0.1, 1.0) == pytest.approx(0.7)  # weight 1: relevance alone
    assert pull_reward(0.0, 0.4, 0.0) == pytest.approx(0.4)  # weight 0: diversity alone
    with pytest.raises(ValueError, match="relevance_weight"):
        pull_reward(0.5, 0.5, 1.5)


def test_a_pull_whose_responses_are_all_empty_counts_as_one_item():
    """A model that answers nothing (EOS first) gives a batch with no tokens: zero rows, not a crash."""
    tokenizer = build_tokenizer(["some words to build a vocabulary from"], vocab_size=300)
    model = build_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2, seed=0).eval()
    rows = embed_texts(model, tokenizer, ["", ""])
    assert rows.shape == (2, 32) and not rows.any()
    assert diversity(rows) == pytest.approx(1 / 2)
    mixed = embed_texts(model, tokenizer, ["", "some words"])
    assert not mixed[0].any() and mixed[1].norm() == pytest.approx(1.0)
