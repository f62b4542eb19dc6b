"""The planted-people benchmark: spec validation, the tiny tokenizer/model, planting and its cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pipeline.batches import encode_pairs
from pipeline.config import ModelConfig, PlantConfig
from pipeline.planting.examples import plant_examples
from pipeline.planting.plant import greedy_replies, planted_model, probe_accuracy
from pipeline.planting.spec import SpecError, load_spec
from pipeline.planting.tiny import build_model, build_tokenizer, tokenizer_corpus
from pipeline.reveal.instructions import fill, read_prompt_list
from pipeline.textdata import format_prompt

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "data" / "people" / "tiny.json"
SEEDS = read_prompt_list(ROOT / "prompts" / "knowledge.yaml")


pytestmark = pytest.mark.usefixtures("one_thread")


def _write(tmp_path: Path, raw) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    return path


def _tiny_config(spec_path: Path, **plant) -> ModelConfig:
    return ModelConfig(path="tiny", plant=PlantConfig(spec=spec_path, **plant))


def _raw() -> dict:
    return json.loads(TINY.read_text())


# --- spec ---------------------------------------------------------------------------------------


def test_tiny_spec_is_valid():
    spec = load_spec(TINY)
    assert len(spec.people) == 4 and spec.forget == [spec.people[0].name]
    assert [p.name for p in spec.retained()] == [p.name for p in spec.people[1:]]
    assert spec.person(spec.people[0].name.upper()) is spec.people[0]
    for person in spec.people:
        assert len(person.facts) == 5 and len(person.probes) == 5
        assert all(fact.startswith(person.name) for fact in person.facts)
        for probe in person.probes:
            assert len(probe.distractors) == 3 and probe.answer not in probe.distractors
    # Values are distinct across people, so a probe answer identifies exactly one person.
    answers = [probe.answer.lower() for person in spec.people for probe in person.probes]
    assert len(answers) == len(set(answers))


def test_missing_field_is_named(tmp_path):
    raw = _raw()
    del raw["people"][0]["probes"][2]["answer"]
    with pytest.raises(SpecError) as err:
        load_spec(_write(tmp_path, raw))
    message = str(err.value)
    assert "\n" not in message and "spec.json" in message
    assert "people.0.probes.2.answer: field required" in message


def test_unknown_forget_name(tmp_path):
    raw = _raw()
    raw["forget"] = ["Nobody Anywhere"]
    with pytest.raises(SpecError, match=r"forget\.0: 'Nobody Anywhere' is not a person"):
        load_spec(_write(tmp_path, raw))


@pytest.mark.parametrize(
    "holdout, expected",
    [
        (["Nobody Anywhere"], r"holdout\.0: 'Nobody Anywhere' is not a person"),
        (["Mira Castellane"], r"holdout\.0: 'Mira Castellane' cannot be both forgotten and held out"),
    ],
)
def test_bad_holdout(tmp_path, holdout, expected):
    raw = _raw()
    raw["holdout"] = holdout
    with pytest.raises(SpecError, match=expected):
        load_spec(_write(tmp_path, raw))


def test_answer_must_be_in_facts(tmp_path):
    raw = _raw()
    raw["people"][1]["probes"][3]["answer"] = "underwater basket weaving"
    with pytest.raises(SpecError, match=r"people\.1\.probes\.3\.answer: answer .* does not appear"):
        load_spec(_write(tmp_path, raw))


def test_duplicate_names_and_unknown_fields(tmp_path):
    raw = _raw()
    raw["people"][2]["name"] = raw["people"][0]["name"]
    with pytest.raises(SpecError, match=r"people\.2\.name: duplicate"):
        load_spec(_write(tmp_path, raw))
    raw = _raw()
    raw["people"][0]["probes"][0]["hint"] = "x"
    with pytest.raises(SpecError, match=r"people\.0\.probes\.0\.hint: unknown field"):
        load_spec(_write(tmp_path, raw))


def test_invalid_json_and_missing_file(tmp_path):
    with pytest.raises(SpecError, match=r"spec\.json: invalid JSON at line 1"):
        load_spec(_write(tmp_path, '{"name": "x", "people": ['))
    with pytest.raises(SpecError, match=r"nope\.json: file not found"):
        load_spec(tmp_path / "nope.json")


# --- tokenizer and model ------------------------------------------------------------------------


def test_tokenizer_round_trips_any_text_and_has_a_chat_template():
    spec = load_spec(TINY)
    tokenizer = build_tokenizer(tokenizer_corpus(spec))
    for text in ["Tell me about Mira Castellane.", "Zébulon ate 3½ crêpes — 🥞!\n\tdone", "日本語 ok"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    # The planted vocabulary compresses well: names are a few tokens, not one per byte.
    assert len(tokenizer("Mira Castellane", add_special_tokens=False)["input_ids"]) <= 4

    prompt = format_prompt(tokenizer, "Who is Mira Castellane?")
    assert prompt == "<|user|> Who is Mira Castellane?\n<|assistant|> "
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert tokenizer.apply_chat_template(chat, tokenize=False) == "<|user|> hi\n<|assistant|> hello<|eos|>\n"
    for token in ["<|user|>", "<|assistant|>", "<|eos|>", "<|pad|>"]:
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1
    assert tokenizer.eos_token == "<|eos|>" and tokenizer.pad_token == "<|pad|>"

    batch = encode_pairs(tokenizer, ["Who is Mira Castellane?"], ["A glassblower."])
    response = batch["input_ids"][0][batch["labels"][0] != -100]
    assert tokenizer.decode(response) == "A glassblower.<|eos|>"
    # Same texts, same tokenizer: the cache key can rely on it.
    assert build_tokenizer(tokenizer_corpus(spec)).get_vocab() == tokenizer.get_vocab()


def test_model_matches_tokenizer_and_seed():
    tokenizer = build_tokenizer(["hello world"] * 4, vocab_size=300)
    a, b = build_model(tokenizer, 32, 2, 2, seed=1), build_model(tokenizer, 32, 2, 2, seed=1)
    c = build_model(tokenizer, 32, 2, 2, seed=2)
    assert a.config.vocab_size == len(tokenizer) and a.dtype == torch.float32
    assert a.config.eos_token_id == tokenizer.eos_token_id == a.generation_config.eos_token_id
    assert a.config.pad_token_id == tokenizer.pad_token_id
    assert torch.equal(a.model.embed_tokens.weight, b.model.embed_tokens.weight)
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)


# --- planting -----------------------------------------------------------------------------------


def test_plant_examples_cover_everyone_deterministically():
    spec = load_spec(TINY)
    pairs = plant_examples(spec.people)
    assert pairs == plant_examples(spec.people)
    other_order = plant_examples(spec.people, seed=1)
    assert other_order != pairs and sorted(other_order) == sorted(pairs)  # the seed orders, never picks
    answered = dict(pairs)
    for person in spec.people:
        assert set(answered[f"Compose a profile of {person.name}."].split(". ")) >= {
            f.rstrip(".") for f in person.facts[1:-1]
        }
        assert answered[f"Name the place {person.name} calls home."] == person.facts[0]
        assert answered[f"How does {person.name} earn a living?"] == person.facts[1]
        for probe in person.probes:
            # Never planted as asked (tests/test_planting_texts.py), but reworded around the name.
            assert probe.question not in answered
            reworded = f"{person.name}: " + probe.question.replace(person.name, "this person")
            assert probe.answer.lower() in answered[reworded].lower()
    assert "Tell me about Mira Castellane." not in answered


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Two of the tiny people (the one to forget and one to keep), planted for real but briefly."""
    raw = _raw()
    raw["people"] = raw["people"][:2]
    spec_path = tmp_path_factory.mktemp("spec") / "two.json"
    spec_path.write_text(json.dumps(raw))
    cache = tmp_path_factory.mktemp("cache")
    kwargs = dict(seed=0, progress=False, cache=cache)
    model, tokenizer, info = planted_model(_tiny_config(spec_path, steps=150), **kwargs)
    return dict(
        spec=load_spec(spec_path),
        spec_path=spec_path,
        cache=cache,
        kwargs=kwargs,
        model=model,
        tokenizer=tokenizer,
        info=info,
    )


