"""Silver labels for the entity benchmark's held-out sentences, from the pinned spaCy pipeline.

    python data/bench/make_entity_labels.py           # writes data/bench/entity_labels.json
    python data/bench/make_entity_labels.py --check   # exits 1 if the file differs from what it writes

Each sentence of `entity_sentences.txt` (written for this repository) is tagged by spaCy's
en_core_web_sm 3.8.0 (`make entity`), keeping the types the benchmark scores (`TYPES`). The labels
are silver: every sentence's labels were read by hand and the pipeline's mistakes corrected in
`entity_corrections.yaml` (30 of 112 sentences: mostly a person tagged as an organisation or a
place, or a name missed), which this script applies; `source` says which each sentence's labels are.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TYPES = ("PERSON", "ORG", "GPE", "LOC", "DATE", "NORP", "FAC")


def labels() -> list[dict]:
    sys.path.insert(0, str(HERE.parents[1]))
    import spacy

    from pipeline.scoring.entity import DEFAULT_NAMES

    nlp = next(_try_load(spacy, name) for name in DEFAULT_NAMES if _try_load(spacy, name) is not None)
    sentences = [
        line.strip() for line in (HERE / "entity_sentences.txt").read_text().splitlines() if line.strip()
    ]
    import yaml

    corrections = yaml.safe_load((HERE / "entity_corrections.yaml").read_text())["corrections"]
    corrected = {c["text"]: [{"text": t, "label": label} for t, label in c["entities"]] for c in corrections}
    unknown = set(corrected) - set(sentences)
    if unknown:
        raise SystemExit(
            f"entity_corrections.yaml: not a sentence of entity_sentences.txt: {sorted(unknown)}"
        )
    rows = []
    for doc in nlp.pipe(sentences):
        if doc.text in corrected:
            rows.append({"text": doc.text, "entities": corrected[doc.text], "source": "corrected by hand"})
            continue
        entities = [{"text": ent.text, "label": ent.label_} for ent in doc.ents if ent.label_ in TYPES]
        rows.append({"text": doc.text, "entities": entities, "source": "spaCy"})
    return rows


def _try_load(spacy, name):
    try:
        return spacy.load(name)
    except OSError:
        return None


if __name__ == "__main__":
    text = (
        json.dumps(
            {"pipeline": "en_core_web_sm 3.8.0", "types": list(TYPES), "sentences": labels()}, indent=1
        )
        + "\n"
    )
    path = HERE / "entity_labels.json"
    if "--check" in sys.argv:
        sys.exit(0 if path.read_text() == text else 1)
    path.write_text(text)
    print(f"wrote {path}")
