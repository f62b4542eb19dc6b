"""The planting texts hold no reveal seed and no probe: the loop has to find the knowledge, probes measure it.

A planted person is learned from the pairs of `plant_examples`. If a filled reveal seed ("Tell me about
Mira Castellane.") or a probe question were among them, the loop would find planted text verbatim by
asking its seeds, and probe accuracy would measure a memorised string. Texts are compared with
`spec.overlaps` (one holds the other as a run of words, case, punctuation and spacing aside).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.planting import make_spec as mp
from pipeline.planting.examples import HELD_OUT_REQUEST, derived_questions, plant_examples
from pipeline.planting.spec import PlantedSpec, Probe, SpecError, load_spec, normalise, overlaps
from pipeline.reveal.instructions import fill, read_prompt_list

ROOT = Path(__file__).resolve().parent.parent
# Every knowledge pool a config can name (reveal.prompts): the default and the wider one.
SEEDS = [
    seed
    for path in ("knowledge.yaml", "knowledge_styles.yaml")
    for seed in read_prompt_list(ROOT / "prompts" / path)
]
EVAL_PROMPTS = read_prompt_list(ROOT / "data" / "eval" / "knowledge.yaml", "prompts")
SHIPPED = {
    "default": ROOT / "data" / "bench" / "planted_default.json",
    "small": ROOT / "data" / "bench" / "planted_small.json",
    "tiny": ROOT / "data" / "people" / "tiny.json",
}


# Generated specs of several sizes and seeds, beside the shipped ones: no vocabulary draw may leak.
GENERATED = {
    f"generated-seed{seed}": {"people": 4 + 3 * seed, "seed": seed, "facts": facts, "probes": probes}
    for seed, (facts, probes) in enumerate([(None, None), (5, 5), (3, None), (10, 4), (7, 8)], start=1)
}
SPECS = sorted(SHIPPED) + sorted(GENERATED)


def _spec(name: str) -> PlantedSpec:
    if name in SHIPPED:
        return load_spec(SHIPPED[name])
    return PlantedSpec.model_validate(mp.build_spec(**GENERATED[name], forget=2, holdout=1))


def filled_seeds(spec: PlantedSpec) -> list[str]:
    """Every request the reveal pool starts from (and the loop's eval prompts), about anyone in the spec."""
    subjects = [name for person in spec.people for name in [person.name, *person.aliases]]
    subjects.append(" and ".join(spec.forget))  # the default description of several targets
    return [text for subject in subjects for text in fill(SEEDS + EVAL_PROMPTS, subject)]


def measured(spec: PlantedSpec) -> list[str]:
    """The wordings only measurements ask: probe questions, paraphrases, the benchmark's request."""
    texts = [HELD_OUT_REQUEST.format(name=person.name) for person in spec.people]
    return texts + [
        t for person in spec.people for probe in person.probes for t in [probe.question, *probe.paraphrases]
    ]


def leaks(pairs: list[tuple[str, str]], held: list[str]) -> list[tuple[str, str]]:
    """(planting text, held-out text) for every planting instruction or response that overlaps one."""
    # `overlaps`, with each text normalised once: the default spec makes a million comparisons.
    texts = {f" {normalise(text)} ": text for pair in pairs for text in pair}
    helds = {f" {normalise(h)} ": h for h in held}
    return sorted((t, h) for nt, t in texts.items() for nh, h in helds.items() if nt in nh or nh in nt)


@pytest.mark.parametrize("name", SPECS)
def test_no_reveal_seed_and_no_probe_is_planted(name):
    spec = _spec(name)
    pairs = plant_examples(spec.people)  # held-out people too: the tokenizer and PrivLeak see their texts
    assert len(pairs) > 10 * len(spec.people)
    assert leaks(pairs, filled_seeds(spec)) == []
    assert leaks(pairs, measured(spec)) == []


@pytest.mark.parametrize("name", SPECS)
def test_paraphrases_are_other_wordings_held_out_from_the_loop(name):
    spec = _spec(name)
    seeds = filled_seeds(spec)
    for person in spec.people:
        for probe in person.probes:
            assert len(probe.paraphrases) >= 2, (person.name, probe.question)
            assert len({" ".join(p.lower().split()) for p in probe.paraphrases}) == len(probe.paraphrases)
            for paraphrase in probe.paraphrases:
                assert not overlaps(paraphrase, probe.question), paraphrase
                assert not [s for s in seeds if overlaps(paraphrase, s)], paraphrase


@pytest.mark.parametrize("name", SPECS)
def test_every_probe_is_planted_through_other_wordings_of_its_fact(name):
    spec = _spec(name)
    pairs = plant_examples(spec.people)
    for person in spec.people:
        for probe in person.probes:
            # Generated specs list their wordings; a hand-written one gets them derived from the question.
            wordings = probe.plant_questions or derived_questions(person.name, person.aliases, probe.question)
            assert len(wordings) >= 3, (person.name, probe.question)
            assert set(wordings) <= {i for i, r in pairs if r == person.fact_for(probe)}


def test_the_check_fails_on_the_old_planting():
    # The pairs planting used to make: the reveal seeds themselves and each probe question, answered.
    spec = load_spec(SHIPPED["tiny"])
    old = []
    for person in spec.people:
        old.append((f"Tell me about {person.name}.", " ".join(person.facts)))
        old.append((f"Where does {person.name} live?", person.facts[0]))
        old += [(probe.question, person.fact_for(probe)) for probe in person.probes]
    seed_leaks, probe_leaks = leaks(old, filled_seeds(spec)), leaks(old, measured(spec))
    assert ("Tell me about Mira Castellane.", "Tell me about Mira Castellane.") in seed_leaks
    assert ("Where does Tobias Wrenfield live?", "Where does Tobias Wrenfield live?") in seed_leaks
    assert len(probe_leaks) == sum(len(p.probes) for p in spec.people)
    # A seed inside a longer planting request, or a seed filled with an alias, is a leak too.
    longer = [("Please tell me about Mira Castellane, briefly!", "x"), ("Who is  MIRA?", "x")]
    assert {text for text, _ in leaks(longer, filled_seeds(spec))} == {text for text, _ in longer}


def test_a_spec_question_that_matches_a_generic_request_stays_unplanted():
    # Generic attribute requests are worded for anyone; a user's probe may ask one of them exactly.
    person = load_spec(SHIPPED["tiny"]).people[0]
    question = f"How does {person.name} earn a living?"
    probe = Probe(question=question, answer="glassblower", paraphrases=[f"What is {person.name}'s trade?"])
    mine = person.model_copy(update={"probes": [probe]})
    pairs = plant_examples([mine])
    assert leaks(pairs, [question, *probe.paraphrases]) == []
    assert any(i.startswith(f"{person.name}: How does this person earn") for i, _ in pairs)


def test_derived_questions_take_the_name_out():
    aliases = ["Mira", "Ms Castellane"]
    derived = derived_questions("Mira Castellane", aliases, "What is Mira's job, and Mira's town?")
    assert derived[0] == "Mira Castellane: What is this person's job, and this person's town?"
    assert len(derived) == 3 and all("Mira Castellane" in d for d in derived)
    assert not any(overlaps(d, "What is Mira's job, and Mira's town?") for d in derived)
    # Whole words only: "Mirabel" is not "Mira"; a question that names no one gets nothing.
    assert derived_questions("Mira Castellane", aliases, "Where does Mirabel live?") == []


def test_a_spec_without_the_new_fields_still_plants_and_loads(tmp_path):
    raw = json.loads(SHIPPED["tiny"].read_text())
    for person in raw["people"]:
        for probe in person["probes"]:
            probe.pop("paraphrases", None)
    path = tmp_path / "old.json"
    path.write_text(json.dumps(raw))
    spec = load_spec(path)
    pairs = plant_examples(spec.people)
    assert leaks(pairs, filled_seeds(spec)) == [] and leaks(pairs, measured(spec)) == []
    for person in spec.people:
        for probe in person.probes:
            assert sum(r == person.fact_for(probe) and "this person" in i for i, r in pairs) == 3


@pytest.mark.parametrize(
    "field, value, where",
    [
        ("plant_questions", ["Quickly: in which town does Mira Castellane live"], "plant_questions.0"),
        ("plant_questions", ["Fine.", "Where has Mira Castellane made a home?"], "plant_questions.1"),
        ("paraphrases", ["In which town does  mira castellane live?!"], "paraphrases.0"),
    ],
)
def test_a_wording_that_overlaps_a_held_out_one_is_refused(tmp_path, field, value, where):
    raw = json.loads(SHIPPED["tiny"].read_text())
    raw["people"][0]["probes"][0][field] = value
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(SpecError, match=rf"people\.0\.probes\.0\.{where}: .* overlaps"):
        load_spec(path)


def test_held_out_request_is_no_planting_text_and_no_seed():
    spec = load_spec(SHIPPED["default"])
    requests = [HELD_OUT_REQUEST.format(name=person.name) for person in spec.people]
    pairs = plant_examples(spec.people)
    assert leaks(pairs, requests) == []
    assert not [s for s in filled_seeds(spec) for r in requests if overlaps(r, s)]


def test_the_vocabulary_check_finds_a_planting_wording_that_holds_a_question(monkeypatch):
    wordings = {**mp.PLANT_QUESTIONS, "food": ["Quick: what is {name}'s favourite food"]}
    monkeypatch.setattr(mp, "PLANT_QUESTIONS", wordings)
    problems = mp.vocabulary_problems()
    assert len(problems) == 1 and "PLANT_QUESTIONS['food']" in problems[0], problems
    with pytest.raises(ValueError, match="vocabulary: "):
        mp.build_spec(people=4, forget=1)


@pytest.mark.parametrize("name", SPECS)
def test_the_loop_asks_planting_wordings_and_none_the_benchmark_measures(name):
    from pipeline.config import load_config
    from pipeline.run.state import probes

    spec = _spec(name)
    config = load_config(ROOT / "configs" / "tiny.yaml", [f"target.name={spec.people[0].name}"])
    forget, retain = probes(config, spec)
    assert len(forget) == len(spec.people[0].probes) and len(retain) > 0
    planted = {i for i, _ in plant_examples(spec.people)}
    held = measured(spec)
    for probe in forget + retain:
        assert probe.question in planted, probe.question
        assert not [h for h in held if overlaps(probe.question, h)], probe.question
