"""Bad input: exit code 2, one line naming the problem, no traceback, no run directory."""

import pytest

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
