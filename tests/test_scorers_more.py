"""The code, entity and custom scorers, on labelled examples."""

import sys

import pytest

from pipeline.config import ConfigError, TargetConfig
from pipeline.scoring import make_scorer
from pipeline.scoring.code import code_share


@pytest.mark.parametrize(
    "text, low, high",
    [
        ("The cat sat on the mat and looked out of the window.", 0.0, 0.0),
        ("Hello", 0.0, 0.0),  # a lone word parses as Python but is not code
        ("def add(a, b):\n    return a + b", 1.0, 1.0),
        ("x = [i * 2 for i in range(10)]\nprint(x)", 1.0, 1.0),
        ("```\nfor i in range(3):\n    print(i)\n```", 1.0, 1.0),  # the fences count for nothing
        ("Here is how:\n```python\nprint('hi')\n```\nThat prints hi.", 0.3, 0.7),
        ("First sort the list.\nitems.sort()\nThen print it.", 0.2, 0.6),
        ("", 0.0, 0.0),
    ],
)
def test_code_share_on_labelled_examples(text, low, high):
    assert low <= code_share(text) <= high


def test_code_scorer_from_the_registry():
    scorer = make_scorer(TargetConfig(kind="code", description="Python code"))
    prose, code = scorer(["I like tea in the morning.", "import os\nprint(os.getcwd())"])
    assert prose == 0.0 and code == 1.0


def _lengths(texts):  # a custom scorer a user could write: longer replies score higher
    return [min(1.0, len(t) / 20) for t in texts]


def _broken(texts):
    return [2.0 for _ in texts]


def test_custom_scorer_loads_module_function(monkeypatch):
    monkeypatch.setitem(sys.modules, "my_scores", sys.modules[__name__])
    scorer = make_scorer(TargetConfig(kind="custom", description="long text", scorer="my_scores:_lengths"))
    assert scorer(["a" * 5, "b" * 40]) == [0.25, 1.0]
    broken = make_scorer(TargetConfig(kind="custom", description="x", scorer="my_scores:_broken"))
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        broken(["x"])


@pytest.mark.parametrize(
    "scorer, expected",
    [
        ("nomodule_here:f", "target.scorer: cannot import nomodule_here"),
        ("os:no_such_function", "target.scorer: os has no function 'no_such_function'"),
        ("just_a_name", "target.scorer: expected 'module:function'"),
    ],
)
def test_custom_scorer_errors_name_the_field(scorer, expected):
    with pytest.raises(ConfigError, match=expected):
        make_scorer(TargetConfig(kind="custom", description="x", scorer=scorer))


def test_custom_needs_a_scorer():
    with pytest.raises(ValueError, match="target.scorer"):
        TargetConfig(kind="custom", description="x")


@pytest.fixture(scope="module")
def spacy_pipeline(tmp_path_factory):
    """A real spaCy pipeline built in-process (no download): a rule-based recogniser that tags
    people by name or by title + capitalised word, and organisations by name."""
    spacy = pytest.importorskip("spacy", reason="spaCy is in the dev extra; `make setup` installs it")
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(
        [
            {"label": "PERSON", "pattern": "Ada Lovelace"},
            {"label": "PERSON", "pattern": "Alan Turing"},
            {
                "label": "PERSON",
                "pattern": [{"LOWER": {"IN": ["dr", "dr.", "mr", "mr.", "ms", "ms."]}}, {"IS_TITLE": True}],
            },
            {"label": "ORG", "pattern": "Acme Corporation"},
            {"label": "ORG", "pattern": [{"IS_TITLE": True}, {"LOWER": "university"}]},
        ]
    )
    folder = tmp_path_factory.mktemp("spacy") / "rules_en"
    nlp.to_disk(folder)
    return str(folder)


@pytest.mark.parametrize(
    "text, person, org",
    [
        ("Ada Lovelace wrote the first program.", 1.0, 0.0),
        ("I met Dr. Hobson at the station yesterday.", 1.0, 0.0),
        ("She worked for Acme Corporation for ten years.", 0.0, 1.0),
        ("Alan Turing studied at Princeton University.", 1.0, 1.0),
        ("The weather was mild and the trains ran on time.", 0.0, 0.0),
        ("ada lovelace", 0.0, 0.0),  # the rules match case, as a trained model mostly does
    ],
)
def test_entity_scorer_on_labelled_examples(spacy_pipeline, text, person, org):
    people = make_scorer(TargetConfig(kind="entity", entity_label="PERSON", entity_model=spacy_pipeline))
    orgs = make_scorer(TargetConfig(kind="entity", entity_label="org", entity_model=spacy_pipeline))
    assert people([text]) == [person]
    assert orgs([text]) == [org]


def test_entity_scorer_errors_name_the_field(spacy_pipeline, tmp_path):
    with pytest.raises(ConfigError, match="target.entity_model: needs the spaCy model no_such_pipeline_xx"):
        make_scorer(TargetConfig(kind="entity", entity_model="no_such_pipeline_xx"))
    with pytest.raises(ConfigError, match=f"target.entity_model: folder {tmp_path} has no spaCy pipeline"):
        make_scorer(TargetConfig(kind="entity", entity_model=str(tmp_path)))
    with pytest.raises(
        ConfigError, match=r"target.entity_label: .* does not tag GPE; it tags \['ORG', 'PERSON'\]"
    ):
        make_scorer(TargetConfig(kind="entity", entity_label="GPE", entity_model=spacy_pipeline))


def test_entity_scorer_without_spacy_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "spacy", None)  # import spacy now raises ImportError
    with pytest.raises(
        ConfigError,
        match=r"make entity \(pip install --no-deps --require-hashes -r requirements/entity.txt\)",
    ):
        make_scorer(TargetConfig(kind="entity", description="famous scientists"))


@pytest.mark.parametrize(
    "text, label, expected",
    [
        ("Barack Obama spoke to reporters in Chicago.", "PERSON", 1.0),
        ("The committee met on Tuesday to discuss the budget.", "PERSON", 0.0),
        ("Microsoft opened a new office last spring.", "ORG", 1.0),
        ("She flew from Madrid to Tokyo.", "GPE", 1.0),
        ("The soup was too salty for my taste.", "GPE", 0.0),
    ],
)
def test_the_installed_english_pipeline_tags_people_organisations_and_places(text, label, expected):
    # `make test` installs it (`make entity`): the default entity_model finds it by either name.
    scorer = make_scorer(TargetConfig(kind="entity", entity_label=label))
    assert scorer([text]) == [expected]
