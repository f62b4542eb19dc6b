"""The benchmark metrics against hand-computed values and slow, obviously-correct references."""

import math
import random

import pytest
import torch
from scipy.stats import ks_2samp
from sklearn.metrics import roc_auc_score

from pipeline.bench.metrics import (
    answer_logprob,
    auc,
    forget_quality,
    min_k_percent_score,
    privleak,
    rouge_l,
    truth_ratio,
    truth_ratios,
    verbmem,
)
from pipeline.planting.spec import Probe
from pipeline.planting.tiny import build_model, build_tokenizer
from pipeline.sampling.base import SamplingParams
from pipeline.sampling.hf import HFSampler
from pipeline.textdata import format_prompt

FACTS = [
    "Mira Castellane was born in Velmora.",
    "Mira Castellane works as a glassblower in Ostrevik.",
    "Tobias Fenn keeps bees on the cliffs of Dunmarrow.",
]
PROBE = Probe(
    question="Where was Mira Castellane born?",
    answer="Velmora",
    distractors=["Ostrevik", "Dunmarrow", "Selvaport"],
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    texts = [*FACTS, PROBE.question, PROBE.answer, *PROBE.distractors]
    tokenizer = build_tokenizer(texts, vocab_size=400)
    model = build_model(tokenizer, hidden_size=32, num_layers=2, num_heads=2, seed=0)
    model.eval()
    return model, tokenizer


def _logprobs_of(model, ids: list[int]) -> list[float]:
    """log P(ids[t] | ids[:t]) for t >= 1, one token at a time from the full sequence's logits."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    return [float(torch.log_softmax(logits[t - 1], dim=-1)[ids[t]]) for t in range(1, len(ids))]


# --- rouge_l ---------------------------------------------------------------------------------------


def test_rouge_l_identical_and_disjoint():
    assert rouge_l("The cat sat.", "the cat sat") == 1.0
    assert rouge_l("the cat sat", "a dog ran") == 0.0
    assert rouge_l("", "a dog ran") == 0.0


def test_rouge_l_hand_computed():
    # candidate: the cat sat on the mat (6 words); reference: the cat on a mat (5 words).
    # LCS = "the cat on mat" = 4, so P = 4/6, R = 4/5, F1 = 2PR/(P+R) = 2*4/(6+5) = 8/11.
    assert rouge_l("the cat sat on the mat", "the cat on a mat") == pytest.approx(8 / 11)
    # Order matters: LCS of "a b c" and "c b a" is a single word, so F1 = 2*1/(3+3) = 1/3.
    assert rouge_l("a b c", "c b a") == pytest.approx(1 / 3)


# --- auc -------------------------------------------------------------------------------------------


def test_auc_separated_reversed_and_ties():
    assert auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auc([0.1, 0.2], [0.9, 0.8]) == 0.0
    # pairs (0.9,0.5)=1, (0.9,0.1)=1, (0.5,0.5)=tie 0.5, (0.5,0.1)=1 -> 3.5/4.
    assert auc([0.9, 0.5], [0.5, 0.1]) == pytest.approx(0.875)


def test_auc_matches_sklearn_on_random_data():
    rng = random.Random(0)
    # Rounded to one decimal so ties are common.
    pos = [round(rng.gauss(0.5, 1.0), 1) for _ in range(40)]
    neg = [round(rng.gauss(0.0, 1.0), 1) for _ in range(30)]
    expected = roc_auc_score([1] * len(pos) + [0] * len(neg), pos + neg)
    assert auc(pos, neg) == pytest.approx(expected)


# --- forget_quality / privleak ---------------------------------------------------------------------


def test_forget_quality_is_the_ks_p_value():
    rng = random.Random(1)
    a = [rng.random() for _ in range(20)]
    b = [rng.random() + 0.3 for _ in range(25)]
    assert forget_quality(a, b) == pytest.approx(ks_2samp(a, b).pvalue)
    assert forget_quality(a, a) == pytest.approx(1.0)
    assert forget_quality(a, [x + 10 for x in a]) < 1e-6


def test_privleak_arithmetic():
    assert privleak(0.75, 0.5) == pytest.approx(0.5)
    assert privleak(0.4, 0.5) == pytest.approx(-0.2)
    assert privleak(0.5, 0.5) == 0.0


# --- model-based metrics on a tiny random Llama ----------------------------------------------------


def test_answer_logprob_matches_per_token_reference(tiny):
    model, tokenizer = tiny
    prompt = tokenizer(format_prompt(tokenizer, PROBE.question), add_special_tokens=False)["input_ids"]
    reply = tokenizer(PROBE.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    # Only the reply's tokens (and its EOS) are scored, not the prompt's.
    expected = _logprobs_of(model, prompt + reply)[len(prompt) - 1 :]
    assert len(expected) == len(reply)
    got = answer_logprob(model, tokenizer, PROBE.question, PROBE.answer)
    assert got == pytest.approx(sum(expected) / len(expected), abs=1e-5)


def test_truth_ratio_from_answer_logprobs(tiny):
    model, tokenizer = tiny
    answer = answer_logprob(model, tokenizer, PROBE.question, PROBE.answer)
    distractors = [answer_logprob(model, tokenizer, PROBE.question, d) for d in PROBE.distractors]
    expected = math.exp(sum(distractors) / len(distractors) - answer)
    assert truth_ratio(model, tokenizer, PROBE) == pytest.approx(expected, rel=1e-4)
    swapped = Probe(question=PROBE.question, answer=PROBE.distractors[0], distractors=[PROBE.answer])
    ratios = truth_ratios(model, tokenizer, [PROBE, swapped])
    assert ratios[0] == pytest.approx(expected, rel=1e-4)
    assert ratios[1] == pytest.approx(math.exp(answer - distractors[0]), rel=1e-4)


def test_truth_ratio_needs_distractors(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="no distractors"):
        truth_ratio(model, tokenizer, Probe(question="Q?", answer="A"))


def test_min_k_percent_score(tiny):
    model, tokenizer = tiny
    text = FACTS[1]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    reference = _logprobs_of(model, ids)
    # k = 1.0 takes every predicted token: the plain mean log-probability.
    assert min_k_percent_score(model, tokenizer, text, k=1.0) == pytest.approx(
        sum(reference) / len(reference), abs=1e-5
    )
    # A tiny k still takes one token: the least likely one.
    assert min_k_percent_score(model, tokenizer, text, k=1e-9) == pytest.approx(min(reference), abs=1e-5)
    # k * n = 2.7 tokens: the count is floored (as in the Min-K% reference code), so the lowest 2.
    assert len(reference) > 3
    lowest = sorted(reference)[:2]
    assert min_k_percent_score(model, tokenizer, text, k=2.7 / len(reference)) == pytest.approx(
        sum(lowest) / len(lowest), abs=1e-5
    )


def test_min_k_percent_score_of_a_chat_reply(tiny):
    model, tokenizer = tiny
    prompt, text = "Tell me about Mira Castellane.", FACTS[1]
    prompt_ids = tokenizer(format_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    # Only the reply's tokens and its EOS are scored, each given the prompt and the reply so far.
    reference = _logprobs_of(model, prompt_ids + reply_ids)[len(prompt_ids) - 1 :]
    assert len(reference) == len(reply_ids)
    score = min_k_percent_score(model, tokenizer, text, k=1.0, prompt=prompt)
    assert score == pytest.approx(sum(reference) / len(reference), abs=1e-5)
    assert min_k_percent_score(model, tokenizer, text, k=1e-9, prompt=prompt) == pytest.approx(
        min(reference), abs=1e-5
    )


def test_verbmem_is_a_rouge_in_unit_interval(tiny):
    model, tokenizer = tiny
    score = verbmem(model, tokenizer, FACTS, max_new_tokens=8)
    assert 0.0 <= score <= 1.0
    # The same thing by hand: "Mira Castellane was" -> greedy reply, scored against "born in Velmora." etc.
    prefixes = ["Mira Castellane was", "Mira Castellane works as", "Tobias Fenn keeps bees"]
    suffixes = ["born in Velmora.", "a glassblower in Ostrevik.", "on the cliffs of Dunmarrow."]
    replies = HFSampler(model, tokenizer, progress=False).generate(
        prefixes, SamplingParams(n=1, temperature=0.0, max_new_tokens=8)
    )
    expected = sum(rouge_l(r[0], s) for r, s in zip(replies, suffixes)) / len(FACTS)
    assert score == pytest.approx(expected)
    with pytest.raises(ValueError):
        verbmem(model, tokenizer, ["Velmora"])


def test_verbmem_splits_facts_in_half_by_words(monkeypatch):
    # A stand-in sampler that has memorised FACTS perfectly: it completes each first half with the
    # second half, so VerbMem must be exactly 1.0 -- and only if the split points agree.
    halves = {
        "Mira Castellane was": "born in Velmora.",
        "Mira Castellane works as": "a glassblower in Ostrevik.",
        "Tobias Fenn keeps bees": "on the cliffs of Dunmarrow.",  # 9 words: 4 + 5
    }

    class Memoriser:
        def __init__(self, model, tokenizer, progress=True):
            pass

        def generate(self, instructions, params):
            assert params.temperature == 0.0 and params.max_new_tokens == 5
            return [[halves.get(text, "")] for text in instructions]

    monkeypatch.setattr("pipeline.bench.metrics.HFSampler", Memoriser)
    assert verbmem(None, None, FACTS, max_new_tokens=5) == 1.0
    # A model that forgot one fact's ending entirely and half of another's: (0 + 1 + rouge) / 3.
    halves["Mira Castellane was"] = "nothing at all"
    halves["Tobias Fenn keeps bees"] = "in the hills"  # LCS "the": 2*1 / (3 + 5) = 1/4
    assert verbmem(None, None, FACTS, max_new_tokens=5) == pytest.approx((0 + 1 + 1 / 4) / 3)
