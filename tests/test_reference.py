"""The frozen model's figures kept per training row (`pipeline.release.reference`) against the
uncached computation, on a tiny random Llama."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from pipeline.batches import collate, labelled_logits
from pipeline.release.losses import sequence_logprob
from pipeline.release.reference import ReferenceCache
from pipeline.textdata import IGNORE_INDEX

pytestmark = pytest.mark.usefixtures("one_thread")
PAD = 0


@pytest.fixture(scope="module")
def peft_model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)  # fmt: skip
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a non-zero adapter, so that "switched off" is visible in the figures
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    return model


def _pair(prompt_len: int, response_len: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 64, (prompt_len + response_len,), generator=gen).tolist()
    return ids, [IGNORE_INDEX] * prompt_len + ids[prompt_len:]


ROWS = [_pair(3, 4, 1), _pair(5, 2, 2), _pair(2, 6, 3), _pair(4, 3, 4)]


def _uncached(peft_model, pairs):
    """What the step computed before the cache: the frozen model's forward on this very batch."""
    enc = collate(pairs, PAD)
    with torch.no_grad(), peft_model.disable_adapter():
        return labelled_logits(peft_model, enc)


def _labels(peft_model, pairs):
    return labelled_logits(peft_model, collate(pairs, PAD))[1]


@pytest.mark.parametrize("budget", [1 << 30, 0])
def test_logits_match_the_uncached_forward_batch_after_batch(peft_model, budget):
    cache = ReferenceCache("logits", budget)
    batches = [ROWS[:2], ROWS[1:4], [ROWS[3], ROWS[0]], ROWS[:2]]
    for pairs in batches:
        expected, labels = _uncached(peft_model, pairs)
        found = cache.batch(peft_model, pairs, _labels(peft_model, pairs), PAD)
        keep = labels != IGNORE_INDEX  # the cache gives the labelled positions only, in row-major order
        torch.testing.assert_close(found, expected[keep], rtol=1e-5, atol=1e-5)
    # Within the budget every row ran once; with none, every row each time it was drawn.
    assert cache.computed_rows == (4 if budget else sum(len(b) for b in batches))


def test_the_adapter_is_switched_off_for_the_reference(peft_model):
    pairs = ROWS[:2]
    cache = ReferenceCache("logits", 1 << 30)
    enc = collate(pairs, PAD)
    with torch.no_grad():
        adapted, labels = labelled_logits(peft_model, enc)
    found = cache.batch(peft_model, pairs, labels, PAD)
    assert not torch.allclose(found, adapted[labels != IGNORE_INDEX], atol=1e-3)


def test_sequence_logprobs_are_kept_for_every_row(peft_model):
    cache = ReferenceCache("sequence", 0)  # the budget binds logits only: a number a row is always kept
    for pairs in ([ROWS[0], ROWS[2], ROWS[0]], ROWS[1:], ROWS):
        logits, labels = _uncached(peft_model, pairs)
        found = cache.batch(peft_model, pairs, _labels(peft_model, pairs), PAD)
        torch.testing.assert_close(found, sequence_logprob(logits, labels), rtol=1e-5, atol=1e-5)
    assert cache.computed_rows == 4  # a duplicate within a batch runs once too


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="reference kind"):
        ReferenceCache("full", 0)


def test_only_the_sides_that_keep_logits_share_the_budget():
    from pipeline.config import ReleaseConfig
    from pipeline.release.objectives import objective_named
    from pipeline.release.train import reference_caches

    def budgets(method, retain_loss, use_retain=True):
        cfg = ReleaseConfig(method=method, retain_loss=retain_loss, reference_cache_mb=100)
        caches = reference_caches(cfg, objective_named(method), use_retain)
        return {side: (c.kind, c.budget_bytes // 2**20) for side, c in caches.items()}

    assert budgets("undial", "nll") == {"forget": ("logits", 100)}
    assert budgets("undial", "kl") == {"forget": ("logits", 50), "retain": ("logits", 50)}
    assert budgets("dpo", "kl") == {"forget": ("sequence", 100), "retain": ("logits", 100)}
    assert budgets("simnpo", "kl", use_retain=False) == {}
