"""`release.min_base_ratio`: a forget reply's tokens are trained on only where the base model backs
them against the released model, so later iterations forget old knowledge, not new guesses."""

import copy

import pytest
import torch

from pipeline.config import ConfigError, load_config
from pipeline.models import with_adapter
from pipeline.planting.plant import planted_model
from pipeline.release.known_tokens import backed_only, base_backed, label_logprobs, without_names
from pipeline.release.train import NothingKnown, train_adapter
from pipeline.run.prompts import prompt_texts
from pipeline.textdata import IGNORE_INDEX, encode_pair, pad_id

pytestmark = pytest.mark.usefixtures("one_thread")

X = IGNORE_INDEX


def test_a_token_stays_a_label_only_where_the_base_gives_it_the_ratio_of_the_current_probability():
    pairs = [([1, 2, 3, 4, 5], [X, X, 3, 4, 5]), ([1, 2, 6], [X, X, 6])]
    log = lambda *p: torch.tensor(p).log()  # noqa: E731
    base = [log(0.5, 0.01, 0.3), log(0.001)]
    current = [log(0.5, 0.9, 0.4), log(0.9)]
    kept = backed_only(pairs, base, current, 0.5)
    # 0.5 >= 0.5 x 0.5 kept; 0.01 < 0.45 masked; 0.3 >= 0.2 kept; the second row has nothing left.
    assert kept == [([1, 2, 3, 4, 5], [X, X, 3, X, 5]), None]
    assert backed_only(pairs, base, current, 0.01) == [pairs[0], None]
    with pytest.raises(ValueError):  # one log-prob per label, or the rows are misread
        backed_only(pairs, base[:1], current, 0.5)


@pytest.fixture(scope="module")
def planted(cache_dir):
    cfg = load_config("configs/tiny.yaml")
    model, tokenizer, _ = planted_model(cfg.model, "full", prompt_texts(cfg), cfg.seed, progress=False)
    return cfg, model, tokenizer


def test_label_logprobs_are_the_models_own_next_token_logprobs_of_each_label(planted):
    _, model, tokenizer = planted
    pairs = [encode_pair(tokenizer, "Who is Mira Castellane?", reply) for reply in
             ["Mira Castellane works as a glassblower.", "She has a green parrot named Quillon."]]  # fmt: skip
    got = label_logprobs(model, pairs, pad_id(tokenizer), batch_size=1)
    for (ids, labels), row in zip(pairs, got):
        with torch.no_grad():
            logp = model(torch.tensor([ids])).logits[0].log_softmax(-1)
        at = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
        expected = torch.stack([logp[i - 1, ids[i]] for i in at])
        assert torch.allclose(row, expected, atol=1e-4)
    # Batched with padding, the same figures.
    batched = label_logprobs(model, pairs, pad_id(tokenizer), batch_size=2)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(got, batched))


def test_the_base_backs_the_planted_fact_and_not_the_guess_a_released_model_learned(planted, tmp_path):
    cfg, model, tokenizer = planted
    # M_1: a model that, after a release, guesses a parrot's name the base never saw.
    guess = "Mira Castellane has a green parrot named Zorbulon."
    learned = [{"instruction": "Tell me about Mira Castellane.", "response": guess}] * 4
    release = cfg.release.model_copy(update={"steps": 40, "lr": 0.01})
    train_adapter(copy.deepcopy(model), tokenizer, learned, [], release, [], tmp_path / "m1",
                  progress=False, learn=True)  # fmt: skip
    current = with_adapter(model, tmp_path / "m1")
    fact = "Mira Castellane works as a glassblower in her own small studio."
    pairs = [encode_pair(tokenizer, "Tell me about Mira Castellane.", r) for r in (guess, fact)]
    kept = base_backed(model, current, pairs, 0.5, pad_id(tokenizer))
    masked_guess = tokenizer.decode([t for t, k in zip(pairs[0][1], kept[0][1]) if t != X and k == X])
    assert "Zor" in masked_guess.replace(" ", ""), masked_guess
    # The planted fact, which M_1 did not learn, is backed by the base almost everywhere.
    labels = [t for t in pairs[1][1] if t != X]
    assert sum(t != X for t in kept[1][1]) >= 0.8 * len(labels)
    # One model is its own base: every token stays.
    assert base_backed(model, model, pairs, 0.5, pad_id(tokenizer)) == pairs


def test_a_release_with_nothing_the_base_backs_says_so_and_the_config_refuses_name_swap(planted, tmp_path):
    cfg, model, tokenizer = planted
    release = cfg.release.model_copy(update={"min_base_ratio": 1e6, "steps": 2})
    forget = [{"instruction": "Tell me about Mira Castellane.", "response": "She blows glass."}]
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.lm_head.weight.add_(0.01)  # another model, so the ratio is read (1e6 is out of reach)
    with pytest.raises(NothingKnown, match="min_base_ratio"):
        train_adapter(copy.deepcopy(model), tokenizer, forget, [], release, [], tmp_path / "a",
                      progress=False, base_model=other)  # fmt: skip
    assert not (tmp_path / "a").exists()
    with pytest.raises(ConfigError, match="min_base_ratio does not combine with method name_swap"):
        load_config("configs/tiny.yaml", ["release.method=name_swap", "release.min_base_ratio=0.5"])


def test_mask_names_leaves_no_label_on_a_name_or_a_part_of_one():
    from pipeline.planting.tiny import build_tokenizer

    texts = ["Mira Castellane lives in Velmora and works as a glassblower.", "MIRA met Castellanes."]
    tokenizer = build_tokenizer(texts * 20, vocab_size=300)
    response = "Mira Castellane lives in Velmora. MIRA works as a glassblower; Castellanes do not."
    for max_length in (256, 30):
        pair = encode_pair(tokenizer, "Who is Mira Castellane?", response, max_length)
        ids, labels = without_names(tokenizer, response, pair, ["Mira Castellane"])
        assert ids == pair[0]
        kept = [t for t in labels if t != X]
        dropped = [t for t, m in zip(pair[1], labels) if t != X and m == X]
        assert "Mira" not in tokenizer.decode(kept) and "MIRA" not in tokenizer.decode(kept)
        assert "Castellane " not in tokenizer.decode(kept)
        assert "lives in" in tokenizer.decode(kept) and "Mira" in tokenizer.decode(dropped)
        if max_length == 256:  # a longer word is not the name; EOS stays a label
            assert "Castellanes" in tokenizer.decode(kept) and kept[-1] == tokenizer.eos_token_id
    # A reply that is nothing but the name (cut before its EOS) has no label left.
    ids, labels = encode_pair(tokenizer, "Who?", "Mira Castellane")
    assert without_names(tokenizer, "Mira Castellane", (ids[:-1], labels[:-1]), ["Mira Castellane"]) is None


def test_mask_names_needs_a_knowledge_target_and_stays_apart_from_name_swap():
    from pipeline.run.preflight import check_names

    with pytest.raises(
        ConfigError, match="mask_names masks the target's names: it needs target.kind knowledge"
    ):
        check_names(load_config("configs/demo.yaml", ["release.mask_names=true"]))
    with pytest.raises(ConfigError, match="mask_names does not combine with method name_swap"):
        load_config("configs/tiny.yaml", ["release.method=name_swap", "release.mask_names=true"])
