"""Measurements on a model: perplexity of reference text, probe accuracy, mean score."""

from __future__ import annotations

import math

import torch

from pipeline.scoring.knowledge import contains
from pipeline.textdata import encode_pairs, labelled_logits


@torch.no_grad()
def perplexity(
    model,
    tokenizer,
    texts: list[str],
    instructions: list[str] | None = None,
    batch_size: int = 8,
    max_length: int = 256,
) -> float:
    """exp(mean token NLL) of `texts`; with `instructions`, of the texts as chat replies to them."""
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        if instructions is not None:
            enc = encode_pairs(tokenizer, instructions[start : start + batch_size], chunk, max_length)
        else:
            enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
            enc = dict(enc)
            enc["labels"] = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        logits, labels = labelled_logits(model, enc)
        mask = labels != -100
        nll = torch.nn.functional.cross_entropy(logits[mask].float(), labels[mask], reduction="sum")
        total_nll += float(nll)
        total_tokens += int(mask.sum())
    if total_tokens == 0:
        raise ValueError("perplexity: no tokens to score")
    return math.exp(total_nll / total_tokens)


def answer_rate(replies: list[str], answers: list[str]) -> float:
    """Share of replies that contain their probe's answer (case-insensitive, whole words)."""
    if not answers:
        raise ValueError("answer_rate: no answers to look for")
    return sum(contains(reply, answer) for reply, answer in zip(replies, answers)) / len(answers)
