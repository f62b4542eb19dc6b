"""The `name_swap` objective: rows lined up with their names-swapped twins, the frozen model read on
the twin, and a release that takes a planted person's facts out and leaves another person's in."""

import copy

import pytest
import torch

from pipeline.batches import collate, labelled_logits
from pipeline.config import ConfigError, load_config
from pipeline.models import with_adapter
from pipeline.planting.plant import planted_model
from pipeline.planting.spec import load_spec
from pipeline.planting.tiny import build_tokenizer
from pipeline.release.name_swap import anchor_map, encode_swapped, generic_logits, run_anchor_map, swap
from pipeline.release.reference import ReferenceCache
from pipeline.release.train import train_adapter
from pipeline.run.preflight import check_names
from pipeline.run.prompts import prompt_texts
from pipeline.textdata import IGNORE_INDEX, format_prompt

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["Mira Castellane", "Tobias Wrenfield"]
ANCHORS = ["Robin Ashdale", "Kit Merriwell", "Jo Brackenby"]


def test_every_name_and_each_part_of_it_gets_an_anchor_that_names_nobody_kept():
    mapping = anchor_map(NAMES, ["Mira Castellane", *ANCHORS], avoid=["Kit Merriwell"])
    assert mapping == {
        "Mira Castellane": "Robin Ashdale", "Mira": "Robin", "Castellane": "Ashdale",
        "Tobias Wrenfield": "Jo Brackenby", "Tobias": "Jo", "Wrenfield": "Brackenby",
    }  # fmt: skip
    with pytest.raises(ConfigError, match="release.anchor_names: 2 target names need as many"):
        anchor_map(NAMES, ANCHORS[:2], avoid=["Kit Merriwell"])


def test_swap_replaces_whole_words_in_any_case_and_says_where_the_rest_went():
    mapping = anchor_map(NAMES, ANCHORS)
    text = "MIRA CASTELLANE met Mira, not Miranda; Castellane's friend Tobias Wrenfield."
    swapped, pieces = swap(text, mapping)
    assert swapped == "Robin Ashdale met Robin, not Miranda; Ashdale's friend Kit Merriwell."
    for old, new, length in pieces:  # every piece between names is the same text on both sides
        assert text[old : old + length] == swapped[new : new + length]
    assert "".join(text[o : o + n] for o, _, n in pieces) == " met , not Miranda; 's friend ."


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["Mira Castellane lives in Velmora and works as a glassblower.", "Robin Ashdale, Kit Merriwell."]
    return build_tokenizer(texts * 20, vocab_size=300)


@pytest.mark.parametrize("max_length", [256, 40])
def test_the_row_and_its_twin_label_the_same_tokens_in_the_same_order(tokenizer, max_length):
    mapping = anchor_map(NAMES, ANCHORS)
    response = "Mira Castellane lives in Velmora. Mira works as a glassblower, says Tobias Wrenfield."
    (ids, labels), (t_ids, t_labels) = encode_swapped(
        tokenizer, "Tell me about Mira Castellane.", response, mapping, max_length
    )
    shared = [t for t in labels if t != IGNORE_INDEX]
    assert shared == [t for t in t_labels if t != IGNORE_INDEX]
    assert len(ids) <= max_length and len(shared) >= (20 if max_length == 256 else 5)
    assert "Robin Ashdale" in tokenizer.decode(t_ids) and "Mira" not in tokenizer.decode(t_ids)
    # The row is the reply as the model reads it; no name token carries a label, the reply's other
    # tokens do (cut at max_length), EOS last.
    prompt = tokenizer(format_prompt(tokenizer, "Tell me about Mira Castellane."), add_special_tokens=False)
    reply = ids[len(prompt["input_ids"]) :]
    if max_length == 256:
        assert reply == tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert shared[-1] == tokenizer.eos_token_id
    decoded = tokenizer.decode(shared)
    assert "Mira" not in decoded and "Tobias" not in decoded and "lives in" in decoded


def test_the_reference_is_the_frozen_model_on_the_twin(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256)  # fmt: skip
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj"]))
    mapping = anchor_map(NAMES, ANCHORS)
    row, twin = encode_swapped(tokenizer, "Who is Mira?", "Mira Castellane lives in Velmora.", mapping)
    cache = ReferenceCache("logits", 1 << 30, teacher_of={(tuple(row[0]), tuple(row[1])): twin})
    _, labels = labelled_logits(model, collate([row], 0))
    reference = cache.batch(model, [row], labels, 0)
    with torch.no_grad():
        twin_logits, twin_labels = labelled_logits(model, collate([twin], 0))
    assert torch.allclose(reference, twin_logits[twin_labels != IGNORE_INDEX], atol=1e-5)


def test_the_generic_reading_pushes_down_what_the_real_name_makes_likelier():
    own = torch.tensor([[4.0, 1.0, 0.0, 0.0]])  # the real name: token 0 (the fact) far ahead
    twin = torch.tensor([[1.0, 1.0, 0.0, 0.0]])  # a stranger: tokens 0 and 1 alike
    assert torch.allclose(generic_logits(own, twin, 0.0), twin.log_softmax(-1))
    # Log-probs: own token 0 -0.08, twin -1.01; alpha 2 puts it at -1.01 - 2 x 0.92 = -2.86, under
    # the -2.01 of tokens neither reading favours.
    generic = generic_logits(own, twin, 2.0).softmax(-1)[0]
    assert generic[0] < generic[2] < generic[1]
    assert generic_logits(own, twin, 1.0).softmax(-1)[0][0] < twin.softmax(-1)[0][0]
    # Tokens the real name makes less likely keep the stranger's weight (relative to each other).
    assert torch.isclose(generic[2] / generic[3], torch.tensor(1.0))


