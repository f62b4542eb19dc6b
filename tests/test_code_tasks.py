"""The code benchmark's held-out tasks are sound: each task's tests pass its reference solution and
fail a reply that only defines the function, every prompt names its function, and no task is a
prompt the loop uses (the code reveal seeds, the code eval prompts)."""

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
