"""Generate a planted-people benchmark spec: fictional people, one fact per attribute, probes, a forget set.

Every person gets an invented full name and one value per attribute (home town, profession, pet and
its name, weekend hobby, favourite food, birth year, employer, instrument, younger sibling, favourite
colour). Values are drawn *without replacement* per attribute, so no two people share one, and the
vocabulary is checked so that no value is a substring of another value, of a name, or of a sentence
template. Hence every probe answer names exactly one person and appears in exactly one of that
person's facts (which is what `Person.fact_for` relies on). Each fact is one sentence that starts
with the person's full name; each probe asks for one attribute, and its three distractors are other
people's values for the same attribute. The first `--forget` people are the ones to forget; `--holdout N`
adds N more people who are planted into no model (their facts are PrivLeak's unseen texts).

A probe's question is never planted (see `pipeline.planting.examples`): each probe carries the four
wordings it is planted with (`plant_questions`: three from `vocabulary.PLANT_QUESTIONS` and the
question reworded around the name, `examples.derived_questions`) and two held-out ones
(`paraphrases`, for the paraphrase attack, from `vocabulary.PARAPHRASES`); the vocabulary check
also makes sure that no planting wording overlaps any question or paraphrase.

The output is a pure function of the arguments (`random.Random(seed)`, no clock, no environment),
and is validated with `pipeline.planting.spec.load_spec` before it replaces the file on disk.

The two shipped files were made, from the repository root, with::

    .venv/bin/python -m pipeline.planting.make_spec --people 12 --holdout 2 --seed 0 --forget 2 --out data/bench/planted_default.json
    .venv/bin/python -m pipeline.planting.make_spec --people 4 --holdout 1 --facts 5 --probes 5 --seed 0 --forget 1 --out data/bench/planted_small.json

`planted_default.json`: 12 planted people, 10 facts and 11 probes each, 2 to forget; 2 held out.
`planted_small.json` (for a tiny model): 4 planted people, 5 facts and 5 probes each, 1 to forget; 1 held out.

Add `--check` to either command to regenerate in memory and compare with the file instead of writing
it: exit 0 if they are byte-identical, 1 if the file differs or is missing (for CI).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import sys
import tempfile
from pathlib import Path

from pipeline.planting.examples import derived_questions
from pipeline.planting.spec import load_spec, overlaps
from pipeline.planting.vocabulary import (
    FACTS,
    FIRST_NAMES,
    PARAPHRASES,
    PLANT_QUESTIONS,
    POOLS,
    QUESTIONS,
    SURNAME_HEADS,
    SURNAME_TAILS,
)

# The exact arguments of the shipped files (the docstring shows them as commands; a test keeps both in step).
SHIPPED: dict[str, list[str]] = {
    "planted_default.json": "--people 12 --holdout 2 --seed 0 --forget 2".split(),
    "planted_small.json": "--people 4 --holdout 1 --facts 5 --probes 5 --seed 0 --forget 1".split(),
}

N_DISTRACTORS = 3
MIN_PEOPLE = N_DISTRACTORS + 1
MAX_PEOPLE = min(len(FIRST_NAMES), *(len(pool) for pool in POOLS.values()))


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _fields(template: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


def _literals(template: str) -> str:
    return "\0".join(text for text, _, _, _ in string.Formatter().parse(template))


def _fact_attributes(template: str) -> list[str]:
    return [f for f in _fields(template) if f != "name" and not f.startswith("a_")]


def vocabulary_problems() -> list[str]:
    """Ways the vocabulary could make an answer ambiguous; empty when every seed gives a sound spec."""
    problems = []
    for attribute, pool in POOLS.items():
        if len({v.lower() for v in pool}) != len(pool):
            problems.append(f"{attribute}: duplicate values")
        for value in pool:
            low = value.lower()
            for other, other_pool in POOLS.items():
                problems += [
                    f"{attribute} {value!r} is inside {other} {w!r}"
                    for w in other_pool
                    if other != attribute and low in w.lower()
                ]
            problems += [
                f"{attribute} {value!r} is inside the template {t!r}"
                for t in FACTS
                if low in _literals(t).lower()
            ]
    fact_attributes = [a for t in FACTS for a in _fact_attributes(t)]
    if sorted(fact_attributes) != sorted(POOLS) or sorted(a for a, _ in QUESTIONS) != sorted(POOLS):
        problems.append("FACTS and QUESTIONS must each cover every attribute of POOLS exactly once")
    if sorted(PLANT_QUESTIONS) != sorted(POOLS) or sorted(PARAPHRASES) != sorted(POOLS):
        problems.append("PLANT_QUESTIONS and PARAPHRASES must each cover every attribute of POOLS")
    return problems + _wording_problems()


def _wording_problems() -> list[str]:
    """Planting wordings that would plant a held-out one (of any attribute); paraphrases that hold a question."""
    name = "Ann Example"  # every template names the person the same way, so any name shows an overlap
    held = [q.format(name=name) for _, q in QUESTIONS]
    held += [p.format(name=name) for wordings in PARAPHRASES.values() for p in wordings]
    problems = [
        f"PLANT_QUESTIONS[{attribute!r}]: {w!r} overlaps the held-out {h!r}"
        for attribute, wordings in PLANT_QUESTIONS.items()
        for w in (t.format(name=name) for t in wordings)
        for h in held
        if overlaps(w, h)
    ]
    questions = [q.format(name=name) for _, q in QUESTIONS]
    problems += [
        f"PARAPHRASES[{attribute!r}]: {p!r} overlaps the question {q!r}"
        for attribute, wordings in PARAPHRASES.items()
        for p in (t.format(name=name) for t in wordings)
        for q in questions
        if overlaps(p, q)
    ]
    return problems


def _name_is_clean(full: str) -> bool:
    """True if no value occurs in the name (it would then be in every fact) and vice versa."""
    low = full.lower()
    return not any(v.lower() in low or low in v.lower() for pool in POOLS.values() for v in pool)


def _draw_names(rng: random.Random, n: int) -> list[tuple[str, str, str]]:
    firsts = rng.sample(FIRST_NAMES, n)
    names: list[tuple[str, str, str]] = []
    used: set[str] = set()
    for first, title in firsts:
        while True:
            surname = rng.choice(SURNAME_HEADS) + rng.choice(SURNAME_TAILS)
            if surname not in used and _name_is_clean(f"{first} {surname}"):
                break
        used.add(surname)
        names.append((first, surname, title))
    return names


def build_spec(
    *,
    people: int = 12,
    facts: int | None = None,
    probes: int | None = None,
    seed: int = 0,
    forget: int = 2,
    holdout: int = 0,
    name: str = "planted",
) -> dict:
    """The spec as a JSON-ready dict; the same arguments always give the same dict."""
    if not MIN_PEOPLE <= people <= MAX_PEOPLE:
        raise ValueError(f"--people must be between {MIN_PEOPLE} and {MAX_PEOPLE}, got {people}")
    facts = len(FACTS) if facts is None else facts
    if not 1 <= facts <= len(FACTS):
        raise ValueError(f"--facts must be between 1 and {len(FACTS)}, got {facts}")
    if not 1 <= forget < people:
        raise ValueError(f"--forget must be between 1 and {people - 1}, got {forget}")
    if not 0 <= holdout <= MAX_PEOPLE - people:
        raise ValueError(
            f"--holdout must be between 0 and {MAX_PEOPLE - people} with {people} people, got {holdout}"
        )
    planted, people = people, people + holdout  # held-out people are drawn like the others
    problems = vocabulary_problems()
    if problems:
        raise ValueError("vocabulary: " + "; ".join(problems))

    templates = FACTS[:facts]
    kept = {a for t in templates for a in _fact_attributes(t)}
    questions = [(a, q) for a, q in QUESTIONS if a in kept]
    probes = len(questions) if probes is None else probes
    if not 1 <= probes <= len(questions):
        raise ValueError(f"--probes must be between 1 and {len(questions)} for {facts} facts, got {probes}")
    questions = questions[:probes]

    rng = random.Random(seed)
    names = _draw_names(rng, people)
    # Every attribute is drawn, kept or not, so `--facts` does not change the values of the kept ones.
    values = {attribute: rng.sample(pool, people) for attribute, pool in POOLS.items()}

    out_people = []
    for i, (first, surname, title) in enumerate(names):
        full = f"{first} {surname}"
        aliases = [first, f"{title} {surname}"]
        mine = {attribute: drawn[i] for attribute, drawn in values.items()}
        fields = {"name": full, **mine, **{f"a_{a}": _article(v) for a, v in mine.items()}}
        person_facts = [t.format(**fields) for t in templates]
        person_probes = []
        for attribute, question in questions:
            answer = mine[attribute]
            holding = [f for f in person_facts if answer.lower() in f.lower()]
            if len(holding) != 1:  # the vocabulary check should make this impossible
                raise AssertionError(f"{full}: {answer!r} is in {len(holding)} facts, not 1")
            # Distractors are planted people's values: wrong answers the model has seen elsewhere.
            others = [v for j, v in enumerate(values[attribute][:planted]) if j != i]
            person_probes.append(
                {
                    "question": question.format(name=full),
                    "answer": answer,
                    "distractors": rng.sample(others, N_DISTRACTORS),
                    # Natural rewordings, and one close to the question: a tiny model needs it (examples.py).
                    "plant_questions": [w.format(name=full) for w in PLANT_QUESTIONS[attribute]]
                    + derived_questions(full, aliases, question.format(name=full))[:1],
                    "paraphrases": [w.format(name=full) for w in PARAPHRASES[attribute]],
                }
            )
        out_people.append(
            {
                "name": full,
                "aliases": aliases,
                "facts": person_facts,
                "probes": person_probes,
            }
        )
    spec = {"name": name, "people": out_people, "forget": [p["name"] for p in out_people[:forget]]}
    if holdout:
        spec["holdout"] = [p["name"] for p in out_people[planted:]]
    return spec


def render(spec: dict) -> str:
    """The exact text written to disk."""
    return json.dumps(spec, indent=2, ensure_ascii=False) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=12, help="number of people (default 12)")
    parser.add_argument(
        "--facts", type=int, default=None, help=f"facts per person (default all {len(FACTS)})"
    )
    parser.add_argument(
        "--probes", type=int, default=None, help="probes per person (default: all the facts allow)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--forget", type=int, default=2, help="the first N people are to be forgotten (default 2)"
    )
    parser.add_argument(
        "--holdout", type=int, default=0, help="N more people planted into no model, for PrivLeak (default 0)"
    )
    parser.add_argument("--name", default=None, help="spec name (default: the --out file's stem)")
    parser.add_argument(
        "--out", required=True, type=Path, help="the JSON file to write (or compare with --check)"
    )
    parser.add_argument(
        "--check", action="store_true", help="compare with --out instead of writing; exit 1 if different"
    )
    return parser


def _spec_from_args(args: argparse.Namespace) -> dict:
    return build_spec(
        people=args.people,
        facts=args.facts,
        probes=args.probes,
        seed=args.seed,
        forget=args.forget,
        holdout=args.holdout,
        name=args.name or args.out.stem,
    )


def generate(argv: list[str], out: Path) -> str:
    """The text that `make_spec *argv --out out` writes (without writing it)."""
    return render(_spec_from_args(_parser().parse_args([*argv, "--out", str(out)])))


def _validate(text: str, out: Path) -> None:
    """Check `text` with the pipeline's own loader, as it will be read."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}-", suffix=".json", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        load_spec(tmp)
    finally:
        os.unlink(tmp)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        spec = _spec_from_args(args)
    except ValueError as exc:
        print(f"make_spec: {exc}", file=sys.stderr)
        return 2
    text = render(spec)
    out: Path = args.out
    if args.check:
        if not out.is_file():
            print(f"make_spec: {out} does not exist; run without --check to write it", file=sys.stderr)
            return 1
        if out.read_text(encoding="utf-8") != text:
            print(
                f"make_spec: {out} differs from what the script generates; rerun without --check",
                file=sys.stderr,
            )
            return 1
        _validate(text, out)
        print(f"{out}: up to date")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    _validate(text, out)
    out.write_text(text, encoding="utf-8")
    n_facts, n_probes = len(spec["people"][0]["facts"]), len(spec["people"][0]["probes"])
    print(
        f"{out}: {len(spec['people'])} people, {n_facts} facts and {n_probes} probes each, "
        f"{len(spec['forget'])} to forget, {len(spec.get('holdout', []))} held out"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
