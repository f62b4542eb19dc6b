"""The code benchmark's measurement: held-out programming tasks, the code in a reply, pass@k.

A task (`data/bench/code_tasks.yaml`) is a prompt that names one function, and unit tests (asserts).
A reply's code is what its fenced blocks hold (```python ... ```), or, without a fence, the reply
from its first `def`/`import`/`class` line; it runs with the task's tests in the sandbox
(`pipeline.bench.sandbox`), never in this process. With n replies to a task of which c pass,

    pass@k = 1 − C(n−c, k) / C(n, k)

the unbiased estimator of Chen et al., "Evaluating Large Language Models Trained on Code", 2021,
arXiv 2107.03374 (eq. 1), averaged over the tasks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from math import comb
from pathlib import Path

from pipeline.bench.sandbox import run_sandboxed
from pipeline.config import ConfigError, read_yaml

CODE_TASKS = Path("data/bench/code_tasks.yaml")
_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)
_CODE_START = re.compile(r"^(?:def |class |import |from \w[\w.]* import )", re.M)


@dataclass(frozen=True)
class CodeTask:
    name: str
    prompt: str
    tests: str


def read_code_tasks(path: Path) -> list[CodeTask]:
    """`tasks: [{name, prompt, tests}, ...]` (a `solution` there is only for checking the tests)."""
    data = read_yaml(path, "code tasks")
    tasks = data.get("tasks") if isinstance(data, dict) else None
    if not isinstance(tasks, list) or not tasks:
        raise ConfigError(f"code tasks: {path} has no `tasks:` list")
    found = []
    for i, task in enumerate(tasks):
        if not isinstance(task, dict) or not all(isinstance(task.get(k), str) and task[k].strip()
                                                 for k in ("name", "prompt", "tests")):  # fmt: skip
            raise ConfigError(
                f"code tasks: {path}: task {i + 1} needs non-empty `name`, `prompt` and `tests`"
            )
        found.append(CodeTask(task["name"], task["prompt"].strip(), task["tests"]))
    return found


def extract_code(reply: str) -> str:
    """The code of a reply: its fenced blocks joined, else the reply from its first line of code
    on, else the reply as it is (which then most likely fails its tests)."""
    blocks = [block.strip("\n") for block in _FENCE.findall(reply)]
    if blocks:
        return "\n\n".join(blocks)
    start = _CODE_START.search(reply)
    return reply[start.start() :] if start else reply


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al.'s unbiased pass@k for one task: n replies, c of them passing (k ≤ n)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 if n - c < k else 1.0 - comb(n - c, k) / comb(n, k)


def run_replies(tasks: list[CodeTask], replies: list[list[str]], timeout_s: float = 10.0) -> list[list[bool]]:
    """Whether each reply to each task passes the task's tests (each in a fresh sandbox)."""
    if len(tasks) != len(replies):
        raise ValueError(f"{len(replies)} groups of replies for {len(tasks)} tasks")
    return [[run_sandboxed(extract_code(r), t.tests, timeout_s).passed for r in group] for t, group in
            zip(tasks, replies)]  # fmt: skip


def pass_rates(passed: list[list[bool]], ks: tuple[int, ...]) -> dict[str, float]:
    """`pass@k` for each k (those no larger than the replies per task), averaged over the tasks."""
    n = min(len(group) for group in passed)
    return {
        f"pass@{k}": sum(pass_at_k(len(g), sum(g), k) for g in passed) / len(passed) for k in ks if k <= n
    }