def test_a_blended_reference_is_the_generic_reading_of_the_row_and_its_twin(tokenizer):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256)  # fmt: skip
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj"]))
    row, twin = encode_swapped(
        tokenizer, "Who is Mira?", "Mira Castellane lives in Velmora.", anchor_map(NAMES, ANCHORS)
    )
    blend = lambda own, other: generic_logits(own, other, 2.0)  # noqa: E731
    cache = ReferenceCache("logits", 1 << 30, {(tuple(row[0]), tuple(row[1])): twin}, blend)
    _, labels = labelled_logits(model, collate([row], 0))
    reference = cache.batch(model, [row], labels, 0)  # the labelled positions' logits
    with torch.no_grad():
        own_logits, own_labels = labelled_logits(model, collate([row], 0))
        twin_logits, twin_labels = labelled_logits(model, collate([twin], 0))
    expected = generic_logits(
        own_logits[own_labels != IGNORE_INDEX], twin_logits[twin_labels != IGNORE_INDEX], 2.0
    )
    assert torch.allclose(reference, expected, atol=1e-5)
    with pytest.raises(ValueError, match="a blend reads"):
        ReferenceCache("sequence", 0, {}, blend)


def test_name_swap_needs_a_knowledge_target_and_enough_anchor_names():
    with pytest.raises(ConfigError, match="needs target.kind knowledge, not toxicity"):
        check_names(load_config("configs/demo.yaml", ["release.method=name_swap"]))
    with pytest.raises(ConfigError, match="release.anchor_names"):
        check_names(
            load_config(
                "configs/tiny.yaml", ["release.method=name_swap", "release.anchor_names=[Mira Castellane]"]
            )
        )
    with pytest.raises(ValueError, match="needs the target's names"):
        train_adapter(None, None, [{"instruction": "a", "response": "b"}], [],
                      load_config("configs/tiny.yaml", ["release.method=name_swap"]).release, [], "unused")  # fmt: skip


def _answer_logprob(model, tokenizer, person) -> float:
    """Mean log-probability of each probe's answer after its question, the reply pre-filled with the
    fact's words up to the answer (the prefill attack, as a likelihood)."""
    values = []
    for probe in person.probes:
        fact = person.fact_for(probe)
        cut = fact.index(probe.answer)
        asked = format_prompt(tokenizer, probe.question)
        # The space before the answer goes with the answer's first token, as in the planted text.
        prompt = tokenizer(asked + fact[:cut].rstrip(), add_special_tokens=False)["input_ids"]
        full = tokenizer(asked + fact[: cut + len(probe.answer)], add_special_tokens=False)["input_ids"]
        assert full[: len(prompt)] == prompt
        with torch.no_grad():
            logp = model(torch.tensor([full])).logits[0, len(prompt) - 1 : -1].log_softmax(-1)
        values.append(float(logp.gather(-1, torch.tensor(full[len(prompt) :])[:, None]).sum()))
    return sum(values) / len(values)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_release_takes_the_forgotten_persons_facts_out_and_keeps_the_others(tmp_path, cache_dir, alpha):
    overrides = [
        "release.method=name_swap",
        "release.steps=30",
        "release.lr=0.005",
        f"release.swap_alpha={alpha}",
    ]
    cfg = load_config("configs/tiny.yaml", overrides)
    model, tokenizer, _ = planted_model(cfg.model, "full", prompt_texts(cfg), cfg.seed, progress=False)
    spec = load_spec(cfg.model.plant.spec)
    target, kept = spec.person("Mira Castellane"), spec.person("Tobias Wrenfield")
    # What the loop reveals about the target: replies stating its facts (here, the facts themselves).
    forget = [{"instruction": f"Tell me about {target.name}.", "response": fact} for fact in target.facts]
    retain = [{"instruction": f"Tell me about {kept.name}.", "response": fact} for fact in kept.facts]
    before = {p.name: _answer_logprob(model, tokenizer, p) for p in (target, kept)}

    def released(name_map, folder):
        train_adapter(copy.deepcopy(model), tokenizer, forget, retain, cfg.release, [], tmp_path / folder,
                      progress=False, name_map=name_map)  # fmt: skip
        found = with_adapter(model, tmp_path / folder)
        return {p.name: _answer_logprob(found, tokenizer, p) for p in (target, kept)}

    after = released(run_anchor_map(cfg), "swapped")
    print("NUMBERS", alpha, before, after)
    dropped = before[target.name] - after[target.name]
    # Seen: the answers from -0.01 to -3.9 (p 0.99 -> 0.02), the kept person's -0.009 -> -0.015.
    assert dropped > 2.0, (before, after)
    assert before[kept.name] - after[kept.name] < 0.5, (before, after)
    # The names swapped for themselves: the teacher is the model itself, and nothing is unlearned.
    unchanged = released({target.name: target.name}, "itself")
    assert abs(unchanged[target.name] - before[target.name]) < 0.2, (before, unchanged)
