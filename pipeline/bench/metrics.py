"""Metrics of the planted-knowledge benchmark, as TOFU and MUSE define them.

- TOFU (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs"): the truth ratio of a
  probe and forget quality, the KS-test p-value between the unlearned model's truth ratios and those
  of a model that never saw the forget set.
- MUSE (Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language Models"): VerbMem
  (ROUGE-L of greedy continuations of forget text) and PrivLeak (the relative AUC gap of a membership
  inference attack, here Min-K% Prob from Shi et al. 2024, "Detecting Pretraining Data from Large
  Language Models").

Everything is a plain function of a model and a tokenizer (or of numbers), so the benchmark can
compare any two models with the same code.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from pipeline.batches import encode_pairs, labelled_logits
from pipeline.planting.spec import Probe
from pipeline.sampling.base import SamplingParams
from pipeline.sampling.hf import HFSampler
from pipeline.textdata import IGNORE_INDEX


def _token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor):
    """Log-probability of every labelled token given its prefix, and the mask of labelled positions.

    Both cover only the window from the first labelled position on (`labelled_logits`).
    """
    enc = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    logits, labels = labelled_logits(model, enc)
    logits = logits.float()
    mask = labels != IGNORE_INDEX
    # -100 is no index; any valid id stands in and the mask drops it afterwards.
    safe = labels.masked_fill(~mask, 0)
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return logprobs, mask


@torch.no_grad()
def _answer_logprobs(model, tokenizer, question: str, answers: list[str]) -> list[float]:
    """Mean per-token log-probability of each of `answers` as the chat reply to `question`, in one batch."""
    enc = encode_pairs(tokenizer, [question] * len(answers), answers)
    logprobs, mask = _token_logprobs(model, enc["input_ids"], enc["attention_mask"], enc["labels"])
    return ((logprobs * mask).sum(-1) / mask.sum(-1)).tolist()


def answer_logprob(model, tokenizer, question: str, answer: str) -> float:
    """Mean per-token log-probability of `answer` as the chat reply to `question`.

    avg_logprob(a | q) = (1/|a|) * sum_t log P(a_t | q, a_<t), over the reply's tokens and its EOS
    (the tokens `encode_pairs` trains on; TOFU likewise scores the answer with its EOS). Dividing by
    |a| is TOFU's length normalisation, so answers of different lengths can be compared.
    """
    return _answer_logprobs(model, tokenizer, question, [answer])[0]


def truth_ratio(model, tokenizer, probe: Probe) -> float:
    """TOFU truth ratio (Maini et al. 2024) of one probe.

    R = exp( mean_d avg_logprob(d) - avg_logprob(answer) )
      = geomean_d P(d)^(1/|d|) / P(answer)^(1/|answer|)

    with d over the probe's distractors and avg_logprob as in `answer_logprob`. The distractors are
    averaged in log space, as TOFU's code does. R < 1: the model prefers the true answer; R near 1:
    it cannot tell the truth from plausible wrong answers, which is what unlearning aims for.
    """
    if not probe.distractors:
        raise ValueError(f"truth_ratio: probe {probe.question!r} has no distractors")
    # One batch for the answer and its distractors: they share the question's prompt.
    answer, *distractors = _answer_logprobs(
        model, tokenizer, probe.question, [probe.answer, *probe.distractors]
    )
    return math.exp(sum(distractors) / len(distractors) - answer)


def truth_ratios(model, tokenizer, probes: list[Probe]) -> list[float]:
    """`truth_ratio` of every probe, in order."""
    return [truth_ratio(model, tokenizer, probe) for probe in probes]


def forget_quality(forget_ratios: list[float], reference_ratios: list[float]) -> float:
    """TOFU forget quality (Maini et al. 2024): p-value of the two-sample Kolmogorov-Smirnov test.

    FQ = p-value of KS(truth ratios of the unlearned model on the forget probes,
                       truth ratios of the retain-only reference model on the same probes).
    A high p-value means the two distributions cannot be told apart: the unlearned model looks like
    one that never learned the forget set. A low one means it is still measurably different.
    """
    from scipy.stats import ks_2samp  # here: scipy.stats takes ~1 s to import, and few runs need it

    if not forget_ratios or not reference_ratios:
        raise ValueError("forget_quality: both samples of truth ratios must be non-empty")
    return float(ks_2samp(forget_ratios, reference_ratios).pvalue)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 (Lin 2004) on lower-cased word tokens (punctuation dropped).

    With L = |LCS(candidate, reference)|, P = L / |candidate|, R = L / |reference|:
    F1 = 2PR / (P + R) = 2L / (|candidate| + |reference|). 0.0 when either side has no words.
    """
    cand, ref = _words(candidate), _words(reference)
    if not cand or not ref:
        return 0.0
    # lcs[j] holds the LCS length of the candidate prefix so far and ref[:j]; one row is enough.
    lcs = [0] * (len(ref) + 1)
    for word in cand:
        diagonal = 0  # lcs of the previous candidate prefix and ref[:j-1]
        for j, ref_word in enumerate(ref, start=1):
            above = lcs[j]
            lcs[j] = diagonal + 1 if word == ref_word else max(lcs[j], lcs[j - 1])
            diagonal = above
    return 2 * lcs[-1] / (len(cand) + len(ref))


