"""The run config: defaults, overrides, and errors that name the field."""

import pytest
import yaml

from pipeline.config import ConfigError, load_config
from tests.conftest import ROOT

MINIMAL = "target:\n  kind: toxicity\n"


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_minimal_config_gets_working_defaults(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.model.path == "embedded"
    assert cfg.release.method == "undial"
    assert cfg.target.description == "toxicity"
    assert cfg.reveal_prompts_path().name == "toxicity.yaml" and cfg.reveal_prompts_path().is_file()


def test_shipped_configs_are_valid():
    for name in ["configs/demo.yaml", "configs/tiny.yaml"]:
        cfg = load_config(name)
        assert cfg.stop.max_iterations >= 2


@pytest.mark.parametrize(
    "text, expected",
    [
        ("target:\n  kind: toxicity\nrelease:\n  stepz: 3\n", "release.stepz: unknown field"),
        ("target:\n  kind: toxicity\nrelease:\n  steps: -1\n", "release.steps"),
        ("target:\n  kind: toxic\n", "target.kind"),
        ("release:\n  steps: 3\n", "target: Field required"),
        ("target:\n  kind: knowledge\n", "target.name is required"),
        ("target: [unclosed\n", "invalid YAML (line "),
        ("- a\n- b\n", "must be a mapping"),
        (
            "target:\n  kind: toxicity\nevaluate:\n  retain_text: nowhere.txt\n",
            "evaluate.retain_text: file not found",
        ),
        (
            "target:\n  kind: toxicity\nmodel:\n  path: embedded\n  plant:\n    spec: x.json\n",
            "model.plant.spec: file not found",
        ),
        (
            "target:\n  kind: toxicity\nmodel:\n  plant:\n    spec: x.json\n    steps: 10\n    max_steps: 5\n",
            "model.plant: Value error, max_steps (5) is below steps (10)",
        ),
        (
            "target:\n  kind: toxicity\nsample:\n  relevance_threshold: 0.3\n  alternative_threshold: 0.4\n",
            "alternative_threshold (0.4) must not be above relevance_threshold (0.3)",
        ),
        (  # pydantic alone would take it as 1 step
            "target:\n  kind: toxicity\nrelease:\n  steps: true\n",
            "release.steps: Value error, true is a yes/no, not a number",
        ),
        (
            "target:\n  kind: toxicity\nstop:\n  utility_floor: no\n",
            "stop.utility_floor: Value error, false is",
        ),
        ("target:\n  kind: toxicity\nrelease:\n  steps: 1e9\n", "release.steps: Input should be less than"),
        (  # YAML's reader would keep the second block only, dropping the first's lr unseen
            "target:\n  kind: toxicity\nrelease:\n  lr: 0.005\nseed: 1\nrelease:\n  steps: 5\n",
            "`release` is given twice (line 3 and line 6): merge the two",
        ),
    ],
)
def test_bad_configs_name_the_field(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_a_paired_objective_needs_alternatives(tmp_path):
    from pipeline.run.preflight import check_names

    path = write(tmp_path, "target:\n  kind: toxicity\nrelease:\n  method: dpo\n")
    with pytest.raises(ConfigError, match="set sample.alternative_threshold"):
        check_names(load_config(path))
    check_names(load_config(path, ["sample.alternative_threshold=0.1"]))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_are_typed_and_validated(tmp_path):
    path = write(tmp_path, MINIMAL)
    cfg = load_config(path, ["release.steps=7", "release.lr=0.01", "stop.max_iterations=4"])
    assert (cfg.release.steps, cfg.release.lr, cfg.stop.max_iterations) == (7, 0.01, 4)
    with pytest.raises(ConfigError, match="release.steps"):
        load_config(path, ["release.steps=many"])
    with pytest.raises(ConfigError, match="release.nope: unknown field"):
        load_config(path, ["release.nope=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["release.steps"])


def test_several_names_to_forget(tmp_path):
    path = write(tmp_path, "target:\n  kind: knowledge\n  name: [Mira Castellane, ' Tobias Wrenfield ']\n")
    target = load_config(path).target
    assert target.names == ["Mira Castellane", "Tobias Wrenfield"]
    assert target.description == "Mira Castellane and Tobias Wrenfield"
    single = load_config(write(tmp_path, "target:\n  kind: knowledge\n  name: Mira Castellane\n")).target
    assert single.names == ["Mira Castellane"] and single.description == "Mira Castellane"
    with pytest.raises(ConfigError, match="target.name is required"):
        load_config(write(tmp_path, "target:\n  kind: knowledge\n  name: ['', ' ']\n"))


def test_run_prompts_ask_about_each_name(tmp_path):
    from pipeline.run.prompts import run_prompts

    path = write(tmp_path, "target:\n  kind: knowledge\n  name: [Mira Castellane, Tobias Wrenfield]\n")
    arms, _, evals = run_prompts(load_config(path))
    assert "Tell me about Mira Castellane." in arms and "Tell me about Tobias Wrenfield." in arms
    assert not any("Mira Castellane and Tobias" in a for a in arms + evals)
    assert any("Tobias Wrenfield" in e for e in evals)


def test_retain_prompts_are_one_file_or_several_read_in_order(tmp_path):
    from pipeline.run.prompts import run_prompts

    a = write(tmp_path, 'kind: retain\ninstructions: ["Describe a kite.", "Name a river."]\n', "a.yaml")
    b = write(tmp_path, 'kind: retain\ninstructions: ["What do bees make?"]\n', "b.yaml")
    one = load_config(write(tmp_path, MINIMAL + f"sample:\n  retain_prompts: {a}\n"))
    both = load_config(write(tmp_path, MINIMAL + f"sample:\n  retain_prompts: [{a}, {b}]\n"))
    assert run_prompts(one)[1] == ["Describe a kite.", "Name a river."]
    assert run_prompts(both)[1] == ["Describe a kite.", "Name a river.", "What do bees make?"]
    with pytest.raises(ConfigError, match="sample.retain_prompts: file not found: .*missing.yaml"):
        load_config(write(tmp_path, MINIMAL + f"sample:\n  retain_prompts: [{a}, {tmp_path}/missing.yaml]\n"))
    # A relative path is named as written, with the two folders it was looked for in.
    expected = r"reveal.prompts: file not found: sub/missing.yaml \(looked in .* and in .*\)$"
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, MINIMAL + "reveal:\n  prompts: sub/missing.yaml\n"))


def test_same_experiment_ignores_the_thread_count(tmp_path):
    path = write(tmp_path, "target:\n  kind: toxicity\n")
    saved = load_config(path).to_yaml()
    assert load_config(path, ["model.threads=3"]).same_experiment(saved)
    assert not load_config(path, ["release.lr=0.5"]).same_experiment(saved)
    assert not load_config(path, ["model.device=cpu"]).same_experiment(saved)
    cfg = load_config(path)
    assert cfg.same_experiment(saved + "spec_sha256: ab\n", {"spec_sha256": "ab"})
    assert not cfg.same_experiment(saved + "spec_sha256: ab\n", {"spec_sha256": "cd"})
    assert not cfg.same_experiment("- not a mapping\n")


def test_a_run_saved_before_a_new_field_existed_is_the_same_experiment():
    config = load_config(ROOT / "configs" / "demo.yaml")
    saved = yaml.safe_load(config.to_yaml())
    del saved["retain"]  # sections added later, at their defaults: resuming must still work
    del saved["evaluate"]["judges"], saved["reveal"]["policy"]
    assert config.same_experiment(yaml.safe_dump(saved))
    saved["reveal"]["policy"] = "random"
    assert not config.same_experiment(yaml.safe_dump(saved))
    saved["reveal"]["gone_field"] = 1
    assert not config.same_experiment(yaml.safe_dump(saved))


def test_a_misspelt_placeholder_is_refused_before_the_run(tmp_path):
    from pipeline.run.preflight import preflight

    prompts = tmp_path / "p.yaml"
    prompts.write_text('instructions:\n  - "Tell me about {targt}."\n')
    config = load_config(ROOT / "configs" / "tiny.yaml", [f"reveal.prompts={prompts}"])
    with pytest.raises(ConfigError, match=r"reveal.prompts: .*\{targt\}.*did you mean \{target\}"):
        preflight(config)
    # Braces of the text's own (code, say) are not placeholders and reach the model as written.
    prompts.write_text('instructions:\n  - "Explain {x: 1} in Python, {target}."\n')
    preflight(load_config(ROOT / "configs" / "tiny.yaml", [f"reveal.prompts={prompts}"]))
    starts = load_config(ROOT / "configs" / "tiny.yaml", ['sample.reply_starts=["{taget} was"]'])
    with pytest.raises(ConfigError, match=r"sample.reply_starts: .*did you mean \{target\}"):
        preflight(starts)


def test_a_number_in_exponent_form_is_a_number():
    # YAML 1.1 (PyYAML's) reads 1e3 and 3e-3 as text; a field that holds a number takes them.
    cfg = load_config("configs/tiny.yaml", ["release.steps=1e3", "release.lr=3e-3", "target.name=1e5"])
    assert (cfg.release.steps, cfg.release.lr, cfg.target.name) == (1000, 0.003, "1e5")
