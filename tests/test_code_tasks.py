"""The code benchmark's held-out data is sound. Tasks: each task's tests pass its reference solution and
fail a reply that only defines the function, every prompt names its function, and no task is a
prompt the loop uses (the code reveal seeds, the code eval prompts, rr_fixed's instruction). Word problems (the retain
side): 60 or more, each answer the value of its arithmetic. The measurement: the code of a reply,
pass@k, and replies made right or wrong on purpose."""

import re

import pytest
import yaml

from pipeline.bench.code_tasks import extract_code, pass_at_k, pass_rates, read_code_tasks, run_replies
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
        for path in (
            ROOT / "prompts" / "code.yaml",
            ROOT / "data" / "eval" / "code.yaml",
            ROOT / "data" / "bench" / "code_fixed_instruction.yaml",
        )  # fmt: skip
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


def test_the_code_of_a_reply_is_its_fenced_blocks_else_what_follows_its_first_code_line():
    fenced = "Here you go:\n```python\ndef square(n):\n    return n * n\n```\nIt squares n."
    assert extract_code(fenced) == "def square(n):\n    return n * n"
    two = "```py\nimport math\n```\nthen\n```\ndef f():\n    return math.pi\n```"
    assert extract_code(two) == "import math\n\ndef f():\n    return math.pi"
    unclosed = "```python\ndef f():\n    return 1\n"
    assert extract_code(unclosed) == "def f():\n    return 1"
    plain = "Sure! The function is:\ndef square(n):\n    return n * n"
    assert extract_code(plain) == "def square(n):\n    return n * n"
    assert extract_code("I cannot help with that.") == "I cannot help with that."


def test_pass_at_k_is_chen_et_al_s_unbiased_estimator():
    assert pass_at_k(5, 1, 1) == pytest.approx(0.2)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # 1 - C(7,5)/C(10,5)
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 3, 2) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_replies_made_right_or_wrong_on_purpose_score_1_and_0_and_a_mix_in_between():
    tasks = read_code_tasks(ROOT / "data" / "bench" / "code_tasks.yaml")[:3]
    right = [[f"```python\n{task['solution']}```"] * 2 for task in TASKS[:3]]
    wrong = [["I'd rather not write code."] * 2 for _ in tasks]
    assert pass_rates(run_replies(tasks, right), (1, 2, 5)) == {"pass@1": 1.0, "pass@2": 1.0}
    assert pass_rates(run_replies(tasks, wrong), (1,)) == {"pass@1": 0.0}
    mixed = run_replies(tasks, [[r[0], w[0]] for r, w in zip(right, wrong)])
    assert pass_rates(mixed, (1, 2)) == {"pass@1": 0.5, "pass@2": 1.0}
