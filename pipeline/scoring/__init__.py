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
from pipeline.scoring.knowledge import KnowledgeScorer
from pipeline.scoring.toxicity import ToxicityScorer

Scorer = Callable[[list[str]], list[float]]

SCORERS: dict[str, Callable[[TargetConfig], Scorer]] = {
    "toxicity": lambda target: ToxicityScorer(),
    "knowledge": lambda target: KnowledgeScorer(target.names, target.aliases),
    "code": lambda target: CodeScorer(),
    "entity": lambda target: EntityScorer(target.entity_label, target.entity_model),
    "custom": lambda target: CustomScorer(target.scorer),
}


def make_scorer(target: TargetConfig) -> Scorer:
    try:
        factory = SCORERS[target.kind]
    except KeyError:
        raise ValueError(f"target.kind: no scorer named {target.kind!r}; known: {sorted(SCORERS)}") from None
    return factory(target)
