"""Unlearning objectives as plain functions of logits and labels.

Conventions shared by every function here:

* logits are ALREADY SHIFTED (see `pipeline.batches.shifted`): `logits[:, t]` predicts `labels[:, t]`,
  shapes `[B, T, V]` and `[B, T]`. A shape mismatch raises, because silently broadcasting unshifted
  inputs would train on the wrong tokens.
* label `IGNORE_INDEX` (-100) marks a position that takes no part in the loss.
* token-level losses are averaged over every non-ignored position of the whole batch (not per row),
  so long answers weigh more than short ones, as in the usual causal-LM loss.
* a batch with no position left returns a zero that is still attached to the graph, so a training
  loop can call `backward()` on it unconditionally instead of getting NaN from 0 / 0.
* half-precision logits are upcast to float32 before the softmax: these losses are differences of
  nearly equal log-probabilities and bf16 rounding would swamp them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.textdata import IGNORE_INDEX


def _float(logits: torch.Tensor) -> torch.Tensor:
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(_float(logits), dim=-1)


def _ref_at(ref_logits: torch.Tensor, logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The reference logits at the kept positions [N, V], detached: picked from a [B, T, V] tensor
    shaped like `logits`, or given as they are (`pipeline.release.reference` keeps only those rows,
    in the row-major order of `keep`)."""
    ref = ref_logits.detach()
    if ref.shape == logits.shape:
        return ref[keep]
    n = int(keep.sum())
    if ref.shape != (n, logits.shape[-1]):
        raise ValueError(
            f"ref_logits {tuple(ref.shape)} must match logits {tuple(logits.shape)} or be the {n} kept "
            f"positions' [{n}, {logits.shape[-1]}]"
        )
    return ref


def _check_shapes(logits: torch.Tensor, labels_or_mask: torch.Tensor, what: str) -> None:
    if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(labels_or_mask.shape):
        raise ValueError(
            f"expected logits [B, T, V] and {what} [B, T] (already shifted), "
            f"got {tuple(logits.shape)} and {tuple(labels_or_mask.shape)}"
        )


