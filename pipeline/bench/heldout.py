"""The toxicity benchmark's held-out sets: provocative prompts in several styles, and simple questions.

Shipped in `data/bench/` (a test keeps them apart from every prompt the loop uses), or the user's
own through `datasets` (`--prompts SRC`, `--questions SRC`: anything `pipeline.datasource` reads).

Styles of prompt, and how the model sees each:
    request       a user message asking for something rude ("Roast a man who ...")
    role_play     a user message that casts the model as someone rude
    continuation  a sentence start, as RealToxicityPrompts gives it: the reply is pre-filled with it
                  and only what the model adds is scored
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.config import ConfigError, read_yaml
from pipeline.datasource import read_rows, read_texts

HELDOUT_PROMPTS = Path("data/bench/toxicity_heldout.yaml")
SIMPLE_QUESTIONS = Path("data/bench/simple_questions.yaml")
STYLES = ("request", "role_play", "continuation")
CONTINUE_REQUEST = "Continue this text."  # the user turn before a pre-filled sentence start


@dataclass(frozen=True)
class Prompt:
    text: str
    style: str

    @property
    def instruction(self) -> str:
        return CONTINUE_REQUEST if self.style == "continuation" else self.text

    @property
    def prefill(self) -> str:
        return self.text if self.style == "continuation" else ""


@dataclass(frozen=True)
class Question:
    question: str
    answers: tuple[str, ...]  # any of them in the reply counts as answered


def read_styled_yaml(path: Path, what: str) -> list[Prompt]:
    """`styles: {request: [...], role_play: [...], continuation: [...]}` as prompts."""
    data = read_yaml(path, what)
    styles = data.get("styles") if isinstance(data, dict) else None
    if not isinstance(styles, dict) or not styles:
        raise ConfigError(f"{what}: {path} has no `styles:` mapping of style -> list of prompts")
    prompts = []
    for style, texts in styles.items():
        if style not in STYLES:
            raise ConfigError(f"{what}: {path}: unknown style {style!r}; styles are {', '.join(STYLES)}")
        if not isinstance(texts, list) or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ConfigError(f"{what}: {path}: style {style!r} must be a list of non-empty strings")
        prompts += [Prompt(t.strip(), style) for t in texts]
    return prompts


def read_prompts(
    source: str | Path | None, resolve, column: str = "text", style: str = "request"
) -> list[Prompt]:
    """The held-out prompts: the shipped styled file, or `source` (column `column`, all in `style`)."""
    if style not in STYLES:
        raise ConfigError(f"--prompt-style: {style!r} is not one of {', '.join(STYLES)}")
    if source is None:
        return read_styled_yaml(resolve(HELDOUT_PROMPTS), "--prompts")
    path = Path(source)
    if path.suffix in (".yaml", ".yml") and path.is_file() and _has_styles(path):
        return read_styled_yaml(path, "--prompts")
    # Every value a text (a number or null is an error, not the prompt "5" or "None"), blank ones skipped.
    return [Prompt(text, style) for text in read_texts(source, column, "--prompts")]


def _has_styles(path: Path) -> bool:
    data = read_yaml(path, "--prompts")
    return isinstance(data, dict) and "styles" in data


def read_questions(
    source: str | Path | None, resolve, question: str = "question", answer: str = "answer"
) -> list[Question]:
    """Simple questions with their answers: the shipped file, or `source` with those two columns."""
    if source is None:
        path = resolve(SIMPLE_QUESTIONS)
        data = read_yaml(path, "--questions")
        rows = data.get("questions") if isinstance(data, dict) else None
        if not isinstance(rows, list) or not rows:
            raise ConfigError(f"--questions: {path} has no `questions:` list")
        return [Question(r["question"], (str(r["answer"]), *map(str, r.get("also", [])))) for r in rows]
    rows = read_rows(source, {"question": question, "answer": answer}, "--questions")
    questions = []
    for number, row in enumerate(rows, start=1):
        answers = row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
        plain = all(
            isinstance(a, str | int | float) and not isinstance(a, bool) and str(a).strip() for a in answers
        )
        if not isinstance(row["question"], str) or not row["question"].strip() or not answers or not plain:
            raise ConfigError(
                f"--questions: row {number} of {source}: needs a question (a text) and an answer "
                f"(a text or a number, or a list of them); got {row['question']!r}, {row['answer']!r}"
            )
        questions.append(Question(row["question"].strip(), tuple(str(a).strip() for a in answers)))
    return questions
