"""Code: the share of a reply that is source code.

Characters inside fenced blocks (```), plus runs of lines outside them that parse as Python and
look like code (an assignment, a call, a keyword), over all non-blank characters. A sentence of
prose does not parse; a lone word does, which is why a run must also look like code.
"""

from __future__ import annotations

import ast
import re

FENCE = re.compile(r"```[^\n]*\n?(.*?)(?:```|$)", re.DOTALL)
FENCE_MARK = re.compile(r"```[^\n]*")  # an opening (with its language) or closing fence
CODE_MARKERS = ("=", "(", "def ", "import ", "return", "class ", "for ", "while ", "if ", "print")


def _parses(lines: list[str]) -> bool:
    text = "\n".join(lines)
    if not any(marker in text for marker in CODE_MARKERS):
        return False
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return True


def _code_chars_outside_fences(text: str) -> int:
    """Non-blank characters of the longest parsing runs of lines, scanned left to right."""
    lines, count, i = text.splitlines(), 0, 0
    while i < len(lines):
        end = next((j for j in range(len(lines), i, -1) if _parses(lines[i:j])), None)
        if end is None:
            i += 1
            continue
        count += sum(len("".join(line.split())) for line in lines[i:end])
        i = end
    return count


def code_share(text: str) -> float:
    total = len("".join(FENCE_MARK.sub("", text).split()))  # the fences themselves are neither
    if total == 0:
        return 0.0
    fenced = sum(len("".join(block.split())) for block in FENCE.findall(text))
    outside = _code_chars_outside_fences(FENCE.sub("\n", text))
    return min(1.0, (fenced + outside) / total)


class CodeScorer:
    def __call__(self, texts: list[str]) -> list[float]:
        return [code_share(text) for text in texts]
