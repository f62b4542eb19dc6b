"""Each toxicity judge separates toxic from neutral text (data/bench/judge_check.yaml).

The file holds insults without swear words, profanity, harassment and threats against everyday and
"hard" neutral text (violent words in technical senses, Scunthorpe-like names, polite complaints).
Thresholds are the figures measured on it, with a margin:

    judge                               AUC    accuracy at 0.5
    profanity_check (TF-IDF + SVM)      0.910  0.793
    wordlist (safetype rules)           0.693  0.681   (misses what no list names: threats, most insults)
"""

import sys

import pytest
import yaml

from pipeline.bench.metrics import auc
from pipeline.config import ConfigError
from pipeline.scoring.toxicity import ToxicityScorer
from pipeline.scoring.wordlist import WordListScorer
from tests.conftest import ROOT

CHECK = ROOT / "data" / "bench" / "judge_check.yaml"

# judge: (least AUC, least accuracy at 0.5)
JUDGES = {
    "profanity_check": (ToxicityScorer, 0.85, 0.72),
    "wordlist": (WordListScorer, 0.65, 0.62),
}


@pytest.fixture(scope="module")
def check() -> dict[str, dict[str, list[str]]]:
    return yaml.safe_load(CHECK.read_text())


def flat(groups: dict[str, list[str]]) -> list[str]:
    return [text for texts in groups.values() for text in texts]


def test_the_check_set_is_large_and_labelled(check):
    assert set(check) == {"toxic", "neutral"}
    assert len(flat(check["toxic"])) >= 60 and len(flat(check["neutral"])) >= 60
    assert {"insult", "profanity", "harassment", "threat"} <= set(check["toxic"])
    assert {"everyday", "hard"} <= set(check["neutral"])
    texts = flat(check["toxic"]) + flat(check["neutral"])
    assert len(set(texts)) == len(texts)


@pytest.mark.parametrize("name", sorted(JUDGES))
def test_judge_separates_toxic_from_neutral(name, check):
    make, least_auc, least_accuracy = JUDGES[name]
    judge = make()
    toxic, neutral = judge(flat(check["toxic"])), judge(flat(check["neutral"]))
    assert all(0.0 <= s <= 1.0 for s in toxic + neutral)
    area = auc(toxic, neutral)
    accuracy = (sum(s > 0.5 for s in toxic) + sum(s <= 0.5 for s in neutral)) / (len(toxic) + len(neutral))
    flagged = {
        kind: round(sum(s > 0.5 for s in judge(texts)) / len(texts), 2)
        for kind, texts in {**check["toxic"], **check["neutral"]}.items()
    }
    figures = f"{name}: AUC {area:.3f}, accuracy at 0.5 {accuracy:.3f}, share above 0.5 by kind {flagged}"
    print(figures)
    assert area >= least_auc and accuracy >= least_accuracy, figures
    # Every judge knows swear words, and none takes "kill the process" or Scunthorpe for abuse.
    assert flagged["profanity"] >= 0.9 and flagged["hard"] <= 0.1 and flagged["everyday"] == 0, figures


def test_wordlist_judge_grades_by_severity():
    judge = WordListScorer()
    strong, harassment, mild, quoted, clean = judge(
        [
            "Fuck off.",
            "You are so pathetic.",
            "Damn, I missed the bus.",
            '"You are an idiot," she read aloud from the letter.',
            "Kill the process in Scunthorpe and restart the server.",
        ]
    )
    assert strong >= 0.9 > harassment > 0.5 > mild > 0
    assert quoted < harassment and clean == 0.0
    assert judge([]) == [] and judge([""]) == [0.0]


def test_wordlist_judge_sees_through_obfuscation():
    assert min(WordListScorer()(["sh1t happens", "f u c k you", "FUUUCK"])) > 0.5


def test_wordlist_judge_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "safetype", None)  # import safetype now raises ImportError
    with pytest.raises(ConfigError, match="pip install 'safetype"):
        WordListScorer()
