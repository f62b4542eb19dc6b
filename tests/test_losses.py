"""The unlearning losses against slow per-token references written out independently here."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.release.losses import (
    dpo_loss,
    ga_loss,
    graddiff_loss,
    kl_to_ref,
    nll_loss,
    npo_loss,
    sequence_logprob,
    simnpo_loss,
    undial_loss,
)
from pipeline.textdata import IGNORE_INDEX

B, T, V = 3, 5, 7


pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(seed: int, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=gen, dtype=dtype) * 3
    ref = torch.randn(B, T, V, generator=gen, dtype=dtype) * 3
    labels = torch.randint(0, V, (B, T), generator=gen)
    labels[0, :2] = IGNORE_INDEX
    labels[1, 4] = IGNORE_INDEX
    labels[2, :] = IGNORE_INDEX
    labels[2, 3] = 1  # one kept position in an otherwise ignored row
    return logits, ref, labels


# --- slow references: explicit loops, softmax spelled out in python floats -----------------------


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(x - top) for x in row]
    total = sum(exps)
    return [e / total for e in exps]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True) if pi > 0)


def ref_nll(logits, labels) -> float:
    total, count = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            y = int(labels[b, t])
            if y == IGNORE_INDEX:
                continue
            p = _softmax(logits[b, t].tolist())
            total += -math.log(p[y])
            count += 1
    return total / count if count else 0.0


def ref_undial(logits, labels, ref_logits, beta) -> float:
    total, count = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            y = int(labels[b, t])
            if y == IGNORE_INDEX:
                continue
            adjusted = ref_logits[b, t].tolist()
            adjusted[y] -= beta
            total += _kl(_softmax(adjusted), _softmax(logits[b, t].tolist()))
            count += 1
    return total / count if count else 0.0


def ref_kl(logits, ref_logits, mask) -> float:
    total, count = 0.0, 0
    for b in range(mask.shape[0]):
        for t in range(mask.shape[1]):
            if not mask[b, t]:
                continue
            total += _kl(_softmax(ref_logits[b, t].tolist()), _softmax(logits[b, t].tolist()))
            count += 1
    return total / count if count else 0.0


# --- values ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nll_and_ga_match_reference(seed):
    logits, _, labels = _batch(seed)
    expected = ref_nll(logits, labels)
    assert nll_loss(logits, labels).item() == pytest.approx(expected, rel=1e-5)
    assert ga_loss(logits, labels).item() == pytest.approx(-expected, rel=1e-5)


def test_nll_equals_torch_cross_entropy():
    logits, _, labels = _batch(3)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, V), labels.reshape(-1))
    torch.testing.assert_close(nll_loss(logits, labels), expected)


@pytest.mark.parametrize("beta", [0.0, 1.0, 10.0])
def test_undial_matches_reference(beta):
    logits, ref, labels = _batch(4)
    expected = ref_undial(logits, labels, ref, beta)
    assert undial_loss(logits, labels, ref, beta=beta).item() == pytest.approx(expected, rel=1e-5)


def test_a_reference_of_the_kept_positions_alone_gives_the_same_losses_and_stays_as_given():
    logits, ref, labels = _batch(4)
    keep = labels != IGNORE_INDEX
    kept = ref[keep].clone()  # what ReferenceCache.batch gives: [N, V], row-major
    torch.testing.assert_close(undial_loss(logits, labels, kept), undial_loss(logits, labels, ref))
    torch.testing.assert_close(kl_to_ref(logits, kept, keep), kl_to_ref(logits, ref, keep))
    torch.testing.assert_close(kept, ref[keep])  # UnDIAL's β adjustment works on a copy
    with pytest.raises(ValueError, match="kept positions"):
        undial_loss(logits, labels, kept[1:])


def test_undial_beta_changes_the_target():
    logits, ref, labels = _batch(5)
    assert undial_loss(logits, labels, ref, beta=0.0).item() != pytest.approx(
        undial_loss(logits, labels, ref, beta=10.0).item(), rel=1e-3
    )


def test_undial_beta_zero_is_kl_to_ref():
    logits, ref, labels = _batch(6)
    mask = labels != IGNORE_INDEX
    torch.testing.assert_close(undial_loss(logits, labels, ref, beta=0.0), kl_to_ref(logits, ref, mask))


def test_undial_is_zero_at_its_own_target():
    _, ref, labels = _batch(7)
    student = ref.clone()
    keep = labels != IGNORE_INDEX
    rows, cols = keep.nonzero(as_tuple=True)
    student[rows, cols, labels[rows, cols]] -= 10.0
    assert undial_loss(student, labels, ref, beta=10.0).item() == pytest.approx(0.0, abs=1e-6)


def test_undial_does_not_train_the_reference():
    logits, ref, labels = _batch(8)
    logits.requires_grad_(True)
    ref.requires_grad_(True)
    undial_loss(logits, labels, ref).backward()
    assert ref.grad is None
    assert logits.grad is not None and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.long, torch.float32])
def test_kl_to_ref_matches_reference(mask_dtype):
    logits, ref, labels = _batch(9)
    mask = (labels != IGNORE_INDEX).to(mask_dtype)
    expected = ref_kl(logits, ref, mask.bool())
    assert kl_to_ref(logits, ref, mask).item() == pytest.approx(expected, rel=1e-5)
    assert kl_to_ref(ref, ref, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_graddiff_is_ga_plus_weighted_nll():
    forget_logits, _, forget_labels = _batch(10)
    retain_logits, _, retain_labels = _batch(11)
    expected = -ref_nll(forget_logits, forget_labels) + 0.3 * ref_nll(retain_logits, retain_labels)
    got = graddiff_loss(forget_logits, forget_labels, retain_logits, retain_labels, retain_weight=0.3)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_ignored_positions_do_not_matter():
    logits, ref, labels = _batch(12)
    ignored = labels == IGNORE_INDEX
    scrambled = logits.clone()
    scrambled[ignored] = torch.randn(int(ignored.sum()), V) * 100
    scrambled_ref = ref.clone()
    scrambled_ref[ignored] = torch.randn(int(ignored.sum()), V) * 100
    torch.testing.assert_close(nll_loss(scrambled, labels), nll_loss(logits, labels))
    torch.testing.assert_close(
        undial_loss(scrambled, labels, scrambled_ref), undial_loss(logits, labels, ref)
    )
    torch.testing.assert_close(
        kl_to_ref(scrambled, scrambled_ref, ~ignored), kl_to_ref(logits, ref, ~ignored)
    )


def test_large_logits_stay_finite():
    logits, ref, labels = _batch(13)
    logits, ref = logits * 1e4, ref * 1e4
    mask = labels != IGNORE_INDEX
    for value in (nll_loss(logits, labels), undial_loss(logits, labels, ref), kl_to_ref(logits, ref, mask)):
        assert torch.isfinite(value)


def test_half_precision_logits_are_upcast():
    logits, ref, labels = _batch(14)
    got = nll_loss(logits.bfloat16(), labels)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref_nll(logits.bfloat16().float(), labels), rel=1e-5)


# --- gradients --------------------------------------------------------------------------------------


def test_gradcheck_nll():
    logits, _, labels = _batch(15, dtype=torch.float64)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: nll_loss(z, labels), (logits,))


def test_gradcheck_undial():
    logits, ref, labels = _batch(16, dtype=torch.float64)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: undial_loss(z, labels, ref, beta=3.0), (logits,))


def test_gradcheck_kl_to_ref():
    logits, ref, labels = _batch(17, dtype=torch.float64)
    logits.requires_grad_(True)
    mask = labels != IGNORE_INDEX
    assert torch.autograd.gradcheck(lambda z: kl_to_ref(z, ref, mask), (logits,))


# --- edge cases -------------------------------------------------------------------------------------


def test_all_ignored_batch_gives_zero_with_grad():
    logits, ref, _ = _batch(18)
    logits.requires_grad_(True)
    labels = torch.full((B, T), IGNORE_INDEX)
    mask = torch.zeros(B, T, dtype=torch.bool)
    values = [
        nll_loss(logits, labels),
        ga_loss(logits, labels),
        undial_loss(logits, labels, ref),
        kl_to_ref(logits, ref, mask),
        graddiff_loss(logits, labels, logits, labels),
    ]
    for value in values:
        assert torch.isfinite(value) and value.item() == 0.0
        assert value.requires_grad
        (grad,) = torch.autograd.grad(value, logits)
        assert torch.all(grad == 0)


def test_unshifted_shapes_are_rejected():
    logits, ref, labels = _batch(19)
    with pytest.raises(ValueError):
        nll_loss(logits, labels[:, 1:])
    with pytest.raises(ValueError):
        undial_loss(logits, labels, ref[:, 1:])
    with pytest.raises(ValueError):
        kl_to_ref(logits, ref, labels[:, 1:] != IGNORE_INDEX)


# --- NPO: a sequence-level loss ---------------------------------------------------------------------


def ref_npo(logits, labels, ref_logits, beta) -> float:
    """−(2/β)·mean_i log σ(−β·(Σ_t log p_θ − Σ_t log p_ref)), written out row by row."""
    terms = []
    for b in range(labels.shape[0]):
        kept = [t for t in range(labels.shape[1]) if int(labels[b, t]) != IGNORE_INDEX]
        if not kept:  # a row with no response token is no sequence
            continue
        log_ratio = 0.0
        for t in kept:
            y = int(labels[b, t])
            log_ratio += math.log(_softmax(logits[b, t].tolist())[y]) - math.log(
                _softmax(ref_logits[b, t].tolist())[y]
            )
        terms.append(-(2.0 / beta) * math.log(1.0 / (1.0 + math.exp(beta * log_ratio))))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("beta", [0.1, 1.0, 2.5])
def test_npo_matches_reference(beta):
    logits, ref, labels = _batch(21)
    labels[1, :] = IGNORE_INDEX  # an empty row is left out of the mean, not counted as log-ratio 0
    assert npo_loss(logits, labels, sequence_logprob(ref, labels), beta=beta).item() == pytest.approx(
        ref_npo(logits, labels, ref, beta), rel=1e-5
    )
    logits.requires_grad_(True)
    empty = npo_loss(logits, torch.full_like(labels, IGNORE_INDEX), sequence_logprob(ref, labels))
    empty.backward()
    assert empty.item() == 0.0 and logits.grad is not None


def test_npo_at_the_reference_is_2_log2_over_beta_and_pushes_likelihood_down():
    logits, _, labels = _batch(22)
    logits.requires_grad_(True)
    loss = npo_loss(logits, labels, sequence_logprob(logits.detach(), labels), beta=0.5)
    assert loss.item() == pytest.approx(2 * math.log(2) / 0.5, rel=1e-6)
    loss.backward()
    # Gradient descent on NPO lowers the log-probability of every kept label.
    keep = labels != IGNORE_INDEX
    picked_grad = logits.grad.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    assert (picked_grad[keep] > 0).all()


def test_gradcheck_npo():
    logits, ref, labels = _batch(23, dtype=torch.float64)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z: npo_loss(z, labels, sequence_logprob(ref, labels), beta=0.7), (logits,)
    )


def ref_simnpo(logits, labels, beta, delta) -> float:
    terms = []
    for b in range(labels.shape[0]):
        nlls = [
            -math.log(_softmax(logits[b, t].tolist())[int(labels[b, t])])
            for t in range(labels.shape[1])
            if int(labels[b, t]) != IGNORE_INDEX
        ]
        if not nlls:
            continue
        x = beta * (sum(nlls) / len(nlls) - delta)
        terms.append(-(2 / beta) * -math.log1p(math.exp(-x)))  # log sigmoid(x) = -log(1 + e^-x)
    return sum(terms) / len(terms)


@pytest.mark.parametrize("beta, delta", [(2.5, 0.0), (1.0, 0.5), (4.0, 2.0)])
def test_simnpo_matches_reference(beta, delta):
    logits, _, labels = _batch(20)
    got = simnpo_loss(logits, labels, beta=beta, delta=delta).item()
    assert got == pytest.approx(ref_simnpo(logits, labels, beta, delta), rel=1e-5)


def test_simnpo_ignores_empty_rows_and_stays_attached():
    logits, _, labels = _batch(21)
    labels[1, :] = IGNORE_INDEX
    got = simnpo_loss(logits, labels).item()
    assert got == pytest.approx(ref_simnpo(logits, labels, 2.5, 0.0), rel=1e-5)
    logits.requires_grad_(True)
    empty = simnpo_loss(logits, torch.full_like(labels, IGNORE_INDEX))
    empty.backward()
    assert empty.item() == 0.0 and logits.grad is not None


def test_gradcheck_simnpo():
    logits, _, labels = _batch(22, dtype=torch.float64)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: simnpo_loss(z, labels, beta=2.5, delta=0.3), (logits,))


def _seq_log_ratio(logits, ref_logits, labels, b) -> float | None:
    kept = [t for t in range(labels.shape[1]) if int(labels[b, t]) != IGNORE_INDEX]
    if not kept:
        return None
    return sum(
        math.log(_softmax(logits[b, t].tolist())[int(labels[b, t])])
        - math.log(_softmax(ref_logits[b, t].tolist())[int(labels[b, t])])
        for t in kept
    )


def ref_dpo(logits, labels, ref_logits, beta) -> float:
    half, terms = labels.shape[0] // 2, []
    for i in range(half):
        rejected = _seq_log_ratio(logits, ref_logits, labels, i)
        chosen = _seq_log_ratio(logits, ref_logits, labels, half + i)
        if rejected is None or chosen is None:  # a pair with an empty side is no pair
            continue
        terms.append(-math.log(1.0 / (1.0 + math.exp(-beta * (chosen - rejected)))))
    return sum(terms) / len(terms)


def _pairs(seed: int, dtype=torch.float32):
    """Four rows: two rejected responses, then their two chosen alternatives."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, T, V, generator=gen, dtype=dtype) * 3
    ref = torch.randn(4, T, V, generator=gen, dtype=dtype) * 3
    labels = torch.randint(0, V, (4, T), generator=gen)
    labels[0, :2] = IGNORE_INDEX
    labels[3, 4] = IGNORE_INDEX
    return logits, ref, labels


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_dpo_matches_reference_and_skips_a_pair_with_an_empty_side(beta):
    logits, ref, labels = _pairs(31)
    assert dpo_loss(logits, labels, sequence_logprob(ref, labels), beta=beta).item() == pytest.approx(
        ref_dpo(logits, labels, ref, beta), rel=1e-5
    )
    labels[3, :] = IGNORE_INDEX  # the second pair has no chosen tokens: only the first counts
    assert dpo_loss(logits, labels, sequence_logprob(ref, labels), beta=beta).item() == pytest.approx(
        ref_dpo(logits, labels, ref, beta), rel=1e-5
    )
    with pytest.raises(ValueError, match="as many chosen rows"):
        dpo_loss(logits[:3], labels[:3], sequence_logprob(ref[:3], labels[:3]))


def test_dpo_at_the_reference_is_log2_and_lowers_rejected_raises_chosen():
    logits, _, labels = _pairs(32)
    logits.requires_grad_(True)
    loss = dpo_loss(logits, labels, sequence_logprob(logits.detach(), labels), beta=0.5)
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)
    loss.backward()
    # A descent step lowers every rejected label's log-probability and raises every chosen one's.
    picked_grad = logits.grad.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    keep = labels != IGNORE_INDEX
    assert (picked_grad[:2][keep[:2]] > 0).all() and (picked_grad[2:][keep[2:]] < 0).all()


def test_gradcheck_dpo():
    logits, ref, labels = _pairs(33, dtype=torch.float64)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z: dpo_loss(z, labels, sequence_logprob(ref, labels), beta=0.7), (logits,)
    )


def test_npo_and_dpo_take_one_reference_logprob_a_row():
    logits, ref, labels = _pairs(34)
    for loss in (npo_loss, dpo_loss):
        with pytest.raises(ValueError, match="one per row"):
            loss(logits, labels, ref)  # the reference's logits, not its per-row log-probabilities
