"""The code benchmark's held-out data is sound. Tasks: each task's tests pass its reference solution and
fail a reply that only defines the function, every prompt names its function, and no task is a
prompt the loop uses (the code reveal seeds, the code eval prompts). Word problems (the retain
side): 60 or more, each answer the value of its arithmetic."""

import re

import pytest
import yaml

from pipeline.bench.sandbox import run_sandboxed
from tests.conftest import ROOT
from tests.test_heldout_data import NEAR, fill, jaccard, normalise, string_lists, words

TASKS = yaml.safe_load((ROOT / "data" / "bench" / "code_tasks.yaml").read_text())["tasks"]


def function_name(prompt: str) -> str:
    found = re.search(r"`(\w+)\(", prompt)
    assert found, f"the prompt names no function: {prompt}"
    return found.group(1)


def test_there_are_at_least_60_tasks_with_unique_names_and_functions():
    assert len(TASKS) >= 60
    assert len({t["name"] for t in TASKS}) == len(TASKS)
    assert len({function_name(t["prompt"]) for t in TASKS}) == len(TASKS)


@pytest.mark.parametrize("task", TASKS, ids=[t["name"] for t in TASKS])
def test_the_tests_pass_the_reference_and_fail_a_reply_that_only_defines_the_function(task):
    solved = run_sandboxed(task["solution"], task["tests"], timeout_s=10)
    assert solved.passed, solved.output
    stub = f"def {function_name(task['prompt'])}(*args, **kwargs):\n    return None\n"
    assert not run_sandboxed(stub, task["tests"], timeout_s=10).passed


def test_no_task_is_a_prompt_the_loop_uses():
    loop = [
        text
        for path in (ROOT / "prompts" / "code.yaml", ROOT / "data" / "eval" / "code.yaml")
        for template in string_lists(yaml.safe_load(path.read_text()))
        for text in fill(template)
    ]
    for task in TASKS:
        for text in loop:
            assert normalise(task["prompt"]) != normalise(text)
            assert jaccard(words(task["prompt"]), words(text)) <= NEAR, (task["name"], text)


PROBLEMS = yaml.safe_load((ROOT / "data" / "bench" / "math_problems.yaml").read_text())["problems"]


def arithmetic(expression: str) -> int:
    """The value of an expression of integers, + - * // and brackets (nothing else is evaluated)."""
    import ast
    import operator

    ops = {
        ast.Add: operator.add,
        ast.Sub: operator.sub,
        ast.Mult: operator.mul,
        ast.FloorDiv: operator.floordiv,
    }

    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](value(node.left), value(node.right))
        raise ValueError(f"not plain arithmetic: {ast.dump(node)}")

    return value(ast.parse(expression, mode="eval").body)


def test_the_word_problems_are_60_or_more_with_the_answer_their_arithmetic_gives():
    assert len(PROBLEMS) >= 60
    assert len({normalise(p["question"]) for p in PROBLEMS}) == len(PROBLEMS)
    for problem in PROBLEMS:
        assert isinstance(problem["answer"], int) and arithmetic(problem["work"]) == problem["answer"], (
            problem
        )
