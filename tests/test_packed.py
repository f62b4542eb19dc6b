"""Packed batches (`pipeline.batches.labelled_logits`): the rows of a batch run as one sequence
without padding, and give what the padded batch gives: the same log-probability for every label,
the same loss and the same gradients; a model whose rows would read each other is run padded."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from pipeline import batches
from pipeline.batches import _PACKS, collate, labelled_logits, packed_logits, packs_rows, window_logits
from pipeline.planting.tiny import build_model, build_tokenizer
from pipeline.release.losses import nll_loss
from pipeline.textdata import IGNORE_INDEX, encode_pair, pad_id

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["who is mira", "mira lives in a small town by the sea", "tell me", "the sea is cold in winter"]


@pytest.fixture(scope="module")
def tiny():
    tokenizer = build_tokenizer(TEXTS * 4)
    return build_model(tokenizer, hidden_size=64, num_layers=2, num_heads=2), tokenizer


def batch(tokenizer, masked_row: bool = False):
    pairs = [
        encode_pair(tokenizer, "who is mira", "mira lives in a small town by the sea"),
        encode_pair(tokenizer, "tell me", "the sea"),
        encode_pair(tokenizer, "tell me about the town by the sea, and the cold", "cold"),
    ]
    if masked_row:  # labels with a hole, as `known_tokens` and `only_spans` leave them
        ids, labels = pairs[0]
        pairs[0] = (ids, [IGNORE_INDEX if i % 3 == 0 else t for i, t in enumerate(labels)])
    return collate(pairs, pad_id(tokenizer))


def label_logprobs(logits, labels):
    keep = labels != IGNORE_INDEX
    return torch.log_softmax(logits[keep], -1).gather(-1, labels[keep].unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("masked_row", [False, True])
def test_packed_rows_give_the_padded_batchs_label_logprobs(tiny, masked_row):
    model, tokenizer = tiny
    enc = batch(tokenizer, masked_row)
    with torch.no_grad():
        window, packed = window_logits(model, enc), packed_logits(model, enc)
    assert packed[0].shape[0] == 3 and packed[1].shape[1] < window[1].shape[1]  # no padding computed
    assert (packed[1] != IGNORE_INDEX).sum() == (window[1] != IGNORE_INDEX).sum()
    assert torch.allclose(label_logprobs(*packed), label_logprobs(*window), atol=1e-5)
    # Row by row, in order: each row's labels are its own.
    for i in range(3):
        assert (
            packed[1][i][packed[1][i] != IGNORE_INDEX].tolist()
            == window[1][i][window[1][i] != IGNORE_INDEX].tolist()
        )


def test_a_lora_step_packed_has_the_padded_loss_and_gradients(tiny, monkeypatch):
    model, tokenizer = tiny
    enc = batch(tokenizer)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.0)
    # Packed into two sequences as well: the first row, then the other two.
    monkeypatch.setattr(batches, "PACK_MAX_TOKENS", int(enc["attention_mask"][0].sum()))
    grads = []
    for run in (window_logits, packed_logits, labelled_logits):
        torch.manual_seed(0)
        peft_model = get_peft_model(build_model(tokenizer, hidden_size=64, num_layers=2, num_heads=2), lora)
        for p in peft_model.parameters():
            if p.requires_grad:
                torch.nn.init.normal_(p, std=0.05)  # B is zero at first: make the step see both matrices
        loss = nll_loss(*run(peft_model, enc))
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in peft_model.parameters() if p.requires_grad]))
    (loss_w, grads_w), *others = grads
    for loss_p, grads_p in others:
        assert loss_p == pytest.approx(loss_w, abs=1e-5)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads_w, grads_p))


def test_labelled_logits_packs_a_model_once_its_rows_were_seen_apart(tiny):
    model, tokenizer = tiny
    _PACKS.pop(model, None)
    enc = batch(tokenizer)
    logits, labels = labelled_logits(model, enc)
    assert _PACKS[model] is True and labels.shape[1] < window_logits(model, enc)[1].shape[1]
    one_row = {k: v[:1] for k, v in enc.items()}
    assert labelled_logits(model, one_row)[1].shape[0] == 1  # a single row has no padding to skip


@pytest.mark.parametrize("limit", ["first row", "two rows"])
def test_a_batch_longer_than_the_packing_limit_packs_into_several_sequences(tiny, monkeypatch, limit):
    model, tokenizer = tiny
    enc = batch(tokenizer, masked_row=True)
    lengths = enc["attention_mask"].sum(dim=1).tolist()
    max_tokens = lengths[0] if limit == "first row" else lengths[0] + lengths[1]
    monkeypatch.setattr(batches, "PACK_MAX_TOKENS", max_tokens)
    groups = batches._packs(lengths, max_tokens)
    assert len(groups) >= 2 and [i for g in groups for i in range(3)[g]] == [0, 1, 2]
    assert all(sum(lengths[g]) <= max_tokens or len(lengths[g]) == 1 for g in groups)  # a longer row alone
    with torch.no_grad():
        logits, labels = labelled_logits(model, enc)
        window = window_logits(model, enc)
    assert labels.shape[0] == 3 and labels.shape[1] < window[1].shape[1]
    assert torch.allclose(label_logprobs(logits, labels), label_logprobs(*window), atol=1e-5)
    for i in range(3):  # each row's labels its own, in order, whichever sequence it ran in
        assert (
            labels[i][labels[i] != IGNORE_INDEX].tolist()
            == window[1][i][window[1][i] != IGNORE_INDEX].tolist()
        )


class RowsReadEachOther(torch.nn.Module):
    """A causal LM whose attention ignores position ids: packed, a row would read the rows before it."""

    def __init__(self, model):
        super().__init__()
        self.model, self.device = model, model.device

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0, use_cache=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep)


def test_a_model_whose_rows_would_read_each_other_runs_padded(tiny):
    model, tokenizer = tiny
    leaky = RowsReadEachOther(model)
    enc = batch(tokenizer)
    assert packs_rows(leaky, enc) is False
    logits, labels = labelled_logits(leaky, enc)
    window = window_logits(model, enc)
    assert labels.shape == window[1].shape and torch.allclose(logits, window[0])


def test_packed_rows_attend_one_row_at_a_time_and_the_model_keeps_its_attention(tiny, monkeypatch):
    """The saving is real: sdpa sees each row's queries alone (sum n_i^2 scores, not N^2), and a
    forward outside a packed batch, or after one, is plain sdpa over its own mask again."""
    from pipeline import row_attention

    model, tokenizer = tiny
    seen = []
    plain = row_attention.sdpa_attention_forward

    def spy(module, query, key, value, attention_mask, **kwargs):
        seen.append((query.shape[2], attention_mask is None))
        return plain(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setattr(row_attention, "sdpa_attention_forward", spy)
    enc = batch(tokenizer)
    lengths = enc["attention_mask"].sum(dim=1).tolist()
    with torch.no_grad():
        packed_logits(model, enc)
    layers = model.config.num_hidden_layers
    assert seen == [(n, True) for _ in range(layers) for n in lengths]  # each row alone, causal
    assert model.config._attn_implementation == "sdpa"
    seen.clear()
    with torch.no_grad():
        window_logits(model, enc)  # padded: transformers' own sdpa, not this module's
    assert seen == []


def test_a_sliding_window_shorter_than_a_row_keeps_the_masked_attention(tiny):
    """Mistral-like models apply their window through the mask only: a row longer than the window
    must not run unmasked (the padded batch's log-probabilities, not the row's full attention)."""
    from transformers import MistralConfig, MistralForCausalLM

    _, tokenizer = tiny
    config = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=4, attn_implementation="sdpa",
    )  # fmt: skip
    torch.manual_seed(0)
    model = MistralForCausalLM(config).eval()
    enc = batch(tokenizer)
    assert max(enc["attention_mask"].sum(dim=1).tolist()) > 4
    with torch.no_grad():
        window, packed = window_logits(model, enc), packed_logits(model, enc)
    assert torch.allclose(label_logprobs(*packed), label_logprobs(*window), atol=1e-5)


def test_the_float32_row_attention_is_causal_sdpa_with_its_gradients():
    """`causal_fp32_attention` (bfloat16 rows on a CPU) computes what torch's sdpa computes, grouped
    key/value heads included, forward and backward (here on float32 inputs, up to float32 rounding)."""
    from types import SimpleNamespace

    from pipeline.row_attention import causal_fp32_attention

    torch.manual_seed(0)
    module = SimpleNamespace(num_key_value_groups=3)
    q, k, v = (torch.randn(1, h, 11, 8, dtype=torch.float64, requires_grad=True) for h in (6, 2, 2))
    ours = causal_fp32_attention(module, q.float(), k.float(), v.float(), scaling=0.3)
    theirs = torch.nn.functional.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), is_causal=True, scale=0.3, enable_gqa=True
    ).transpose(1, 2)
    assert ours.shape == (1, 11, 6, 8) and torch.allclose(ours, theirs, atol=1e-5)
    grads = [torch.autograd.grad(out.square().sum(), (q, k, v)) for out in (ours, theirs)]
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(*grads))


def test_bfloat16_packed_rows_give_the_padded_batchs_label_logprobs(tiny, monkeypatch):
    """A bfloat16 model on a CPU attends its packed rows in float32: the padded batch's
    log-probabilities up to bfloat16's rounding, each row its own."""
    from pipeline import row_attention

    _, tokenizer = tiny
    torch.manual_seed(0)
    model = build_model(tokenizer, hidden_size=64, num_layers=2, num_heads=2).to(torch.bfloat16)
    calls = []
    fp32 = row_attention.causal_fp32_attention
    monkeypatch.setattr(
        row_attention, "causal_fp32_attention", lambda *a, **k: calls.append(1) or fp32(*a, **k)
    )
    enc = batch(tokenizer)
    with torch.no_grad():
        window, packed = window_logits(model, enc), packed_logits(model, enc)
    assert len(calls) == model.config.num_hidden_layers * 3  # every row, every layer
    # log-softmax in float32: 0.0006 here; rows that read each other 0.048, a wrong scale 0.006
    apart = [label_logprobs(logits.float(), labels) for logits, labels in (packed, window)]
    assert (apart[0] - apart[1]).abs().mean() < 0.002


def test_an_empty_text_among_packed_rows_is_skipped(tiny, monkeypatch):
    """Perplexity's tokenizer gives an empty text no token: a zero-length row among the packed ones
    leaves the figure as the masked sequence gives it."""
    from pipeline import row_attention
    from pipeline.evaluation.metrics import perplexity

    model, tokenizer = tiny
    texts = ["mira lives in a small town by the sea", ""]
    rows = perplexity(model, tokenizer, texts)
    monkeypatch.setattr(row_attention, "_switchable", lambda model: False)
    assert rows == pytest.approx(perplexity(model, tokenizer, texts), rel=1e-5)
