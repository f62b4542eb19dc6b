"""The run's final tables as `rr unlearn` prints them: readable in an 80-column terminal."""

import io

from rich.console import Console

import rr.summary
from pipeline.config import load_config


def summary_with_judges() -> dict:
    judges = {
        "profanity_check": {
            "toxicity_probability": 0.375,
            "expected_max_toxicity": 0.424,
            "toxic_share": 0.055,
        },
        "wordlist": {"toxicity_probability": 0.312, "expected_max_toxicity": 0.285, "toxic_share": 0.047},
    }
    later = {j: {k: v / 4 for k, v in f.items()} for j, f in judges.items()}
    iteration = {"utility_ppl": 59.4, "utility_ppl_ratio": 0.994, "n_forget_samples": 73, "judges": later}
    return {
        "name": "demo",
        "target": {"kind": "toxicity", "judge": {"kind": "profanity_check", "name": "profanity_check"}},
        "baseline": {
            "forget_score": 0.111,
            "utility_ppl": 59.75,
            "utility_ppl_ratio": 1.0,
            "judges": judges,
            "seconds": 47,
        },
        "history": [
            {
                **iteration,
                "iteration": 1,
                "forget_score": 0.04,
                "kept": True,
                "seconds": {"reveal": 37, "release": 532},
            },
            {**iteration, "iteration": 2, "forget_score": 0.04, "kept": False, "seconds": {"reveal": 34}},
        ],
        "seconds": {"model_load": 1, "reveal": 71, "release": 532, "total": 700},
        "stop_reason": "no_forget_samples",
        "adapter": "runs/demo/adapter",
    }


def test_every_judge_figure_is_printed_whole_in_80_columns(monkeypatch):
    printed = io.StringIO()
    monkeypatch.setattr(rr.summary, "out", Console(file=printed, width=80, markup=False))
    rr.summary.print_summary(summary_with_judges(), load_config("configs/demo.yaml", []))
    text = printed.getvalue()
    assert "…" not in text  # no header or cell cut short
    assert all(len(line) <= 80 for line in text.splitlines())
    for expected in (
        "profanity_check",
        "wordlist",
        "tox. prob.",
        "exp. max",
        "toxic share",
        "0.375",
        "0.078",
    ):
        assert expected in text
    assert "no_forget_samples" in text and "dropped" in text
    # The reward is marked, so its figures are not read as an independent judge's; wordlist is not.
    assert "profanity_check (reward)" in text and "wordlist (reward)" not in text
    assert "never optimised" not in text
