"""Bad input, as a hostile but fair user gives it: exit 2, one line naming the cause, no traceback,
and nothing written (no run directory, no lock file, no flow run, whose log lines would be more).

Every case fails in the input checks, before a model is loaded: a few seconds each.
"""

import json
import subprocess
import sys
import typing

import pytest

from pipeline.config import Section
from tests.conftest import ROOT, run_rr

TINY = "configs/tiny.yaml"  # a planted knowledge target: `rr unlearn` would build a model in-process
BINARY = b"\xff\xfe\x00\x81 not text \xc3\x28"  # bytes no UTF-8 decoder accepts


def assert_refused(tmp_path, config, sets=(), expected="", env=None):
    """`rr unlearn config --out <tmp>/runs --set ...` exits 2 with one line holding `expected`."""
    out = tmp_path / "runs"
    args = [arg for assignment in sets for arg in ("--set", assignment)]
    result = run_rr("unlearn", config, "--out", out, "--no-progress", *args, env=env, timeout=180)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not out.exists() or not any(out.iterdir())  # no run directory, no .<name>.lock
    return lines[0]


def test_the_input_checks_do_not_load_torch():
    """A refused config is answered in about a second: nothing the CLI and the checks import loads
    torch (some seconds on a busy machine; most of the refusals above took 3-5 s before)."""
    code = "import sys, rr.cli, pipeline.run.preflight; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft')))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


# --- item 4: numbers that are not finite, not positive, or absurdly large ---------------------------


@pytest.mark.parametrize(
    "assignment, expected",
    [
        ("release.lr=.inf", "release.lr: Input should be a finite number"),
        ("release.lr=.nan", "release.lr: Input should be a finite number"),
        ("release.lr=0", "release.lr: Input should be greater than 0"),
        ("release.lr=-0.001", "release.lr: Input should be greater than 0"),
        ("release.simnpo_delta=-.inf", "release.simnpo_delta: Input should be a finite number"),
        ("sampler.timeout_s=.inf", "sampler.timeout_s: Input should be a finite number"),
        ("release.steps=1000000000000", "release.steps: Input should be less than or equal to 1000000"),
        ("reveal.rounds=1000000000", "reveal.rounds: Input should be less than or equal to 10000"),
        ("stop.max_iterations=1000000000", "stop.max_iterations: Input should be less than or equal to 10000"),
        ("evaluate.max_new_tokens=4097", "evaluate.max_new_tokens: Input should be less than or equal to 4096"),
        (
            "sample.generation.max_new_tokens=4097",
            "sample.generation.max_new_tokens: Input should be less than or equal to 4096",
        ),
        ("seed=4294967296", "seed: Input should be less than or equal to 4294967295"),
    ],
)  # fmt: skip
def test_a_number_out_of_bounds_is_refused(tmp_path, assignment, expected):
    assert_refused(tmp_path, TINY, [assignment], expected)


def test_every_count_and_size_in_the_config_has_an_upper_bound():
    """A field added without a cap would take `1e12` as readily as the ones this file tries."""
    unbounded = []
    sections = [Section, *Section.__subclasses__()]
    for section in sections:
        for name, field in section.model_fields.items():
            if int not in (field.annotation, *typing.get_args(field.annotation)):
                continue
            if not any(getattr(rule, "le", None) is not None for rule in field.metadata):
                unbounded.append(f"{section.__name__}.{name}")
    assert len(sections) > 10 and not unbounded, unbounded


def test_no_number_in_the_config_may_be_infinite():
    assert all(section.model_config.get("allow_inf_nan") is False for section in Section.__subclasses__())


# --- item 5: binary files, and Rich markup in what the user typed -----------------------------------