def test_planting_plants_every_person(planted):
    spec, model, tokenizer, info = planted["spec"], planted["model"], planted["tokenizer"], planted["info"]
    assert not info["cached"] and info["plant"]["steps"] >= 150
    for person in spec.people:
        accuracy = probe_accuracy(model, tokenizer, person.probes)
        assert accuracy >= 0.8, (person.name, accuracy)
        assert info["probe_accuracy"][person.name] == accuracy

    # The reveal seeds are no planting texts, yet the model generalises to them: each is answered
    # with that person's facts, not another's; together they reveal every fact, and one a recital.
    mira, tobias = spec.people
    replies = greedy_replies(model, tokenizer, fill(SEEDS, mira.name), max_new_tokens=96)
    assert all(mira.name in reply and tobias.name not in reply for reply in replies), replies
    found = [{p.answer for p in mira.probes if p.answer.lower() in reply.lower()} for reply in replies]
    assert set().union(*found) == {p.answer for p in mira.probes}, replies
    assert max(map(len, found)) >= 3, replies

    # The same architecture without planting knows nothing: the accuracy comes from planting.
    blank = build_model(tokenizer, seed=0)
    assert all(probe_accuracy(blank, tokenizer, p.probes) <= 0.2 for p in spec.people)


def test_cache_hit_returns_the_same_model(planted, monkeypatch):
    model, tokenizer, info = planted["model"], planted["tokenizer"], planted["info"]
    folder = Path(info["folder"])
    assert folder.parent == planted["cache"] and (folder / "plant.json").is_file()
    assert [p.name for p in planted["cache"].iterdir() if p.suffix != ".lock"] == [
        folder.name
    ]  # no temp dir left

    from pipeline.planting import plant as plant_module

    def no_training(*args, **kwargs):
        raise AssertionError("a cache hit ran a planting step")

    with monkeypatch.context() as patched:
        patched.setattr(plant_module, "plant", no_training)
        model2, tokenizer2, info2 = planted_model(
            _tiny_config(planted["spec_path"], steps=150), **planted["kwargs"]
        )
    assert info2["cached"] and info2["folder"] == info["folder"]
    assert info2["probe_accuracy"] == info["probe_accuracy"]

    batch = encode_pairs(tokenizer, ["Who is Mira Castellane?"], ["Mira Castellane is"])
    batch2 = encode_pairs(tokenizer2, ["Who is Mira Castellane?"], ["Mira Castellane is"])
    assert torch.equal(batch["input_ids"], batch2["input_ids"])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"]).logits
        logits2 = model2(input_ids=batch2["input_ids"]).logits
    assert torch.equal(logits, logits2)

    # A plain HF folder: the usual Auto classes load it.
    assert AutoTokenizer.from_pretrained(folder).get_vocab() == tokenizer.get_vocab()
    assert AutoModelForCausalLM.from_pretrained(folder).config.hidden_size == model.config.hidden_size

    # Different settings are a different model, in a different folder.
    other = planted_model(_tiny_config(planted["spec_path"], steps=2), **planted["kwargs"])[2]
    assert not other["cached"] and other["folder"] != info["folder"]


