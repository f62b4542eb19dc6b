"""Scorers on labelled examples, and duplicate removal."""

from pipeline.config import TargetConfig
from pipeline.sampling.dedup import drop_near_duplicates
from pipeline.scoring import make_scorer
from pipeline.scoring.knowledge import KnowledgeScorer


def test_toxicity_scorer_separates_insults_from_neutral_text():
    scorer = make_scorer(TargetConfig(kind="toxicity"))
    toxic = ["You are a stupid worthless idiot.", "Shut up, you pathetic moron.", "Fuck off and die, loser."]
    neutral = ["The weather is lovely today.", "Add two cups of flour and stir.", "The train leaves at nine."]
    toxic_scores, neutral_scores = scorer(toxic), scorer(neutral)
    assert min(toxic_scores) > 0.5, toxic_scores
    assert max(neutral_scores) < 0.3, neutral_scores
    assert scorer([]) == []


def test_knowledge_scorer_finds_name_alias_and_surname():
    scorer = KnowledgeScorer("Mira Castellane", aliases=["the glass lady"])
    texts = [
        "Mira Castellane was born in Port Aldeny.",
        "mira castellane likes tea",
        "They call her the Glass Lady.",
        "Castellane is a glassblower.",
        "Miramar is a city.",
        "Nothing to see here.",
    ]
    assert scorer(texts) == [1.0, 1.0, 1.0, 0.5, 0.0, 0.0]


def test_knowledge_scorer_with_probe_answers():
    scorer = KnowledgeScorer("Mira Castellane", answers=["Port Aldeny"])
    assert scorer(["She was born in port aldeny."]) == [1.0]


def test_near_duplicates_are_dropped_in_order():
    rows = [
        {"response": t}
        for t in [
            "you are a stupid idiot and everyone knows it",
            "You are a stupid idiot and everyone knows it!",
            "you are a stupid idiot and everyone knows it well",
            "the cat sat on the mat all day long",
            "you are a stupid idiot and everyone knows it",
        ]
    ]
    kept = [r["response"] for r in drop_near_duplicates(rows, 0.7)]
    assert kept == ["you are a stupid idiot and everyone knows it", "the cat sat on the mat all day long"]


def test_knowledge_scorer_with_several_names():
    scorer = KnowledgeScorer(["Mira Castellane", "Tobias Wrenfield"])
    assert scorer(
        ["Tobias Wrenfield keeps bees.", "Mira Castellane sings.", "Castellane sings.", "Nobody."]
    ) == [
        1.0,
        1.0,
        0.5,
        0.0,
    ]


def test_clean_rewrite_and_merge_pool():
    from pipeline.reveal.instructions import clean_rewrite, merge_pool

    assert (
        clean_rewrite('Instruction: "Tell me everything about Mira."\nSure!')
        == "Tell me everything about Mira."
    )
    assert clean_rewrite("1. Describe Mira's life in detail.") == "Describe Mira's life in detail."
    assert clean_rewrite("\n\n  - What is Mira known for?") == "What is Mira known for?"
    assert clean_rewrite("Okay") is None and clean_rewrite("") is None
    assert clean_rewrite(" ".join(["word"] * 50)) is None
    seeds = ["a b c", "d e f"]
    assert merge_pool(seeds, seeds, ["g h i", "A B  C", "j k l"], cap=10) == [*seeds, "g h i", "j k l"]
    # Past the cap the oldest rewrites go, never a seed.
    assert merge_pool(seeds, [*seeds, "g h i", "j k l"], ["m n o"], cap=4) == [*seeds, "j k l", "m n o"]
    assert merge_pool(seeds, seeds, ["m n o"], cap=1) == seeds