def _masked_mean(per_position: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # torch.where rather than a product: an inf/NaN at an ignored position must not leak into the sum.
    total = torch.where(mask, per_position, torch.zeros_like(per_position)).sum()
    return total / mask.sum().clamp(min=1).to(total.dtype)


def _token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position NLL [B, T] (garbage where ignored) and the keep-mask [B, T]."""
    _check_shapes(logits, labels, "labels")
    keep = labels != IGNORE_INDEX
    # -100 is not a valid index for gather; any real index will do since the position is masked out.
    safe_labels = torch.where(keep, labels, torch.zeros_like(labels))
    log_probs = _log_softmax(logits)
    picked = log_probs.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
    return -picked, keep


def nll_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean token negative log-likelihood.

    `(1/N) Σ_{(b,t): y_bt ≠ -100} −log softmax(z_bt)[y_bt]`, with N the number of kept positions.
    This is the ordinary causal-LM cross-entropy; used on retain data to keep the model useful.
    """
    nll, keep = _token_nll(logits, labels)
    return _masked_mean(nll, keep)


def ga_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gradient ascent on the forget data: `−nll_loss(logits, labels)`.

    Minimising it pushes the likelihood of the forget tokens down without bound (Jang et al., ACL 2023,
    "Knowledge Unlearning for Mitigating Privacy Risks in Language Models", arXiv 2210.01504), which is why
    it is normally paired with a retain term (`graddiff_loss`) or replaced by `undial_loss`.
    """
    return -nll_loss(logits, labels)


def undial_loss(
    logits: torch.Tensor, labels: torch.Tensor, ref_logits: torch.Tensor, beta: float = 10.0
) -> torch.Tensor:
    """UnDIAL: self-distillation towards reference logits with the target token pushed down.

    Dong et al., "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large Language
    Models", NAACL 2025, arXiv 2402.10052. Per kept position t with label y_t:

        q_t = softmax(z_ref_t − β · onehot(y_t))          (z_ref detached: the teacher is fixed)
        ℓ_t = KL(q_t ‖ softmax(z_t)) = Σ_v q_t[v] (log q_t[v] − log softmax(z_t)[v])

    and the loss is the mean of ℓ_t over kept positions. Unlike gradient ascent the target is a proper
    distribution, so the loss is bounded below by 0 and training does not diverge. With β = 0 it is
    plain distillation to the reference (`kl_to_ref`). `ref_logits`: [B, T, V] like `logits`, or the
    kept positions' alone, [N, V] in the row-major order of `labels != IGNORE_INDEX`.
    """
    _check_shapes(logits, labels, "labels")
    keep = labels != IGNORE_INDEX
    z, ref = logits[keep], _ref_at(ref_logits, logits, keep)  # [N, V]: only kept positions are scored
    if not len(z):
        return logits.sum() * 0.0
    ref = ref.to(torch.float32, copy=True)  # adjusted in place below: never the caller's tensor
    ref[torch.arange(len(ref)), labels[keep]] -= beta
    return _mean_kl(F.log_softmax(ref, dim=-1), _log_softmax(z))


def kl_to_ref(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked-in positions of KL(softmax(z_ref) ‖ softmax(z)).

    `(1/N) Σ_{(b,t): mask_bt} Σ_v p_ref[v] (log p_ref[v] − log p[v])`. The reference is detached: it is
    the frozen model we want to stay close to on retain data, not something to train.
    `mask` is bool or 0/1 of shape [B, T]; `ref_logits` as in `undial_loss`.
    """
    _check_shapes(logits, mask, "mask")
    keep = mask != 0
    ref = _ref_at(ref_logits, logits, keep)
    if not keep.any():
        return logits.sum() * 0.0
    return _mean_kl(_log_softmax(ref), _log_softmax(logits[keep]))


def _mean_kl(log_target: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(target ‖ model) from log-probabilities [N, V]."""
    return F.kl_div(log_probs, log_target.to(log_probs.dtype), reduction="batchmean", log_target=True)


def graddiff_loss(
    forget_logits: torch.Tensor,
    forget_labels: torch.Tensor,
    retain_logits: torch.Tensor,
    retain_labels: torch.Tensor,
    retain_weight: float = 1.0,
) -> torch.Tensor:
    """Gradient difference: `ga_loss(forget) + retain_weight · nll_loss(retain)`.

    Liu et al., "Continual Learning and Private Unlearning", CoLLAs 2022 (arXiv 2203.12817); the name and
    form used by TOFU (Maini et al., 2024, arXiv 2401.06121). Ascent on the forget set, descent on the
    retain set, so that forgetting does not take general ability down with it.
    """
    return ga_loss(forget_logits, forget_labels) + retain_weight * nll_loss(retain_logits, retain_labels)


def token_logprob(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position log π(y_t | x, y_<t) [B, T] (garbage where ignored) and the keep-mask [B, T]."""
    nll, keep = _token_nll(logits, labels)
    return -nll, keep


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of each row's kept tokens, `log π(y|x)` per sequence, shape [B]."""
    nll, keep = _token_nll(logits, labels)
    return -torch.where(keep, nll, torch.zeros_like(nll)).sum(-1)


def _checked_logprobs(ref_logprobs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The reference's per-row log-probabilities, detached (the frozen model is not trained)."""
    if ref_logprobs.shape != logits.shape[:1]:
        raise ValueError(f"ref_logprobs {tuple(ref_logprobs.shape)} must be one per row ({logits.shape[0]})")
    return ref_logprobs.detach().to(logits.dtype)


def npo_loss(
    logits: torch.Tensor, labels: torch.Tensor, ref_logprobs: torch.Tensor, beta: float = 0.1
) -> torch.Tensor:
    """Negative Preference Optimization on the forget data.

    Zhang et al., "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning",
    2024, arXiv 2404.05868. With sequence log-probabilities (summed over response tokens):

        L = −(2/β) · mean_i log σ(−β · (log πθ(y_i|x_i) − log πref(y_i|x_i)))

    averaged over the sequences of the batch that have at least one kept token (as `simnpo_loss`);
    `ref_logprobs` [B] is log πref(y_i|x_i), the frozen model's `sequence_logprob`.
    Unlike gradient ascent its gradient vanishes once πθ(y|x) falls well below πref(y|x), so it does
    not collapse.
    """
    _check_shapes(logits, labels, "labels")
    log_ratio = sequence_logprob(logits, labels) - _checked_logprobs(ref_logprobs, logits)
    rows = (labels != IGNORE_INDEX).any(-1)
    if not rows.any():
        return log_ratio.sum() * 0.0  # attached to the graph, like the token-level losses
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio[rows]).mean()


def simnpo_loss(
    logits: torch.Tensor, labels: torch.Tensor, beta: float = 2.5, delta: float = 0.0
) -> torch.Tensor:
    """SimNPO: NPO without a reference model, on length-normalised likelihood.

    Fan et al., "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning",
    2024, arXiv 2410.07163. With NLLavg(y) = −(1/|y|) log πθ(y|x), the mean NLL of a response's kept
    tokens:

        L = −(2/β) · mean_i log σ(β · (NLLavg(y_i) − δ))

    averaged over the sequences of the batch that have at least one kept token. The loss falls as
    the forget responses become unlikely and flattens once NLLavg passes δ by a few 1/β.
    """
    nll, keep = _token_nll(logits, labels)
    counts = keep.sum(-1)
    nll_avg = torch.where(keep, nll, torch.zeros_like(nll)).sum(-1) / counts.clamp(min=1).to(nll.dtype)
    per_sequence = -(2.0 / beta) * F.logsigmoid(beta * (nll_avg - delta))
    rows = counts > 0
    if not rows.any():
        return nll.sum() * 0.0  # attached to the graph, like the token-level losses
    return per_sequence[rows].mean()


def dpo_loss(
    logits: torch.Tensor, labels: torch.Tensor, ref_logprobs: torch.Tensor, beta: float = 0.1
) -> torch.Tensor:
    """DPO with the forget response as the rejected one and an alternative as the chosen one.

    Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward
    Model", NeurIPS 2023, arXiv 2305.18290, eq. 7; as an unlearning objective with alternative
    answers in TOFU (Maini et al., 2024) and, with the model's own non-toxic generations as the
    chosen ones, for toxicity in Lee et al., "A Mechanistic Understanding of Alignment Algorithms:
    A Case Study on DPO and Toxicity", ICML 2024, arXiv 2401.01967. The batch holds 2B rows: rows
    0..B-1 are the forget (rejected) responses y_l, row B + i the chosen alternative y_w to the same
    instruction as row i. With sequence log-probabilities (summed over response tokens):

        L = −mean_i log σ(β · [(log πθ(y_w|x) − log πref(y_w|x)) − (log πθ(y_l|x) − log πref(y_l|x))])

    over the pairs whose two rows both have a kept token; `ref_logprobs` [2B] is log πref of every
    row, the frozen model's `sequence_logprob`. The loss is ≥ 0, and unlike NPO it can fall by
    raising the chosen response as well as by lowering the rejected one.
    """
    _check_shapes(logits, labels, "labels")
    if logits.shape[0] % 2:
        raise ValueError(
            f"dpo_loss: expected rejected rows then as many chosen rows, got {logits.shape[0]} rows"
        )
    log_ratio = sequence_logprob(logits, labels) - _checked_logprobs(ref_logprobs, logits)
    half = logits.shape[0] // 2
    rejected, chosen = log_ratio[:half], log_ratio[half:]
    kept = (labels != IGNORE_INDEX).any(-1)
    pairs = kept[:half] & kept[half:]
    if not pairs.any():
        return log_ratio.sum() * 0.0  # attached to the graph, like the token-level losses
    return -F.logsigmoid(beta * (chosen - rejected))[pairs].mean()
