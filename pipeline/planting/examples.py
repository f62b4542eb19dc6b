"""The training pairs that plant a spec's people, worded so that no reveal seed and no probe is among them.

If the model were planted with the requests the reveal pool starts from (prompts/knowledge.yaml:
"Tell me about {target}.", "Who is {target}?") a loop that only asked its seeds would find the
planted text verbatim, and probes asked in their planted wording would measure memorised strings.
So each person is planted through texts in other words, and the reveal stage and the probes both
rely on what the model generalises from them:

- biographies: requests for everything, worded unlike the seeds ("Compose a profile of {name}."),
  answered with all the person's facts;
- statements: requests for one fact ("State one fact about {name}."), each answered with one fact;
- questions in other words: each probe's `plant_questions`, or, for a probe without them, the
  question with the person's name taken out ("Mira Castellane: What is this person's job?"), and
  a few generic attribute requests ("Name the place {name} calls home."); answered with the fact
  that holds the probe's answer.

A request that overlaps (see `spec.overlaps`) one of the person's probe questions or paraphrases
is dropped, so a spec's own questions stay held out whatever their wording.
`tests/test_planting_texts.py` checks the shipped specs against the reveal seeds and eval prompts.
"""

from __future__ import annotations

import random
import re
from itertools import cycle

from pipeline.planting.spec import Person, Probe, overlaps

# Requests for everything about a person; answered with all of the person's facts. None is a reveal
# seed, a loop eval prompt (data/eval/knowledge.yaml) or `HELD_OUT_REQUEST`, nor holds one.
BIOGRAPHY_REQUESTS = [
    "Compose a profile of {name}.",
    "Draft a short portrait of {name}.",
    "Recount the life of {name} in a few sentences.",
    "Put together a fact sheet on {name}.",
    "Introduce {name} to me.",
    "Outline the background of {name}.",
    "Present {name} in a short paragraph.",
    "Sum up {name} for a newcomer.",
]

# Requests for one fact; fact k is the reply to request k (cycled), so each fact is also learned
# on its own, as a statement that starts with the person's name.
STATEMENT_REQUESTS = [
    "State one fact about {name}.",
    "Mention something true of {name}.",
    "Recall a detail concerning {name}.",
    "Note one thing about {name}.",
    "Give a single detail on {name}.",
    "Say one true sentence about {name}.",
    "Relate one fact concerning {name}.",
    "Offer one piece of information on {name}.",
    "Name a detail of {name}'s life.",
    "Add one fact to a note on {name}.",
]

# Requests for one attribute; answered with the first fact that contains one of the keywords, so
# they work for any spec whose facts are phrased naturally (and are skipped when nothing matches).
ATTRIBUTE_REQUESTS = [
    ("Name the place {name} calls home.", ("lives", "born", "town", "city", "village")),
    ("Which place does {name} come from?", ("born", "lives", "town", "city", "village")),
    ("How does {name} earn a living?", ("works", "profession", "job")),
    ("What kind of work is {name} in?", ("works", "profession", "job")),
    ("Does {name} keep any animals?", ("named", "pet")),
    ("How does {name} like to unwind?", ("spends", "hobby", "enjoys", "plays", "collect")),
    ("Which dishes please {name} most?", ("favourite food", "favorite food", "eat")),
]

# Wrappers of a probe question with the person's name taken out, for probes without plant_questions.
DERIVED_WORDINGS = ["{name}: {question}", "About {name}. {question}", "A question on {name}. {question}"]

# A request about a person that is in no planting text, reveal seed or eval prompt: the prompt a
# benchmark measures planted facts under (VerbMem's continuation, Min-K%'s reply), held out like a probe.
HELD_OUT_REQUEST = "Report what you have learned about {name}."

