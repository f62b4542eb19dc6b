"""Tiny models built in-process: a byte-level BPE tokenizer and a randomly initialised Llama.

They let the whole pipeline run end to end in seconds on a CPU, with no hub download: the
tokenizer is trained on the texts the run will use, the model starts from noise and learns its
"knowledge" from `pipeline.planting.plant`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from pipeline.planting.examples import HELD_OUT_REQUEST, plant_examples

PAD, EOS, USER, ASSISTANT, SYSTEM = "<|pad|>", "<|eos|>", "<|user|>", "<|assistant|>", "<|system|>"
SPECIAL_TOKENS = [PAD, EOS, USER, ASSISTANT, SYSTEM]

# Each turn is `<|role|> content\n`; an assistant turn also ends with EOS so a rendered conversation
# matches what encode_pairs trains on (prompt, response, EOS).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|> ' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|> ' }}{% endif %}"
)


def build_tokenizer(texts: list[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `texts`: any string encodes (unknown bytes fall back to byte tokens)."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Sorted and de-duplicated so the merges depend on the set of texts, not on the caller's order.
    core.train_from_iterator(sorted(set(texts)), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[USER, ASSISTANT, SYSTEM],
        model_max_length=512,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(
    tokenizer, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4, seed: int = 0
) -> LlamaForCausalLM:
    """A randomly initialised float32 Llama sized for `tokenizer`; the same seed gives the same weights."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        # There is no BOS in the chat format; EOS stands in wherever a BOS id is required.
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=pad,
        dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=pad)
    return model


def tokenizer_corpus(spec, extra_texts: Iterable[str] = ()) -> list[str]:
    """Texts the tiny tokenizer is trained on: every planted pair, every probe, plus `extra_texts`.

    Held-out wordings are in it too (a tokenizer learns spellings, not facts), so a question the
    model was never planted with is not also cut into rarer tokens than the planted ones.
    """
    texts: list[str] = []
    for person in spec.people:
        texts += [person.name, *person.aliases, *person.facts, HELD_OUT_REQUEST.format(name=person.name)]
        for probe in person.probes:
            texts += [probe.question, *probe.paraphrases, probe.answer, *probe.distractors]
    for instruction, response in plant_examples(spec.people):
        texts += [instruction, response]
    texts += [t for t in extra_texts if t]
    return texts
