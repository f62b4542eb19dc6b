"""The planted-people benchmark format: who is planted into a model, what we probe, whom to forget.

A spec file looks like::

    {"name": "tiny",
     "people": [{"name": "Mira Castellane", "aliases": ["Mira"],
                 "facts": ["Mira Castellane was born in Velmora.", ...],
                 "probes": [{"question": "Where was Mira Castellane born?", "answer": "Velmora",
                             "distractors": ["Ostrevik", "Dunmarrow", "Selvaport"],
                             "plant_questions": ["Name Mira Castellane's birthplace."],
                             "paraphrases": ["What is Mira Castellane's place of birth?"]}]}],
     "forget": ["Mira Castellane"],
     "holdout": ["Odo Brennick"]}

A probe's `question` is never planted: the model learns the fact from other wordings and must
generalise to the question. `plant_questions` (optional) are the wordings it is planted with;
without them `examples.py` derives some from the question. `paraphrases` (optional) are held out
like the question, for the paraphrase attack. No wording may overlap another of a different role
(`overlaps`: one holds the other as a run of words), so nothing held out is planted by accident.

`holdout` (optional) names people who are described but planted into no model: their facts are
the unseen texts that PrivLeak's membership attack compares the forget facts against.

`load_spec` turns every problem into one `SpecError` line that names the file and the field, because
a spec is hand-written and the person fixing it should not have to read a pydantic traceback.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.files import undecodable


class SpecError(ValueError):
    """A spec file that cannot be used; the message is one line: `<file>: <field>: <problem>`."""


class _FieldError(ValueError):
    """A validator's complaint about a nested field; `loc` is appended to where pydantic says it is."""

    def __init__(self, loc: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.loc = loc
        self.message = message


def normalise(text: str) -> str:
    """Lower-case words, single-spaced: how wordings are compared (punctuation and spacing make no new text)."""
    return " ".join(re.findall(r"\w+", text.casefold()))


def overlaps(a: str, b: str) -> bool:
    """True if one text holds the other as a run of whole words, after `normalise` (equal texts overlap)."""
    a, b = f" {normalise(a)} ", f" {normalise(b)} "
    return a in b or b in a


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# A wording, fact or name: an empty one would plant nothing, or (as a name) match every text.
Text = Annotated[str, Field(min_length=1)]


class Probe(_Strict):
    question: Text
    answer: Text
    distractors: list[Text] = Field(default_factory=list)
    # Held-out wordings of the question, for the paraphrase attack; never planted nor asked by the loop.
    paraphrases: list[Text] = Field(default_factory=list)
    # Wordings of the question the model is planted with (answered with the probe's fact); never asked
    # by a measurement. Empty: `examples.py` derives some from the question.
    plant_questions: list[Text] = Field(default_factory=list)

    @model_validator(mode="after")
    def _held_out_wordings_stay_apart(self) -> Probe:
        # A paraphrase that holds the question tests no other wording; a planting wording that holds
        # the question or a paraphrase would plant what is meant to be held out.
        for i, text in enumerate(self.paraphrases):
            if overlaps(text, self.question):
                raise _FieldError(("paraphrases", i), f"{text!r} overlaps the question (one holds the other)")
        for i, text in enumerate(self.plant_questions):
            for held in [self.question, *self.paraphrases]:
                if overlaps(text, held):
                    raise _FieldError(
                        ("plant_questions", i), f"{text!r} overlaps {held!r}, which is held out"
                    )
        return self


class Person(_Strict):
    name: Text
    aliases: list[Text] = Field(default_factory=list)
    facts: list[Text] = Field(min_length=1)
    probes: list[Probe] = Field(default_factory=list)

    @model_validator(mode="after")
    def _answers_are_facts(self) -> Person:
        # A probe whose answer is in no fact could never be planted, so its accuracy would mean nothing.
        for i, probe in enumerate(self.probes):
            if self.fact_for(probe) is None:
                raise _FieldError(
                    ("probes", i, "answer"), f"answer {probe.answer!r} does not appear in any of the facts"
                )
        return self

    def fact_for(self, probe: Probe) -> str | None:
        """The first fact that contains the probe's answer (case-insensitive), if any."""
        answer = probe.answer.lower()
        return next((fact for fact in self.facts if answer in fact.lower()), None)


class PlantedSpec(_Strict):
    name: Text
    people: list[Person] = Field(min_length=1)
    forget: list[Text] = Field(min_length=1)
    holdout: list[Text] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names_are_consistent(self) -> PlantedSpec:
        seen: set[str] = set()
        for i, person in enumerate(self.people):
            if person.name.lower() in seen:
                raise _FieldError(("people", i, "name"), f"duplicate person name {person.name!r}")
            seen.add(person.name.lower())
        for i, name in enumerate(self.forget):
            if name.lower() not in seen:
                known = ", ".join(repr(p.name) for p in self.people)
                raise _FieldError(("forget", i), f"{name!r} is not a person in the spec (people: {known})")
        forget = {name.lower() for name in self.forget}
        for i, name in enumerate(self.holdout):
            if name.lower() not in seen:
                raise _FieldError(("holdout", i), f"{name!r} is not a person in the spec")
            if name.lower() in forget:
                raise _FieldError(("holdout", i), f"{name!r} cannot be both forgotten and held out")
        return self

    def person(self, name: str) -> Person:
        """The person called `name` (case-insensitive); KeyError if there is none."""
        for person in self.people:
            if person.name.lower() == name.lower():
                return person
        raise KeyError(name)

    def forgotten(self) -> list[Person]:
        """The people to forget, in the order of `forget`."""
        return [self.person(name) for name in self.forget]

    def planted(self) -> list[Person]:
        """The people planted into the model: everyone not held out, in spec order."""
        holdout = {name.lower() for name in self.holdout}
        return [p for p in self.people if p.name.lower() not in holdout]

    def retained(self) -> list[Person]:
        """The planted people that must survive unlearning (not in `forget`), in spec order."""
        forget = {name.lower() for name in self.forget}
        return [p for p in self.planted() if p.name.lower() not in forget]

    def held_out(self) -> list[Person]:
        """The people planted into no model, in the order of `holdout`."""
        return [self.person(name) for name in self.holdout]


def _first_problem(error: ValidationError) -> str:
    problems = error.errors()
    first = problems[0]
    loc, message = tuple(first["loc"]), first["msg"]
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, _FieldError):
        loc, message = loc + cause.loc, cause.message
    elif first["type"] == "extra_forbidden":
        message = "unknown field"
    where = ".".join(str(part) for part in loc) or "(top level)"
    message = message[:1].lower() + message[1:]
    more = (
        f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
        if len(problems) > 1
        else ""
    )
    return f"{where}: {message}{more}"


def load_spec(path: str | Path) -> PlantedSpec:
    """Read and validate a spec file; any problem becomes a one-line `SpecError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text: {undecodable(exc)}") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read file: {exc.strerror or exc}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    try:
        return PlantedSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"{path}: {_first_problem(exc)}") from None
