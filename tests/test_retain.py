"""The retain figures every forgetting benchmark shares (`pipeline.bench.retain`), by hand."""

import pytest

from pipeline.bench.retain import read_retain_sets, retain_vs_base
from pipeline.config import ConfigError
from tests.conftest import ROOT


def test_retain_vs_base_by_hand():
    base = {"utility_ppl": 20.0, "answer_rate": 0.75, "answered": [True, True, True, False]}
    raw = {"utility_ppl": 21.0, "answer_rate": 0.5, "answered": [True, False, False, True]}
    found = retain_vs_base(raw, base)
    assert found["utility_ppl_ratio"] == pytest.approx(1.05)
    assert found["answer_rate_change"] == pytest.approx(-0.25)
    # Of the three the base answers, one is still answered; the fourth (newly answered) does not count.
    assert found["kept_answer_rate"] == pytest.approx(1 / 3)


def test_kept_answer_rate_is_none_when_the_base_answers_nothing():
    base = {"utility_ppl": 1.0, "answer_rate": 0.0, "answered": [False, False]}
    assert retain_vs_base(dict(base), base)["kept_answer_rate"] is None


def test_shipped_retain_sets_and_a_users_questions(tmp_path):
    shipped = read_retain_sets(lambda p: ROOT / p)
    assert len(shipped["questions"]) >= 50 and len(shipped["utility_texts"]) >= 10
    mine = tmp_path / "q.jsonl"
    mine.write_text('{"q": "Capital of France?", "a": "Paris"}\n')
    found = read_retain_sets(lambda p: ROOT / p, str(mine), ("q", "a"))
    assert [(q.question, q.answers) for q in found["questions"]] == [("Capital of France?", ("Paris",))]
    with pytest.raises(ConfigError, match="--questions"):
        read_retain_sets(lambda p: ROOT / p, str(mine), ("question", "answer"))
