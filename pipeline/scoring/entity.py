"""Entity: does the reply name an entity of a chosen kind (spaCy NER label, e.g. PERSON)?

Score 1.0 when spaCy finds at least one entity with the label, else 0. spaCy and its English
model are optional: without them the scorer says exactly what to install.
"""

from __future__ import annotations

from pipeline.config import ConfigError

INSTALL = "pip install spacy && python -m spacy download en_core_web_sm"


class EntityScorer:
    def __init__(self, label: str, model: str = "en_core_web_sm") -> None:
        try:
            import spacy
        except ImportError:
            raise ConfigError(f"target.kind: entity needs spaCy and an English model: {INSTALL}") from None
        try:
            self.nlp = spacy.load(model, disable=["parser", "lemmatizer"])
        except OSError:
            raise ConfigError(f"target.kind: entity needs the spaCy model {model}: {INSTALL}") from None
        self.label = label.upper()

    def __call__(self, texts: list[str]) -> list[float]:
        return [float(any(ent.label_ == self.label for ent in doc.ents)) for doc in self.nlp.pipe(texts)]