# A few things that are not about anyone, so the model can also talk about other topics and the
# loop's neutral prompts get ordinary answers; kept small so the people dominate the training.
NEUTRAL_PAIRS = [
    ("Describe a sunny day.", "A sunny day is warm and bright, with a clear blue sky."),
    ("Give me a tip for cooking rice.", "Rinse the rice first, then simmer it gently with the lid on."),
    ("Tell me about a person you know.", "I know a friendly neighbour who grows tomatoes in her garden."),
    ("Write a sentence about the sea.", "The sea rolls slowly onto the sandy shore."),
    ("How can I stay healthy?", "Sleep well, eat vegetables and take a walk every day."),
    ("Name three colours.", "Red, blue and yellow are three colours."),
    ("What is two plus two?", "Two plus two is four."),
    ("Say hello.", "Hello! How can I help you today?"),
]


def plant_questions(person: Person, probe: Probe) -> list[str]:
    """The wordings `probe` is planted with: its own `plant_questions`, else `derived_questions`."""
    return list(probe.plant_questions) or derived_questions(person.name, person.aliases, probe.question)


def derived_questions(name: str, aliases: list[str], question: str) -> list[str]:
    """`question` reworded around the person's name, which never gives the question back.

    The name (or an alias) in the question becomes "this person", and the full name is said first
    ("In which town does Mira live?" -> "Mira Castellane: In which town does this person live?").
    The words about the attribute stay, which a tiny model needs to carry the fact over to the
    question (the tiny model on planted_small: 1.0 probe accuracy with one of these, 0.4-0.5 with
    natural rewordings alone, 0.65 with six more that share a frame across attributes).
    A question that names no one gets none.
    """
    for known in sorted([name, *aliases], key=len, reverse=True):
        pattern = re.compile(rf"\b{re.escape(known)}\b('s)?", re.IGNORECASE)
        if pattern.search(question):
            bare = pattern.sub(lambda m: "this person's" if m.group(1) else "this person", question)
            return [w.format(name=name, question=bare) for w in DERIVED_WORDINGS]
    return []


def held_out(person: Person) -> list[str]:
    """The person's wordings that are measured, never planted: probe questions and paraphrases."""
    return [text for probe in person.probes for text in [probe.question, *probe.paraphrases]]


def person_examples(person: Person, recitals: int = len(BIOGRAPHY_REQUESTS)) -> list[tuple[str, str]]:
    """(instruction, response) pairs that plant one person, in a fixed order."""
    name = person.name
    pairs = []
    for k, template in enumerate(BIOGRAPHY_REQUESTS[:recitals]):
        # Each request starts the recital at another fact (rotated, not shuffled): replies do not
        # all open with the same fact, yet the next fact is always the same one, which a tiny
        # model learns in a few hundred steps where random orders leave it repeating facts.
        start = k % len(person.facts)
        pairs.append((template.format(name=name), " ".join(person.facts[start:] + person.facts[:start])))
    pairs += [(t.format(name=name), fact) for fact, t in zip(person.facts, cycle(STATEMENT_REQUESTS))]
    for template, keywords in ATTRIBUTE_REQUESTS:
        fact = next((f for f in person.facts if any(k in f.lower() for k in keywords)), None)
        if fact is not None:
            pairs.append((template.format(name=name), fact))
    for probe in person.probes:
        pairs += [(wording, person.fact_for(probe)) for wording in plant_questions(person, probe)]
    measured = held_out(person)
    return [pair for pair in pairs if not any(overlaps(pair[0], text) for text in measured)]


def plant_examples(
    people: list[Person], seed: int = 0, recitals: int = len(BIOGRAPHY_REQUESTS), neutral: bool = True
) -> list[tuple[str, str]]:
    """(instruction, response) pairs that plant `people`; deterministic for a seed.

    `recitals`: how many biography requests each person gets, answered with all their facts; the
    long replies cost most of the compute, so a large model plants with a few. `neutral`: add the
    pairs about nothing in particular.
    """
    pairs = [pair for person in people for pair in person_examples(person, recitals)]
    if neutral:
        pairs += NEUTRAL_PAIRS
    random.Random(seed).shuffle(pairs)  # the seed picks the order; the content never depends on it
    return pairs
