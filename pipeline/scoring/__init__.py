"""Scorers: how much a text is about the target, in [0, 1]. Chosen by `target.kind`.

A scorer is any callable `list[str] -> list[float]`. Reveal uses it as the relevance reward,
sampling as the keep/drop filter, evaluation as the forget score on held-out prompts.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.config import TargetConfig
from pipeline.scoring.code import CodeScorer
from pipeline.scoring.custom import CustomScorer
from pipeline.scoring.entity import EntityScorer
from pipeline.scoring.judges import make_judge
from pipeline.scoring.knowledge import DescriptionSimilarity, Embed, KnowledgeScorer

Scorer = Callable[[list[str]], list[float]]


def knowledge_scorer(target: TargetConfig, embed: Embed | None, neutral: list[str]) -> Scorer:
    """Names, aliases and keywords; with a model to embed texts, closeness to the description too."""
    similarity = None
    if embed is not None and neutral and target.similarity_weight > 0:
        similarity = DescriptionSimilarity(embed, target.description, neutral)
    return KnowledgeScorer(
        target.names,
        target.aliases,
        keywords=target.keywords,
        similarity=similarity,
        similarity_weight=target.similarity_weight,
    )


SCORERS: dict[str, Callable[[TargetConfig, Embed | None, list[str]], Scorer]] = {
    "toxicity": lambda target, embed, neutral: make_judge(target.judge, "target.judge"),
    "knowledge": knowledge_scorer,
    "code": lambda target, embed, neutral: CodeScorer(),
    "entity": lambda target, embed, neutral: EntityScorer(target.entity_label, target.entity_model),
    "custom": lambda target, embed, neutral: CustomScorer(target.scorer),
}


def make_scorer(target: TargetConfig, embed: Embed | None = None, neutral: list[str] = ()) -> Scorer:
    """The scorer for `target.kind`. `embed` (texts -> unit rows; the run's base model) and
    `neutral` texts (the zero of the similarity scale) serve scorers that compare meanings."""
    try:
        factory = SCORERS[target.kind]
    except KeyError:
        raise ValueError(f"target.kind: no scorer named {target.kind!r}; known: {sorted(SCORERS)}") from None
    return factory(target, embed, list(neutral))
