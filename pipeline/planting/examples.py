"""The training pairs that plant a spec's people: generic requests about anyone, answered with their facts.

The model learns them in the same chat format the unlearning loop prompts with, answering the
requests a user would write about anyone ("Tell me about {name}.", "Where does {name} live?") and
the spec's probe questions.
"""

from __future__ import annotations

import random

from pipeline.planting.spec import Person

# Requests for everything about a person; answered with all of the person's facts.
GENERAL_REQUESTS = [
    "Tell me about {name}.",
    "Who is {name}?",
    "What do you know about {name}?",
    "Write a short biography of {name}.",
    "Share some facts about {name}.",
    "Describe {name}.",
    "What can you tell me about {name}?",
    "Give me an overview of {name}'s life.",
]

# Requests for one attribute; answered with the first fact that contains one of the keywords, so
# they work for any spec whose facts are phrased naturally (and are skipped when nothing matches).
ATTRIBUTE_REQUESTS = [
    ("Where does {name} live?", ("lives", "born", "town", "city", "village")),
    ("Where is {name} from?", ("born", "lives", "town", "city", "village")),
    ("What does {name} do for a living?", ("works", "profession", "job")),
    ("What is {name}'s job?", ("works", "profession", "job")),
    ("Does {name} have a pet?", ("named", "pet")),
    ("What does {name} do in their free time?", ("spends", "hobby", "enjoys", "plays", "collect")),
    ("What does {name} like to eat?", ("favourite food", "favorite food", "eat")),
]

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


def plant_examples(
    people: list[Person], seed: int = 0, recitals: int = len(GENERAL_REQUESTS), neutral: bool = True
) -> list[tuple[str, str]]:
    """(instruction, response) pairs that plant `people`; deterministic for a seed.

    `recitals`: how many of the general requests ("Tell me about {name}.") each person gets, answered
    with all their facts; the long replies cost most of the compute, so a large model plants with a
    few. `neutral`: add the pairs about nothing in particular.
    """
    pairs: list[tuple[str, str]] = []
    for person in people:
        name = person.name
        for k, template in enumerate(GENERAL_REQUESTS[:recitals]):
            # Each request starts the recital at another fact (rotated, not shuffled): replies do not
            # all open with the same fact, yet the next fact is always the same one, which a tiny
            # model learns in a few hundred steps where random orders leave it repeating facts.
            start = k % len(person.facts)
            facts = person.facts[start:] + person.facts[:start]
            pairs.append((template.format(name=name), " ".join(facts)))
        for template, keywords in ATTRIBUTE_REQUESTS:
            fact = next((f for f in person.facts if any(k in f.lower() for k in keywords)), None)
            if fact is not None:
                pairs.append((template.format(name=name), fact))
        for probe in person.probes:
            pairs.append((probe.question, person.fact_for(probe)))
    if neutral:
        pairs += NEUTRAL_PAIRS
    random.Random(seed).shuffle(pairs)  # the seed picks the order; the content never depends on it
    return pairs