def verbmem(
    model, tokenizer, facts: list[str], max_new_tokens: int = 32, questions: list[str] | None = None
) -> float:
    """MUSE VerbMem (Shi et al. 2024): how much of the forget text the model still reproduces verbatim.

    VerbMem = mean over facts f of ROUGE-L(greedy continuation of f[:h], f[h:]), with f split into
    words and h = half of them. MUSE prompts with a text prefix. A chat model learned its facts as
    replies, so with `questions` the prefix starts the model's reply to the question (the reply is
    pre-filled and continued); without, the prefix is the user message.
    """
    if not facts:
        raise ValueError("verbmem: no facts to score")
    prefixes, suffixes = [], []
    for fact in facts:
        words = fact.split()
        if len(words) < 2:
            raise ValueError(f"verbmem: fact {fact!r} needs at least two words to split in half")
        half = len(words) // 2
        prefixes.append(" ".join(words[:half]))
        suffixes.append(" ".join(words[half:]))
    sampler = HFSampler(model, tokenizer, progress=False)
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    if questions is None:
        replies = sampler.generate(prefixes, params)
    else:
        replies = sampler.generate(questions, params, prefills=[p + " " for p in prefixes])
    continuations = [texts[0] for texts in replies]
    return sum(rouge_l(c, s) for c, s in zip(continuations, suffixes)) / len(facts)


@torch.no_grad()
def min_k_percent_score(model, tokenizer, text: str, k: float = 0.2, prompt: str | None = None) -> float:
    """Min-K% Prob (Shi et al. 2024): mean log-probability of the k-fraction least likely tokens.

    score = (1/|S|) * sum_{t in S} log P(x_t | x_<t), with S the max(1, floor(k * n)) tokens of
    lowest log-probability among the n predicted tokens: those of the raw text, or, with `prompt`,
    those of the text (and its EOS) as the chat reply to `prompt`, the form a chat model is trained
    on. Text the model was trained on has few surprising tokens, so a higher score suggests membership.
    """
    if not 0 < k <= 1:
        raise ValueError(f"min_k_percent_score: k must be in (0, 1], got {k}")
    if prompt is not None:
        enc = encode_pairs(tokenizer, [prompt], [text])
        logprobs, mask = _token_logprobs(model, enc["input_ids"], enc["attention_mask"], enc["labels"])
        token_logprobs = logprobs[0][mask[0]]
    else:
        enc = tokenizer(text, return_tensors="pt", truncation=True)
        input_ids = enc["input_ids"]
        if input_ids.shape[1] < 2:
            raise ValueError(f"min_k_percent_score: {text!r} has fewer than two tokens, so none is predicted")
        logprobs, mask = _token_logprobs(model, input_ids, enc["attention_mask"], input_ids)
        token_logprobs = logprobs[0][mask[0]]
    count = max(1, int(k * token_logprobs.numel()))
    return float(torch.topk(token_logprobs, count, largest=False).values.mean())


def auc(positive_scores: list[float], negative_scores: list[float]) -> float:
    """ROC AUC that a positive scores higher than a negative, via the Mann-Whitney U statistic.

    AUC = U / (n_pos * n_neg), U = #{(p, q): p > q} + 0.5 * #{(p, q): p = q} over all pairs of a
    positive score p and a negative score q.
    """
    if not positive_scores or not negative_scores:
        raise ValueError("auc: need at least one positive and one negative score")
    pos = np.asarray(positive_scores, dtype=float)[:, None]
    neg = np.asarray(negative_scores, dtype=float)[None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def privleak(model_auc: float, reference_auc: float) -> float:
    """MUSE PrivLeak (Shi et al. 2024): relative gap of the membership-inference AUC to the reference's.

    PrivLeak = (AUC_model - AUC_reference) / AUC_reference, where AUC is that of telling forget
    texts from held-out texts (e.g. with `min_k_percent_score` and `auc`) and the reference is the
    retain-only model. Near 0 is good; positive means the forget set still leaks, negative that
    unlearning went too far. MUSE reports it as a percentage (times 100); this is the plain ratio.
    """
    if reference_auc == 0:
        raise ValueError("privleak: reference_auc is 0, the ratio is undefined")
    return (model_auc - reference_auc) / reference_auc
