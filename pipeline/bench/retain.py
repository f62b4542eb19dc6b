"""What every forgetting benchmark checks the model kept: fluency on generic text and simple answers.

    utility_ppl         perplexity on held-out generic prose (`data/bench/generic_heldout.txt`)
    answered            per simple question, whether its greedy reply contains an accepted answer
    answer_rate         share of the simple questions answered
    utility_ppl_ratio   utility_ppl / the same seed's base model's (1.0 = unchanged; > 1 = less fluent)
    answer_rate_change  answer_rate - the same seed's base model's
    kept_answer_rate    of the questions the base model answers, the share still answered

The toxicity, code and entity benchmarks all report these, so they are measured one way here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pipeline.bench.heldout import Question, read_questions
from pipeline.evaluation.metrics import perplexity
from pipeline.files import read_lines
from pipeline.sampling.base import GREEDY
from pipeline.sampling.hf import HFSampler
from pipeline.scoring.knowledge import contains

# Generic text apart from `evaluate.retain_text`, which the loop's own utility floor steers on.
UTILITY_TEXT = Path("data/bench/generic_heldout.txt")
QUESTION_TOKENS = 32  # the shipped simple questions were checked with replies this long


def read_retain_sets(resolve, questions=None, columns: tuple[str, str] = ("question", "answer")) -> dict:
    """{"questions": [...], "utility_texts": [...]}: the shipped sets, or the user's questions."""
    return {
        "questions": read_questions(questions, resolve, *columns),
        "utility_texts": read_lines(resolve(UTILITY_TEXT), "utility text"),
    }


def answered(sampler: HFSampler, questions: list[Question]) -> list[bool]:
    """Whether each simple question's greedy reply contains one of its accepted answers."""
    replies = sampler.generate(
        [q.question for q in questions], replace(GREEDY, max_new_tokens=QUESTION_TOKENS), label="questions"
    )
    return [any(contains(r[0], a) for a in q.answers) for r, q in zip(replies, questions)]


def measure_retain(
    model, tokenizer, sampler: HFSampler, retain_sets: dict, batch_size: int | None = None
) -> dict:
    """utility_ppl, answered and answer_rate of one model."""
    kwargs = {"batch_size": batch_size} if batch_size else {}
    found = answered(sampler, retain_sets["questions"])
    return {
        "utility_ppl": perplexity(model, tokenizer, retain_sets["utility_texts"], **kwargs),
        "answered": found,
        "answer_rate": sum(found) / len(found),
    }


def retain_vs_base(raw: dict, base: dict) -> dict:
    """The figures that need the same seed's base model: perplexity ratio and answer changes."""
    known = [mine for mine, theirs in zip(raw["answered"], base["answered"]) if theirs]
    return {
        "utility_ppl_ratio": raw["utility_ppl"] / base["utility_ppl"],
        "answer_rate_change": raw["answer_rate"] - base["answer_rate"],
        "kept_answer_rate": sum(known) / len(known) if known else None,
    }