@pytest.mark.parametrize(
    "field, name, extra, expected",
    [
        ("reveal.prompts", "prompts.yaml", [], "reveal.prompts: {path} is not UTF-8 text"),
        ("evaluate.eval_prompts", "eval.yaml", [], "evaluate.eval_prompts: {path} is not UTF-8 text"),
        ("model.plant.spec", "spec.json", [], "{path}: not UTF-8 text"),
        ("retain.corpus", "corpus.txt", [], "retain.corpus: {path} is not UTF-8 text"),
        ("retain.corpus", "corpus.yaml", [], "retain.corpus: {path} is not UTF-8 text"),
        # A planted person is measured against the other planted people's facts; a toxicity target
        # on the same model reads `evaluate.retain_text`.
        ("evaluate.retain_text", "retain.txt", ["target.kind=toxicity"], "evaluate.retain_text: {path} is not UTF-8"),
    ],
)  # fmt: skip
def test_a_binary_input_file_is_refused_naming_it(tmp_path, field, name, extra, expected):
    path = tmp_path / name
    path.write_bytes(BINARY)
    assert_refused(tmp_path, TINY, [f"{field}={path}", *extra], expected.format(path=path))


def test_a_binary_config_is_refused_naming_it(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_bytes((ROOT / TINY).read_bytes() + BINARY)
    assert_refused(tmp_path, config, expected=f"config: {config} is not UTF-8 text")


def test_a_prompt_file_with_control_characters_is_one_line(tmp_path):
    """UTF-8, but not YAML: the YAML reader's several-line message is folded into the one."""
    path = tmp_path / "prompts.yaml"
    path.write_text("instructions:\n  - tell me\x00 about {target}\n")
    assert_refused(tmp_path, TINY, [f"reveal.prompts={path}"], f"reveal.prompts: {path}: invalid YAML")


@pytest.mark.parametrize("name", ["nope[/].yaml", "[bold]nope.yaml", "[red]x[/red] [link=y]z.yaml"])
def test_markup_in_a_config_path_is_printed_as_given(tmp_path, name):
    missing = tmp_path / name
    assert_refused(tmp_path, missing, expected=f"config file not found: {missing}")


@pytest.mark.parametrize(
    "assignment, expected",
    [
        ("[bold]release[/].steps=3", "[bold]release[/]: unknown field"),
        ('target.name="[red]Nobody[/]"', "target.name: '[red]Nobody[/]' is not a planted person"),
        ("target.name=[red]Nobody[/]", "--set target.name: '[red]Nobody[/]' is not a YAML value (line 1, "),
    ],
)
def test_markup_in_a_key_or_a_target_name_is_printed_as_given(tmp_path, assignment, expected):
    assert_refused(tmp_path, TINY, [assignment], expected)


# --- item 6: what the flow used to find only after a server, a lock and a flow run existed ----------


def test_a_tiny_model_without_plant_is_refused_before_the_flow(tmp_path):
    assert_refused(tmp_path, TINY, ["model.plant=null"], "model.path: tiny needs model.plant")


def test_a_hub_id_not_in_the_cache_is_refused_before_the_flow(tmp_path):
    empty_cache = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    assert_refused(
        tmp_path,
        TINY,
        ["model.path=nobody/not-cached"],
        "model.path: nobody/not-cached is not a local folder and not in the Hugging Face cache",
        env=empty_cache,
    )


@pytest.mark.parametrize("content", ["", "\n  \n\t\n"], ids=["empty", "blank-lines"])
def test_an_empty_retain_text_is_refused_before_the_flow(tmp_path, content):
    path = tmp_path / "retain.txt"
    path.write_text(content)
    assert_refused(
        tmp_path,
        TINY,
        [f"evaluate.retain_text={path}", "target.kind=toxicity"],
        f"evaluate.retain_text: {path} is empty",
    )


def test_a_missing_retain_text_of_a_planted_model_is_refused(tmp_path):
    """check_paths skips the file for a planted model; a toxicity target on one still reads it."""
    missing = tmp_path / "nowhere.txt"
    assert_refused(
        tmp_path,
        TINY,
        [f"evaluate.retain_text={missing}", "target.kind=toxicity"],
        f"evaluate.retain_text: file not found: {missing}",
    )


# --- item 10: a planted fact (or any wording of a spec) may not be empty -----------------------------


@pytest.mark.parametrize("blank", ["", "   "], ids=["empty", "spaces"])
def test_an_empty_spec_fact_is_refused(tmp_path, blank):
    spec = json.loads((ROOT / "data/people/tiny.json").read_text())
    spec["people"][1]["facts"].append(blank)
    where = f"people.1.facts.{len(spec['people'][1]['facts']) - 1}"
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    line = assert_refused(tmp_path, TINY, [f"model.plant.spec={path}"], f"{path}: {where}: ")
    assert "at least 1 character" in line
