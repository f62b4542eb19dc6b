"""Turning (instruction, response) pairs into model inputs.

Every stage that talks to a model goes through these two functions, so the loop prompts,
samples, plants and trains in exactly one chat format: the tokenizer's own chat template.
"""

from __future__ import annotations

import inspect

import torch

IGNORE_INDEX = -100


def format_prompt(tokenizer, instruction: str | list[dict]) -> str:
    """The text a model sees before it answers `instruction` (chat template + generation prompt).

    `instruction` is a user message, or a whole conversation ending with the user's turn (chat
    messages `{"role", "content"}`): worked examples as earlier turns, which a small model follows
    far better than examples pasted into one message (it copies those).
    """
    if isinstance(instruction, str):
        messages = [{"role": "user", "content": instruction}]
    elif instruction and instruction[-1].get("role") == "user":
        messages = list(instruction)
    else:
        raise ValueError("format_prompt: a conversation must end with the user's turn")
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode_pair(
    tokenizer, instruction: str, response: str, max_length: int = 256
) -> tuple[list[int], list[int]]:
    """Token ids of prompt+response+EOS and their labels (-100 on the prompt), unpadded.

    If the pair is longer than `max_length`, the response is cut, never the prompt.
    """
    prompt_ids = tokenizer(format_prompt(tokenizer, instruction), add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    response_ids = response_ids[: max(max_length - len(prompt_ids), 1)]
    return prompt_ids + response_ids, [IGNORE_INDEX] * len(prompt_ids) + response_ids


def collate(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch of `encode_pair` results: input_ids, attention_mask, labels [B, T]."""
    width = max(len(ids) for ids, _ in pairs)
    input_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(pairs):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        attention_mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def pad_id(tokenizer) -> int:
    """The padding token, or EOS for tokenizers (like many chat models's) that have none."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def encode_pairs(
    tokenizer, instructions: list[str], responses: list[str], max_length: int = 256
) -> dict[str, torch.Tensor]:
    """Right-padded batch of prompt+response+EOS; labels are -100 on the prompt and the padding.

    Labels are *unshifted* (HF convention): position t of `labels` is the token at position t.
    If a pair is longer than `max_length`, the response is cut, never the prompt.
    """
    if len(instructions) != len(responses):
        raise ValueError("instructions and responses must have the same length")
    pairs = [encode_pair(tokenizer, i, r, max_length) for i, r in zip(instructions, responses)]
    return collate(pairs, pad_id(tokenizer))


def shifted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align logits with the tokens they predict: logits[:, t] then predicts labels[:, t].

    The labels move one to the left (the last position predicts nothing: IGNORE_INDEX) rather
    than the logits being cut: a [B, T-1, V] slice is not contiguous, and every loss over it
    would copy the whole vocabulary-wide tensor (measured 135 -> 92 ms for one NLL forward and
    backward at 4 x 100 x 49,152).
    """
    ignore = torch.full_like(labels[:, :1], IGNORE_INDEX)
    return logits, torch.cat([labels[:, 1:], ignore], dim=1)


def _takes_logits_to_keep(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def labelled_logits(model, enc: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's shifted logits and labels on `enc`, over only the positions that predict a label.

    Prompt positions predict nothing that is scored, and the LM head is the widest layer of a
    small model (576 -> 49,152 for SmolLM2-135M) with the largest activations, so the model is asked
    for logits from the first position that predicts a label on (transformers' `logits_to_keep`;
    a model without it computes them all and the window is cut out afterwards).
    """
    labels = enc["labels"]
    labelled = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    # logits[:, t] predicts token t + 1, so the window opens one before the first labelled token.
    start = max(int(labelled[0]) - 1, 0) if len(labelled) else labels.shape[1] - 1
    width = labels.shape[1] - start
    inputs = {k: enc[k].to(model.device) for k in ("input_ids", "attention_mask")}
    if _takes_logits_to_keep(model):
        logits = model(**inputs, logits_to_keep=width).logits
    else:
        logits = model(**inputs).logits[:, start:].contiguous()
    return shifted(logits, labels[:, start:].to(model.device))
