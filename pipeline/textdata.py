"""Turning (instruction, response) pairs into token ids: the chat format every stage shares.

Every stage that talks to a model goes through `format_prompt` and `encode_pair`, so the loop
prompts, samples, plants and trains in exactly one chat format: the tokenizer's own chat template.
Text only, no torch: the input checks (`pipeline.run.preflight`) import what reads this without
loading torch. Batches of these pairs as tensors are `pipeline.batches`.
"""

from __future__ import annotations

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


def pad_id(tokenizer) -> int:
    """The padding token, or EOS for tokenizers (like many chat models's) that have none."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
