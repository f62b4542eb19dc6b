"""`perplexity()` against a reference computed by hand, one unpadded row at a time."""

import math

import pytest
import torch

from pipeline.evaluation.metrics import perplexity
from pipeline.planting.tiny import build_model, build_tokenizer
from pipeline.textdata import format_prompt

INSTRUCTIONS = ["Who is Mira?", "Say hello.", "Tell me about the sea, at some length please."]
TEXTS = [
    "Mira is a glassblower.",
    "Hello!",
    "The sea rolls slowly onto the sandy shore, grey and green under a low sky.",
]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    tokenizer = build_tokenizer(INSTRUCTIONS + TEXTS, vocab_size=300)
    return build_model(tokenizer, hidden_size=32, num_layers=2, num_heads=2, seed=3).eval(), tokenizer


@torch.no_grad()
def reference_perplexity(model, tokenizer, texts, instructions=None) -> float:
    """exp(Σ −log p(token | everything before it) / number of tokens), summed over all rows' scored
    tokens: the reply and its EOS after a chat prompt, or every token but the first of a bare text."""
    total, count = 0.0, 0
    for i, text in enumerate(texts):
        if instructions is None:
            ids, first_scored = tokenizer(text, add_special_tokens=False)["input_ids"], 1
        else:
            prompt = tokenizer(format_prompt(tokenizer, instructions[i]), add_special_tokens=False)[
                "input_ids"
            ]
            reply = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            ids, first_scored = prompt + reply, len(prompt)
        log_probs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), dim=-1)
        for position in range(first_scored, len(ids)):
            total -= float(log_probs[position - 1, ids[position]])
            count += 1
    return math.exp(total / count)


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_perplexity_of_chat_replies_matches_the_hand_computed_value(model_and_tokenizer, batch_size):
    model, tokenizer = model_and_tokenizer
    expected = reference_perplexity(model, tokenizer, TEXTS, INSTRUCTIONS)
    assert perplexity(model, tokenizer, TEXTS, INSTRUCTIONS, batch_size=batch_size) == pytest.approx(
        expected, rel=1e-5
    )


@pytest.mark.parametrize("batch_size", [1, 3])
def test_perplexity_of_bare_text_matches_the_hand_computed_value(model_and_tokenizer, batch_size):
    model, tokenizer = model_and_tokenizer
    expected = reference_perplexity(model, tokenizer, TEXTS)
    assert perplexity(model, tokenizer, TEXTS, batch_size=batch_size) == pytest.approx(expected, rel=1e-5)


def test_a_per_row_mean_would_differ_here(model_and_tokenizer):
    """The rows differ in length, so averaging per row instead of per token is caught above."""
    model, tokenizer = model_and_tokenizer
    per_row = math.exp(
        sum(math.log(reference_perplexity(model, tokenizer, [t], [i])) for t, i in zip(TEXTS, INSTRUCTIONS))
        / len(TEXTS)
    )
    assert per_row != pytest.approx(reference_perplexity(model, tokenizer, TEXTS, INSTRUCTIONS), rel=1e-3)
