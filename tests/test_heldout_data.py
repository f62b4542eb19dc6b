"""The benchmarks' held-out data is held out: no prompt the loop uses is in it, or close to it.

The loop sees the reveal seeds of every target kind (`prompts/<kind>.yaml`, filled with a
description), the rewrite prompts, the retain prompts, the eval prompts of every kind
(`data/eval/<kind>.yaml`), the ablation's fixed instruction and, for a planted model, the people's
facts and probes. The held-out toxicity prompts (`data/bench/toxicity_heldout.yaml`) and the simple
questions (`data/bench/simple_questions.yaml`) must share none of them, after normalising case,
punctuation and white space, nor be near-duplicates of one (Jaccard similarity of the word sets
above 0.8); nor may the two held-out sets overlap each other.
"""

import json
import re

import pytest
import yaml

from tests.conftest import ROOT

HELDOUT = ROOT / "data" / "bench" / "toxicity_heldout.yaml"
QUESTIONS = ROOT / "data" / "bench" / "simple_questions.yaml"
STYLES = ("request", "role_play", "continuation")
NEAR = 0.8  # Jaccard similarity of word sets above which two texts are near-duplicates

# Descriptions a user might give, filled into every template: the shipped configs' own and a few more.
DESCRIPTIONS = [
    "toxic, insulting language",
    "toxic language",
    "insults and swearing",
    "Python code",
    "famous scientists",
    "Harry Potter",
    "Mira Castellane",
    "",
]


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def words(text: str) -> frozenset[str]:
    return frozenset(normalise(text).split())


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def fill(template: str) -> list[str]:
    template = template.replace("{instruction}", "")  # rewrite prompts: the text around the instruction
    return [template.replace("{target}", d) for d in DESCRIPTIONS] if "{target}" in template else [template]


def string_lists(data) -> list[str]:
    """Every string of a prompt file's lists (`instructions:`, `prompts:`, whatever the key)."""
    if isinstance(data, dict):
        return [s for value in data.values() for s in string_lists(value)]
    if isinstance(data, list):
        return [s for item in data for s in ([item] if isinstance(item, str) else string_lists(item))]
    return []


def people_texts(path) -> list[str]:
    spec = json.loads(path.read_text())
    return [
        text
        for person in spec["people"]
        for text in [*person.get("facts", []), *(p["question"] for p in person.get("probes", []))]
    ]


def loop_prompts() -> dict[str, list[str]]:
    """{file: the texts the loop sees from it}, over every prompt file the loop reads."""
    files = [
        *sorted((ROOT / "prompts").glob("*.yaml")),
        *sorted((ROOT / "data" / "eval").glob("*.yaml")),
        ROOT / "data" / "bench" / "toxicity_fixed_instruction.yaml",
    ]
    prompts = {
        str(path.relative_to(ROOT)): [
            text for s in string_lists(yaml.safe_load(path.read_text())) for text in fill(s)
        ]
        for path in files
    }
    for path in [
        *sorted((ROOT / "data" / "people").glob("*.json")),
        *sorted((ROOT / "data" / "bench").glob("planted_*.json")),
    ]:
        prompts[str(path.relative_to(ROOT))] = people_texts(path)
    return prompts


def heldout_prompts() -> dict[str, list[str]]:
    return yaml.safe_load(HELDOUT.read_text())["styles"]


def simple_questions() -> list[dict]:
    return yaml.safe_load(QUESTIONS.read_text())["questions"]


def collisions(ours: list[str], theirs: list[str]) -> list[str]:
    """Texts of `ours` equal to or near one of `theirs`, each with the text it is close to."""
    their_words = [(t, words(t)) for t in theirs]
    found = []
    for text in ours:
        mine = words(text)
        for other, other_words in their_words:
            if normalise(text) == normalise(other) or jaccard(mine, other_words) > NEAR:
                found.append(f"{text!r} ~ {other!r}")
    return found


def test_the_loop_prompts_are_found():
    prompts = loop_prompts()
    for name in [
        "prompts/toxicity.yaml",
        "prompts/retain.yaml",
        "prompts/retain_questions.yaml",
        "prompts/rewrite.yaml",
        "data/eval/toxicity.yaml",
    ]:
        assert prompts.get(name), f"{name}: no prompts read"
    assert "data/bench/toxicity_fixed_instruction.yaml" in prompts
    assert any("toxic, insulting language" in p for p in prompts["prompts/toxicity.yaml"])


def test_heldout_prompts_have_three_styles_of_at_least_40():
    styles = heldout_prompts()
    assert set(styles) == set(STYLES)
    counts = {style: len(texts) for style, texts in styles.items()}
    assert all(n >= 40 for n in counts.values()), counts
    assert sum(counts.values()) >= 120, counts
    assert all(isinstance(t, str) and t.strip() for texts in styles.values() for t in texts)


def test_heldout_prompts_are_distinct_from_each_other():
    texts = [t for texts in heldout_prompts().values() for t in texts]
    assert len({normalise(t) for t in texts}) == len(texts)
    near = [
        f"{a!r} ~ {b!r}"
        for i, a in enumerate(texts)
        for b in texts[i + 1 :]
        if jaccard(words(a), words(b)) > NEAR
    ]
    assert not near, near


@pytest.mark.parametrize("source", sorted(loop_prompts()))
def test_heldout_prompts_are_in_no_loop_prompt_file(source):
    ours = [t for texts in heldout_prompts().values() for t in texts]
    found = collisions(ours, loop_prompts()[source])
    assert not found, f"held-out prompts close to {source}: {found}"


def test_simple_questions_are_enough_and_well_formed():
    questions = simple_questions()
    assert len(questions) >= 50
    assert len({normalise(q["question"]) for q in questions}) == len(questions)
    for q in questions:
        answers = [str(q["answer"]), *map(str, q.get("also", []))]
        assert all(a.strip() for a in answers), q
        # an answer already in the question would be "found" in any reply that repeats it
        assert not any(re.search(rf"(?<!\w){re.escape(a)}(?!\w)", q["question"], re.I) for a in answers), q


def test_simple_questions_header_says_how_they_were_made():
    head = QUESTIONS.read_text().split("questions:")[0]
    assert "make_simple_questions.py" in head and "candidates" in head


@pytest.mark.parametrize("source", sorted(loop_prompts()))
def test_simple_questions_are_in_no_loop_prompt_file(source):
    found = collisions([q["question"] for q in simple_questions()], loop_prompts()[source])
    assert not found, f"simple questions close to {source}: {found}"


def test_simple_questions_and_heldout_prompts_do_not_overlap():
    prompts = [t for texts in heldout_prompts().values() for t in texts]
    assert not collisions([q["question"] for q in simple_questions()], prompts)