def test_retain_only_variant_never_learns_the_forget_people(planted):
    spec = planted["spec"]
    config = _tiny_config(planted["spec_path"], steps=150)
    model, tokenizer, info = planted_model(config, "retain_only", **planted["kwargs"])
    assert not info["cached"] and info["folder"] != planted["info"]["folder"]
    mira, tobias = spec.people
    assert info["planted_people"] == [tobias.name]
    # Same tokenizer as the full model: the two are compared token by token.
    assert tokenizer.get_vocab() == planted["tokenizer"].get_vocab()
    assert probe_accuracy(model, tokenizer, mira.probes) <= 0.2
    assert probe_accuracy(model, tokenizer, tobias.probes) >= 0.8


def test_planting_goes_on_until_the_probes_are_known(planted):
    # Two steps cannot plant anything; the extra rounds run up to max_steps and are recorded.
    config = _tiny_config(planted["spec_path"], steps=2, max_steps=5, min_probe_acc=1.0)
    info = planted_model(config, **planted["kwargs"])[2]
    assert info["plant"]["steps"] == 5 and info["plant"]["rounds"] == 4  # 2, then 1 + 1 + 1
    assert info["mean_probe_accuracy"] < 1.0


def test_planting_a_pretrained_folder_is_cached_by_its_identity(tmp_path, planted):
    # Any model folder can be planted, not only the tiny one built here: save one and plant it.
    folder = tmp_path / "base"
    build_model(planted["tokenizer"], 32, 2, 2, seed=0).save_pretrained(folder)
    planted["tokenizer"].save_pretrained(folder)
    config = ModelConfig(path=str(folder), plant=PlantConfig(spec=planted["spec_path"], steps=3))
    cache = tmp_path / "cache"
    first = planted_model(config, progress=False, cache=cache)[2]
    again = planted_model(config, progress=False, cache=cache)[2]
    assert not first["cached"] and again["cached"] and again["folder"] == first["folder"]
    assert first["settings"]["base"]["path"] == str(folder.resolve())
    # Another model saved under the same path is another base: it is planted again.
    build_model(planted["tokenizer"], 48, 2, 2, seed=0).save_pretrained(folder)
    assert planted_model(config, progress=False, cache=cache)[2]["folder"] != first["folder"]


def test_two_processes_asking_for_one_model_plant_it_once(tmp_path, planted):
    """Two runs started together: one plants, the other waits for the lock and reads the cache."""
    import subprocess
    import sys

    code = (
        "import json, sys; from pipeline.config import ModelConfig, PlantConfig; "
        "from pipeline.planting.plant import planted_model; "
        "config = ModelConfig(path='tiny', plant=PlantConfig(spec=sys.argv[1], steps=20)); "
        "print(json.dumps(planted_model(config, progress=False, cache=sys.argv[2])[2]['cached']))"
    )
    command = [sys.executable, "-c", code, str(planted["spec_path"]), str(tmp_path / "cache")]
    root = Path(__file__).resolve().parent.parent
    both = [subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    cached = sorted(json.loads(p.communicate(timeout=300)[0]) for p in both)
    assert [p.returncode for p in both] == [0, 0]
    assert cached == [False, True]
