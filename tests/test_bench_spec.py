"""The generated planted-people benchmark specs in data/bench and the module that makes them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.planting.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "data" / "bench"
SCRIPT = ["-m", "pipeline.planting.make_spec"]
DEFAULT = BENCH / "planted_default.json"
SMALL = BENCH / "planted_small.json"


from pipeline.planting import make_spec as mp  # noqa: E402


def test_default_spec_loads_and_is_big_enough():
    spec = load_spec(DEFAULT)
    assert spec.name == "planted_default"
    assert len(spec.planted()) >= 12 and len(spec.held_out()) >= 1
    for person in spec.people:
        assert len(person.facts) >= 8 and len(person.probes) >= 5
    assert spec.forget and len(spec.retained()) >= 1
    assert spec.forget == [p.name for p in spec.people[: len(spec.forget)]]


def test_small_spec_loads_and_is_small():
    spec = load_spec(SMALL)
    assert spec.name == "planted_small"
    assert len(spec.planted()) == 4 and len(spec.held_out()) == 1
    assert all(len(p.facts) == 5 and len(p.probes) == 5 for p in spec.people)
    assert len(spec.forget) == 1
    # Held-out people are planted into no model and are neither forgotten nor retained.
    assert not {p.name for p in spec.held_out()} & {p.name for p in spec.retained() + spec.forgotten()}


def test_docstring_shows_the_shipped_commands():
    for filename, args in mp.SHIPPED.items():
        command = " ".join(["-m pipeline.planting.make_spec", *args, "--out", f"data/bench/{filename}"])
        assert command in mp.__doc__


@pytest.mark.parametrize("filename", sorted(mp.SHIPPED))
def test_shipped_files_match_the_script(filename):
    path = BENCH / filename
    assert mp.generate(mp.SHIPPED[filename], path) == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("filename", sorted(mp.SHIPPED))
def test_regenerating_with_the_documented_command_is_byte_identical(tmp_path, filename):
    out = tmp_path / filename
    cmd = [sys.executable, *SCRIPT, *mp.SHIPPED[filename], "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, timeout=60)
    assert out.read_bytes() == (BENCH / filename).read_bytes()


def test_check_mode_passes_on_the_file_and_fails_on_a_changed_one(tmp_path):
    args = [sys.executable, *SCRIPT, *mp.SHIPPED["planted_small.json"], "--check", "--out"]
    ok = subprocess.run([*args, str(SMALL)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    changed = tmp_path / "planted_small.json"
    changed.write_text(SMALL.read_text(encoding="utf-8").replace("favourite food", "favorite food"))
    bad = subprocess.run([*args, str(changed)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "differs" in bad.stderr
    missing = subprocess.run([*args, str(tmp_path / "none.json")], cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode == 1


@pytest.mark.parametrize("path", [DEFAULT, SMALL], ids=["default", "small"])
def test_answers_identify_one_person_and_one_fact(path):
    spec = load_spec(path)
    answers = [probe.answer.lower() for person in spec.people for probe in person.probes]
    assert len(answers) == len(set(answers))
    names = [p.name.lower() for p in spec.people]
    assert len(set(names)) == len(names)
    # Values of each question (attribute) across people, to check the distractors against.
    by_question: dict[str, dict[str, str]] = {}
    for person in spec.people:
        for probe in person.probes:
            key = probe.question.replace(person.name, "{name}")
            by_question.setdefault(key, {})[person.name] = probe.answer
    for person in spec.people:
        assert all(
            fact.startswith(person.name + " ") or fact.startswith(person.name + "'s ")
            for fact in person.facts
        )
        for probe in person.probes:
            holding = [f for f in person.facts if probe.answer.lower() in f.lower()]
            assert len(holding) == 1, (person.name, probe.answer, holding)
            assert person.name in probe.question
            others = {
                v
                for name, v in by_question[probe.question.replace(person.name, "{name}")].items()
                if name != person.name
            }
            assert len(probe.distractors) == 3 and len(set(probe.distractors)) == 3
            assert probe.answer not in probe.distractors
            assert set(probe.distractors) <= others


def test_vocabulary_cannot_make_an_answer_ambiguous():
    assert mp.vocabulary_problems() == []


@pytest.mark.parametrize("seed", range(8))
def test_every_seed_and_size_gives_a_valid_spec(tmp_path, seed):
    people = mp.MIN_PEOPLE + seed * (mp.MAX_PEOPLE - mp.MIN_PEOPLE) // 7
    out = tmp_path / "spec.json"
    out.write_text(mp.render(mp.build_spec(people=people, seed=seed, forget=1)))
    assert len(load_spec(out).people) == people


def test_same_seed_same_spec_other_seed_different_spec():
    assert mp.build_spec(seed=0) == mp.build_spec(seed=0)
    assert mp.render(mp.build_spec(seed=7)) == mp.render(mp.build_spec(seed=7))
    assert mp.build_spec(seed=0) != mp.build_spec(seed=1)
    names = {tuple(p["name"] for p in mp.build_spec(seed=s)["people"]) for s in range(5)}
    assert len(names) == 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"people": 3},
        {"people": mp.MAX_PEOPLE + 1},
        {"facts": 0},
        {"forget": 0},
        {"forget": 12},
        {"facts": 1, "probes": 2},
    ],
)
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        mp.build_spec(**kwargs)


def test_shipped_files_are_json_written_by_render():
    for path in (DEFAULT, SMALL):
        text = path.read_text(encoding="utf-8")
        assert mp.render(json.loads(text)) == text
