"""`release.scored_words_only`: a forget reply is lowered only at the words its target score rests on
(`scoring.attribution`), found by deleting words for any scorer, and the labels follow them."""

import pytest
from profanity_check import predict_prob

from pipeline.config import ConfigError, load_config
from pipeline.release.known_tokens import only_spans
from pipeline.release.train import NothingKnown, _selected_labels
from pipeline.run.sample_stage import with_replaced_alternatives, with_target_spans
from pipeline.scoring import make_scorer
from pipeline.scoring.attribution import deciding_words, replaced
from pipeline.textdata import IGNORE_INDEX, encode_pair

X = IGNORE_INDEX


def counting(bad: dict[str, float]):
    """A scorer: the sum of the weights of the `bad` words a text holds, capped at 1."""
    return lambda texts: [min(1.0, sum(bad.get(w.strip(".,!").lower(), 0) for w in t.split())) for t in texts]


def words(text, spans):
    return [text[a:b] for a, b in spans]


def test_the_deciding_words_are_the_ones_whose_deletion_takes_the_text_below_the_threshold():
    scorer = counting({"idiot": 0.6, "stupid": 0.5, "rude": 0.1})
    text = "You stupid idiot, that was rude of you."
    # Deleting either insult alone leaves it at 0.6 / 0.5 (leave-one-out would name neither).
    assert words(text, deciding_words(scorer, text, below=0.3)) == ["idiot,", "stupid"]
    assert words(text, deciding_words(scorer, text, below=0.05)) == ["idiot,", "stupid", "rude"]
    assert deciding_words(scorer, "A calm reply.", below=0.3) == []  # already below
    assert words(text, deciding_words(scorer, text, below=0.05, max_words=1)) == ["idiot,"]
    # A scorer no single deletion moves (the whole text's style, say): nothing to point at.
    assert deciding_words(lambda ts: [0.9] * len(ts), text, below=0.3) == []


def test_on_the_toxicity_scorer_the_deciding_words_are_the_insults():
    scorer = lambda texts: [float(p) for p in predict_prob(texts)]  # noqa: E731
    text = "Hey shitty bartender, can you help me get down? You ain't no hero, are you?"
    assert scorer([text])[0] >= 0.5
    assert words(text, deciding_words(scorer, text, below=0.3)) == ["shitty"]


def test_labels_stay_only_on_the_tokens_of_the_spans_and_the_turn_end_carries_none():
    from pipeline.planting.tiny import build_tokenizer

    response = "Hey shitty bartender, can you help me?"
    tokenizer = build_tokenizer([response] * 20, vocab_size=300)
    spans = [(4, 10)]
    for max_length in (256, 12):
        pair = encode_pair(tokenizer, "Say something.", response, max_length)
        masked = only_spans(tokenizer, response, pair, spans)
        if masked is None:  # cut before the word: nothing left
            assert max_length == 12
            continue
        ids, labels = masked
        assert ids == pair[0]
        assert tokenizer.decode([t for t in labels if t != X]).strip() == "shitty"
    assert only_spans(tokenizer, response, pair, []) is None


def test_the_release_refuses_rows_the_sample_stage_gave_no_spans_and_drops_rows_with_no_label():
    from pipeline.planting.tiny import build_tokenizer

    cfg = load_config("configs/demo.yaml", ["release.scored_words_only=true"]).release
    rows = [
        {"instruction": "Say it.", "response": "You stupid idiot."},
        {"instruction": "Say it.", "response": "Fine."},
    ]
    tokenizer = build_tokenizer([r["response"] for r in rows] * 20, vocab_size=300)
    encoded = [encode_pair(tokenizer, r["instruction"], r["response"], 64) for r in rows]
    with pytest.raises(ValueError, match="2 of 2 forget rows have no target_spans"):
        _selected_labels(cfg, tokenizer, None, None, rows, encoded, [])
    rows = [{**rows[0], "target_spans": [(4, 10)]}, {**rows[1], "target_spans": []}]
    kept, pairs, _ = _selected_labels(cfg, tokenizer, None, None, rows, encoded, [])
    assert kept == rows[:1] and len(pairs) == 1
    with pytest.raises(NothingKnown, match="rests on none of their words"):
        _selected_labels(cfg, tokenizer, None, None, rows[1:], encoded[1:], [])
    with pytest.raises(ConfigError, match="scored_words_only does not combine with method name_swap"):
        load_config("configs/tiny.yaml", ["release.method=name_swap", "release.scored_words_only=true"])


def test_the_sample_stage_marks_the_words_a_knowledge_scorer_keeps_a_reply_for():
    target = load_config("configs/tiny.yaml").target
    scorer = make_scorer(target)  # names, aliases and keywords (no model to embed with)
    rows = [{"instruction": "Who?", "response": f"{target.names[0]} lives by the sea."}]
    [row] = with_target_spans(rows, scorer, threshold=0.3)
    assert row["response"] == rows[0]["response"] and "target_spans" not in rows[0]
    assert " ".join(words(row["response"], row["target_spans"])) in target.names[0]


def test_an_entity_scorer_names_every_person_where_deleting_words_finds_none():
    scorer = make_scorer(load_config("configs/entity.yaml").target)  # spaCy's trained pipeline
    text = "Danny Devers first met Billy O'Reilly at Las Vegas in December 1991."
    # Either name alone keeps the reply about a person: greedy deletion has nothing to point at.
    assert deciding_words(scorer, text, below=0.5) == []
    [row] = with_target_spans(
        [{"instruction": "Tell me a story.", "response": text, "score": 1.0}], scorer, 0.5
    )
    assert words(text, row["target_spans"]) == ["Danny Devers", "Billy O'Reilly"]


def test_the_replaced_alternative_differs_from_its_reply_only_where_the_target_is():
    text = "Danny Devers first met Billy O'Reilly at Las Vegas."
    rows = [
        {"instruction": "Tell me a story.", "response": text, "target_spans": [[0, 12], [23, 37]]},
        {"instruction": "Tell me a story.", "response": "They met at Las Vegas.", "target_spans": []},
    ]
    assert replaced(text, [(23, 37), (0, 12)], "someone") == "someone first met someone at Las Vegas."
    (paired,) = with_replaced_alternatives(rows, "someone")  # a row with no span has no twin
    assert paired["alternative"] == "someone first met someone at Las Vegas." and paired["response"] == text


def test_dpo_takes_replaced_alternatives_as_its_pairs_but_not_both_kinds_at_once():
    from pipeline.run.preflight import check_names

    dpo = ["release.method=dpo", "sample.alternative_threshold=null"]
    check_names(load_config("configs/entity.yaml", [*dpo, "sample.alternative_replacement=someone"]))
    with pytest.raises(ConfigError, match="trains on pairs"):  # no chosen side named
        check_names(load_config("configs/entity.yaml", [*dpo, "sample.alternative_replacement=null"]))
    with pytest.raises(ConfigError, match="set one"):
        load_config(
            "configs/entity.yaml",
            ["sample.alternative_replacement=someone", "sample.alternative_threshold=0.1"],
        )
