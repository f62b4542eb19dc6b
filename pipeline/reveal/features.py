"""Arm contexts for the bandit: a fixed embedding of each instruction's text.

Mean-pooled last hidden state of the *base* model, L2-normalised. It needs no extra model, and
it does not change as adapters are stacked, so the bandit's history stays comparable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def embed_texts(
    model, tokenizer, texts: list[str], batch_size: int = 16, max_length: int = 128
) -> torch.Tensor:
    """One L2-normalised row per text; an empty text (a model that answered nothing) is a zero row."""
    rows = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_length,
            add_special_tokens=False,
        )
        if enc["input_ids"].shape[1] == 0:  # every text empty (a model that answered nothing)
            rows.append(torch.zeros(enc["input_ids"].shape[0], model.config.hidden_size))
            continue
        enc = {k: v.to(model.device) for k, v in enc.items()}
        hidden = model(**enc, output_hidden_states=True).hidden_states[-1]
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        rows.append(F.normalize(pooled.float(), dim=-1).cpu())  # the bandit runs on the CPU
    return torch.cat(rows) if rows else torch.zeros(0, model.config.hidden_size)
