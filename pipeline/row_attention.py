"""Attention for packed rows at the cost of each row's own length.

`pipeline.batches.packed_logits` runs a batch's rows one after another in one sequence. Given only
their position ids, transformers' `sdpa` attention masks each row to its own tokens but still
computes attention over the whole sequence: N^2 scores for N packed tokens, where the rows need
only sum(n_i^2) (four rows of 90 tokens: 360^2, four times the work). In a bfloat16 release step on
a CPU that attention was 30% of the step's time (issue 22's profile: torch's fused CPU attention
and its backward).

Here each packed row is attended alone, causal and without a mask, on its slice of the queries,
keys and values; the rows' outputs are put back in order. Where the row boundaries are
(transformers' `cu_seq_lens_q`, the cumulative row lengths flash attention's variable-length
kernels take) is passed with the forward, and only `packed_rows` switches a model to it: a model
loaded with another attention (`eager`, `flash_attention_2`) keeps its own.

A row runs `sdpa` (causal, alone), except a bfloat16 or float16 row of at most `FP32_MAX_TOKENS` on
a CPU: there torch's fused kernel spent 2.3 ms in the backward of a 90-token row (its forward 0.45
ms), where the same attention written as two float32 matmuls and a softmax took 0.9 ms (one thread,
SmolLM2's 9 heads of 64). It is computed in float32 from the bfloat16 queries, keys and values and
rounded once at the end, so it is at least as exact as the fused kernel (on 8 replies, SmolLM2 in
bfloat16 gave labels log-probabilities 0.048 from float32's on average, 0.053 through the fused
kernel). The backward keeps its float32 probabilities [heads, n, n] and the float32 copies of q, k
and v, hence the length bound. Every labelled forward of a packed batch takes this path (training,
the frozen model's reference, `known_tokens`, perplexity), so policy and reference agree.
"""

from __future__ import annotations

import inspect
import itertools
from contextlib import contextmanager

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "packed_rows"

# Rows up to this many tokens are attended in float32 on a CPU (above: the probabilities kept for the
# backward grow as n^2; at 256 tokens, SmolLM2-135M's 9 heads and 30 layers, ~126 MB a row).
FP32_MAX_TOKENS = 256


def causal_fp32_attention(module, query, key, value, scaling: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scaling + causal mask) v for one row, in float32: [1, heads, n, d] in,
    [1, n, heads, d] out (the layout `sdpa_attention_forward` returns) in the query's dtype."""
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups).float(), repeat_kv(value, groups).float()
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query.float(), key.transpose(-1, -2)) * scale
    n = query.shape[2]
    future = torch.ones(n, n, dtype=torch.bool, device=query.device).triu(1)
    probs = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    return torch.matmul(probs, value).to(query.dtype).transpose(1, 2).contiguous()


def _row(module, query, key, value, **kwargs) -> torch.Tensor:
    """One row's attention output [1, n, heads, d]: float32 matmuls where they are faster, else sdpa."""
    low_precision = query.dtype in (torch.bfloat16, torch.float16) and query.device.type == "cpu"
    # Anything beyond a plain causal softmax (dropout, a soft cap, a bias, attention sinks, a
    # bidirectional model) stays with sdpa, which knows it.
    plain = not any(kwargs.get(k) for k in ("dropout", "softcap", "position_bias", "s_aux"))
    if low_precision and plain and kwargs.get("is_causal", True) and query.shape[2] <= FP32_MAX_TOKENS:
        return causal_fp32_attention(module, query, key, value, kwargs.get("scaling"))
    return sdpa_attention_forward(module, query, key, value, None, **kwargs)[0]


def packed_rows_attention(module, query, key, value, attention_mask, cu_seq_lens_q=None, **kwargs):
    """transformers' attention interface: query/key/value [1, heads, N, head_dim] of rows packed one
    after another, `cu_seq_lens_q` their boundaries [0, n_1, n_1 + n_2, ..., N]; returns the
    attention output [1, N, heads, head_dim] and no weights. Without boundaries (a forward that is
    not a packed batch) it is `sdpa` with the mask transformers built."""
    bounds = cu_seq_lens_q.tolist() if cu_seq_lens_q is not None else None
    window = kwargs.get("sliding_window")  # Mistral, Qwen2 ...: only the mask carries the window
    if (
        bounds is None
        or query.shape[0] != 1
        or query.shape[2] != key.shape[2]
        or (window is not None and max(b - a for a, b in zip(bounds, bounds[1:])) > window)
    ):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    rows = [
        _row(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], **kwargs)
        for a, b in zip(bounds, bounds[1:])
        if b > a  # an empty text (perplexity's tokenizer gives it no token) has nothing to attend
    ]
    return torch.cat(rows, dim=1), None


AttentionInterface.register(NAME, packed_rows_attention)
# The mask of plain sdpa, built for every forward (N^2 booleans, cheap next to the scores) and read
# only by the fallback above: a forward without boundaries, or with a sliding window shorter than a
# row, then masks exactly as before.
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def base_model(model):
    """The transformers model under a PEFT wrapper (or `model` itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _switchable(model) -> bool:
    """Whether `model` runs transformers' `sdpa` and its forward passes extra keywords on to it (a
    model with sub-models, whose configs the switch would reach too, keeps its attention)."""
    base = base_model(model)
    config = getattr(base, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" or getattr(config, "sub_configs", None):
        return False
    kinds = {p.kind for p in inspect.signature(base.forward).parameters.values()}
    return inspect.Parameter.VAR_KEYWORD in kinds


@contextmanager
def packed_rows(model, lengths: list[int]):
    """Within the block, `model`'s attention runs row by row over packed rows of `lengths`; yields
    the keywords to pass to its forward ({} where the model keeps its own attention)."""
    if not _switchable(model):
        yield {}
        return
    config = base_model(model).config
    bounds = torch.tensor(list(itertools.accumulate(lengths, initial=0)), dtype=torch.int32)
    config._attn_implementation = NAME
    try:
        yield {"cu_seq_lens_q": bounds}
    finally:
        config._attn_implementation = "sdpa"
