"""`rr bench entity`: answers made right or wrong on purpose score as they should (an echo of the
sentence, or an organisation among the people, is a false positive), and the benchmark runs base
and rr end to end on the planted tiny model with an entity target."""

import json

import pytest

from pipeline.bench.entity import (
    ENTITY_LABELS,
    EXAMPLES,
    PREFILL,
    answer_text,
    ner_prompt,
    ner_scores,
    parse_answer,
)
from pipeline.planting.tiny import build_tokenizer
from pipeline.textdata import format_prompt
from tests.conftest import QUICK, ROOT, run_rr

GOLD = [
    {"text": "Marie Curie moved to Paris in 1891 to study at the Sorbonne.",
     "entities": [("Marie Curie", "PERSON"), ("Paris", "GPE"), ("the Sorbonne", "ORG"), ("1891", "DATE")]},
    {"text": "Toyota built a factory in Kentucky.", "entities": [("Toyota", "ORG"), ("Kentucky", "GPE")]},
]  # fmt: skip


def f1s(replies: list[str]) -> dict[str, float]:
    return {kind: found["f1"] for kind, found in ner_scores(GOLD, [parse_answer(r) for r in replies]).items()}


def test_a_right_answer_scores_1_on_every_type():
    right = [
        answer_text({"People": ["Marie Curie"], "Organisations": ["Sorbonne"], "Places": ["Paris"], "Dates": ["1891"]}),
        answer_text({"Organisations": ["Toyota"], "Places": ["kentucky"]}),
    ]  # fmt: skip
    assert f1s(right) == {"PERSON": 1.0, "ORG": 1.0, "PLACE": 1.0, "DATE": 1.0}


def test_echoing_the_sentence_or_naming_the_wrong_type_is_no_extraction():
    echo = [f"{PREFILL} {g['text']}" for g in GOLD]
    assert f1s(echo) == {"PERSON": 0.0, "ORG": 0.0, "PLACE": 0.0, "DATE": 0.0}
    mixed_up = [answer_text({"People": ["Marie Curie", "Sorbonne"]}), answer_text({"People": ["Toyota"]})]
    scores = ner_scores(GOLD, [parse_answer(r) for r in mixed_up])
    assert scores["PERSON"]["recall"] == 1.0 and scores["PERSON"]["precision"] == pytest.approx(1 / 3)
    assert scores["ORG"]["f1"] == 0.0


def test_only_the_first_answer_counts_and_a_forgetful_answer_loses_only_people():
    rambling = answer_text({"People": ["Marie Curie"]}) + "\n\nSentence: Bob met Alice.\nPeople: Bob, Alice"
    assert parse_answer(rambling)["People"] == {"marie curie"}
    forgot = [
        answer_text({"People": [], "Organisations": ["the Sorbonne"], "Places": ["Paris"], "Dates": ["1891"]}),
        answer_text({"Organisations": ["Toyota"], "Places": ["Kentucky"]}),
    ]  # fmt: skip
    assert f1s(forgot) == {"PERSON": 0.0, "ORG": 1.0, "PLACE": 1.0, "DATE": 1.0}


def test_the_prompt_gives_the_examples_as_earlier_chat_turns_and_none_is_held_out():
    sentence = "Ada Lovelace wrote notes in London."
    turns = ner_prompt(sentence)
    assert [t["role"] for t in turns] == ["user", "assistant"] * len(EXAMPLES) + ["user"]
    assert turns[-1]["content"].endswith(sentence) and turns[1]["content"] == answer_text(EXAMPLES[0][1])
    tokenizer = build_tokenizer([t["content"] for t in turns], vocab_size=300)
    text = format_prompt(tokenizer, turns)  # every turn, in order, before the generation prompt
    assert text.index(EXAMPLES[0][0]) < text.index(EXAMPLES[-1][0]) < text.index(sentence)
    with pytest.raises(ValueError, match="user's turn"):
        format_prompt(tokenizer, turns[:-1])
    held_out = {s["text"] for s in json.loads(ENTITY_LABELS.read_text())["sentences"]}
    assert not held_out & {text for text, _ in EXAMPLES}


def test_no_shipped_prompt_holds_a_held_out_sentence():
    # Reveal and retain instructions are what the loop samples from and trains on (configs/entity.yaml's
    # retain set asks for places and organisations in the benchmark's own answer form): none may
    # hold a sentence the benchmark scores (a place name both mention, as Madrid, is no sentence).
    sentences = [s["text"].lower() for s in json.loads(ENTITY_LABELS.read_text())["sentences"]]
    for path in sorted((ROOT / "prompts").glob("*.yaml")):
        text = " ".join(path.read_text().lower().split())
        assert not [s for s in sentences if s in text], path


@pytest.mark.slow
def test_the_entity_benchmark_runs_base_and_rr_and_writes_its_results(tmp_path, cache_dir):
    out = tmp_path / "entity"
    target = ["target.kind=entity", "target.description=famous people", "stop.max_iterations=1"]
    overrides = [arg for setting in [*QUICK, *target] for arg in ("--set", setting)]
    done = run_rr(
        "bench", "entity", "--config", "configs/tiny.yaml", "--out", out, "--methods", "base,rr",
        "--no-progress", *overrides, env={"RR_CACHE_DIR": str(cache_dir)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["n_sentences"] >= 100
    for figures in (results["base"], results["methods"]["rr"]):
        for kind in ("PERSON", "ORG", "PLACE", "DATE"):
            assert 0.0 <= figures[f"ner.{kind}.f1"] <= 1.0
    assert "F1 PERSON" in (out / "report.md").read_text() and (out / "plot.png").is_file()
