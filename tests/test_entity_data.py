"""The entity benchmark's held-out sentences and their labels: enough of them, every type the
benchmark scores present, the labels what the pinned pipeline and the hand corrections give, and
no sentence a prompt the loop uses."""

import json
import subprocess
import sys

import yaml

from tests.conftest import ROOT
from tests.test_heldout_data import NEAR, fill, jaccard, string_lists, words

LABELS = json.loads((ROOT / "data" / "bench" / "entity_labels.json").read_text())


def test_at_least_100_sentences_with_people_organisations_places_and_dates():
    sentences = LABELS["sentences"]
    assert len(sentences) >= 100 and len({s["text"] for s in sentences}) == len(sentences)
    for label, least in (("PERSON", 50), ("ORG", 40), ("GPE", 60), ("DATE", 50)):
        assert sum(any(e["label"] == label for e in s["entities"]) for s in sentences) >= least, label
    for sentence in sentences:
        assert all(e["text"] in sentence["text"] for e in sentence["entities"]), sentence


def test_the_labels_are_what_the_pinned_pipeline_and_the_corrections_give():
    script = ROOT / "data" / "bench" / "make_entity_labels.py"
    done = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, "entity_labels.json is stale: run python data/bench/make_entity_labels.py"


def test_no_sentence_is_a_prompt_the_loop_uses():
    loop = [
        text
        for path in (ROOT / "prompts" / "entity.yaml", ROOT / "data" / "eval" / "entity.yaml")
        for template in string_lists(yaml.safe_load(path.read_text()))
        for text in fill(template)
    ]
    for sentence in LABELS["sentences"]:
        assert all(jaccard(words(sentence["text"]), words(text)) <= NEAR for text in loop)
