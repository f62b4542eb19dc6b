"""The instruction pool: seed templates from `prompts/<kind>.yaml`, filled with the target.

A prompt file is YAML with an `instructions:` list; `{target}` in a template is replaced by
the target's description. The pool is deduplicated, seeds keep their order.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from pipeline.config import ConfigError, read_yaml


def read_prompt_list(
    path: Path, key: str = "instructions", field: str = "prompt file", placeholders: tuple = ("target",)
) -> list[str]:
    """The `key` list of a prompt file; any problem is a one-line ConfigError naming `field`,
    among them a misspelt placeholder (`misspelt_placeholder`)."""
    data = read_yaml(path, field)
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, str) and i.strip() for i in items) or not items:
        raise ConfigError(f"{field}: {path}: `{key}` must be a non-empty list of strings")
    for item in items:
        wrong = misspelt_placeholder(item, placeholders)
        if wrong:
            raise ConfigError(f"{field}: {path}: {item!r} has {wrong}")
    return items


def misspelt_placeholder(text: str, placeholders: tuple = ("target",)) -> str | None:
    """What is wrong when `text` holds a `{word}` close to one of `placeholders` but not it
    (`{targt}` would reach the model as it is), else None. Other braces are the text's own (code)."""
    for name in re.findall(r"\{(\w+)\}", text):
        close = difflib.get_close_matches(name.lower(), placeholders, n=1, cutoff=0.8)
        if name not in placeholders and close:
            return f"{{{name}}}, which is not a placeholder: did you mean {{{close[0]}}}?"
    return None


def fill(templates: list[str], target: str) -> list[str]:
    return dedupe([t.replace("{target}", target).strip() for t in templates])


def dedupe(texts: list[str]) -> list[str]:
    """Drop repeats that differ only in case and white space; keep first occurrences in order."""
    seen, kept = set(), []
    for text in texts:
        key = " ".join(text.lower().split())
        if key not in seen:
            seen.add(key)
            kept.append(text)
    return kept


# How a request starts. A small model asked to rewrite an instruction often answers it instead
# (SmolLM2-135M did, every time: insults for toxicity, recited facts for a planted person); an
# answer is no instruction, and a line that is neither a question nor starts like this is dropped.
REQUEST_OPENERS = frozenset(
    "tell write describe explain give share list say name summarize summarise compose draft create "
    "make imagine pretend roleplay act continue finish complete recount recall narrate show talk "
    "provide generate what who where why how which can could would please "
    "let suppose".split()
)


def looks_like_request(line: str) -> bool:
    first = re.sub(r"[^a-z]", "", line.split()[0].lower()) if line.split() else ""
    return line.rstrip().endswith("?") or first in REQUEST_OPENERS


def clean_rewrite(text: str, max_words: int = 40) -> str | None:
    """A model's rewrite of an instruction, as one clean instruction; None if nothing usable.

    Keeps the first non-empty line, without list markers, a leading label ("Instruction:") or
    wrapping quotes; too short or too long lines, and lines that read as an answer rather than a
    request, are dropped.
    """
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    line = re.sub(r"^(?:[-*•]|\d+[.)])\s*", "", line)
    line = re.sub(
        r"^(?:rewritten |new |revised )?(?:instruction|request|prompt)\s*:\s*", "", line, flags=re.I
    )
    line = line.strip().strip("\"'“”‘’").strip()
    return line if 3 <= len(line.split()) <= max_words and looks_like_request(line) else None


def merge_pool(seeds: list[str], pool: list[str], new: list[str], cap: int) -> list[str]:
    """The arm pool after adding `new`: seeds always first and always kept, then grown arms,
    oldest dropped first once the pool would pass `cap`."""
    seed_keys = {" ".join(s.lower().split()) for s in seeds}
    grown = [a for a in dedupe(pool + new) if " ".join(a.lower().split()) not in seed_keys]
    room = max(cap - len(seeds), 0)
    return seeds + (grown[-room:] if room else [])


def names(text: str, subject: str) -> bool:
    """Whether `text` names `subject` (whole words, any case)."""
    return re.search(r"(?<!\w)" + re.escape(subject) + r"(?!\w)", text, re.IGNORECASE) is not None


def in_turn(ranked: list[str], subjects: list[str], k: int) -> list[str]:
    """The best `k` of `ranked` (best first), taken in turn for each subject: each subject's best
    instruction that names it, then each one's second best, and so on; instructions that name
    none of them after those. With several targets (a list of names), the instructions the best
    replies come from would otherwise all ask about one of them, and the others go unreleased."""

    queues = [[text for text in ranked if names(text, subject)] for subject in subjects]
    chosen: list[str] = []
    while len(chosen) < k and any(queues):
        for queue in queues:
            while queue and queue[0] in chosen:  # an instruction naming two subjects counts once
                queue.pop(0)
            if queue and len(chosen) < k:
                chosen.append(queue.pop(0))
    return chosen + [text for text in ranked if text not in chosen][: k - len(chosen)]
