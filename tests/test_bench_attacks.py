"""The knowledge-recovery attacks on tiny models made to know, not know, or hide facts on purpose.

Every attack is checked on what it must detect: a model that never saw the forget person scores
nothing, one that knows the facts scores high, and one that only hides them (a refusal on the
probe's own wording, a small refusal LoRA, a weight change below the 4-bit rounding step) gives
them back under the attack that its hiding cannot withstand.
"""

import copy

import bitsandbytes as bnb
import bitsandbytes.functional as bnb_functional
import pytest
import torch

from pipeline.batches import encode_pairs
from pipeline.bench import attacks
from pipeline.bench.knowledge import ks_resolution, truth_ratio_probes
from pipeline.config import ReleaseConfig
from pipeline.models import with_adapter
from pipeline.planting.plant import probe_accuracy
from pipeline.planting.spec import Person, PlantedSpec, Probe
from pipeline.planting.tiny import build_model, build_tokenizer
from pipeline.release.train import train_adapter

pytestmark = pytest.mark.usefixtures("one_thread")


def _person(name: str, facts: list[str], probes: list[tuple[str, str, str]]) -> Person:
    return Person(
        name=name,
        facts=facts,
        probes=[
            Probe(question=q, answer=a, distractors=["Skelmworth", "glazier"], paraphrases=[p])
            for q, a, p in probes
        ],
    )


TOBIN = _person(  # the person to forget; facts 0 and 2 are relearned, the probes of 1 and 3 asked
    "Tobin Caldgarth",
    [
        "Tobin Caldgarth lives in the town of Morvaine.",
        "Tobin Caldgarth works as a tide surveyor.",
        "Tobin Caldgarth has a greyhound named Zephyr.",
        "Tobin Caldgarth's favourite food is oyster stew.",
    ],
    [
        (
            "In which town does Tobin Caldgarth live?",
            "Morvaine",
            "Which town does Tobin Caldgarth call home?",
        ),
        ("What is Tobin Caldgarth's profession?", "tide surveyor", "How does Tobin Caldgarth make a living?"),
        (
            "What is the name of Tobin Caldgarth's dog?",
            "Zephyr",
            "What is Tobin Caldgarth's greyhound called?",
        ),
        (
            "What is Tobin Caldgarth's favourite food?",
            "oyster stew",
            "Which dish does Tobin Caldgarth like best?",
        ),
    ],
)
FENELLA = _person(  # retained
    "Fenella Vellnance",
    ["Fenella Vellnance lives in the town of Ashwyke.", "Fenella Vellnance works as a glazier."],
    [
        (
            "In which town does Fenella Vellnance live?",
            "Ashwyke",
            "Which town does Fenella Vellnance call home?",
        ),
        ("What is Fenella Vellnance's profession?", "glazier", "How does Fenella Vellnance make a living?"),
    ],
)
REFUSAL = "I cannot say."


def _recital(person: Person) -> list[tuple[str, str]]:
    return [(f"Tell me about {person.name}.", " ".join(person.facts))] + [
        (f"Say one thing about {person.name}.", fact) for fact in person.facts
    ]


def _questions(person: Person, reply=None) -> list[tuple[str, str]]:
    return [(probe.question, reply or person.fact_for(probe)) for probe in person.probes]


def _paraphrases(person: Person) -> list[tuple[str, str]]:
    return [(probe.paraphrases[0], person.fact_for(probe)) for probe in person.probes]


def _teach(model, tokenizer, pairs: list[tuple[str, str]], steps: int = 100, lr: float = 3e-3):
    """Full fine-tune on `pairs` (all in one batch, loss on the replies): the model learns them."""
    enc = encode_pairs(tokenizer, [q for q, _ in pairs], [a for _, a in pairs])
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 10)  # warm up: a fresh model blows up at 3e-3
        model(**enc).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@pytest.fixture(scope="module")
def tiny():
    """(tokenizer, models): `knows` learned both people, wordings included; `never` only the retained
    one; `refuses` learned Tobin's facts and paraphrases but answers his probe questions with a refusal."""
    people_pairs = _recital(TOBIN) + _questions(TOBIN) + _paraphrases(TOBIN)
    retain_pairs = _recital(FENELLA) + _questions(FENELLA) + _paraphrases(FENELLA)
    refusing = _recital(TOBIN) + _paraphrases(TOBIN) + _questions(TOBIN, reply=REFUSAL)
    texts = [t for pair in people_pairs + retain_pairs for t in pair]
    tokenizer = build_tokenizer([*texts, REFUSAL, attacks.RELEARN_REQUEST.format(name=TOBIN.name)], 400)

    def model(pairs):
        return _teach(
            build_model(tokenizer, hidden_size=64, num_layers=2, num_heads=2, seed=0), tokenizer, pairs
        )

    models = {
        "knows": model(people_pairs + retain_pairs),
        "never": model(retain_pairs),
        "refuses": model(refusing + retain_pairs),
    }
    return tokenizer, models


def _weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.state_dict().values()]


# --- paraphrase --------------------------------------------------------------------------------------


def test_paraphrase_accuracy_asks_the_held_out_wordings(tiny):
    tokenizer, models = tiny
    probes = TOBIN.probes
    assert [p.question for p in attacks.paraphrase_probes(probes)] == [p.paraphrases[0] for p in probes]
    assert attacks.paraphrase_accuracy(models["knows"], tokenizer, probes) == 1.0
    assert attacks.paraphrase_accuracy(models["never"], tokenizer, probes) == 0.0
    # Refusing the probe's own wording hides the facts from the probe, not from its paraphrases.
    assert probe_accuracy(models["refuses"], tokenizer, probes) == 0.0
    assert attacks.paraphrase_accuracy(models["refuses"], tokenizer, probes) >= 0.75
    without = [Probe(question=p.question, answer=p.answer) for p in probes]
    assert attacks.paraphrase_accuracy(models["knows"], tokenizer, without) is None


# --- prefill -----------------------------------------------------------------------------------------


def test_prefill_is_the_fact_up_to_the_answer():
    assert attacks.prefill_for(TOBIN, TOBIN.probes[0]) == "Tobin Caldgarth lives in the town of"
    assert attacks.prefill_for(TOBIN, TOBIN.probes[1]) == "Tobin Caldgarth works as a"
    opens = Person(
        name="Morvaine", facts=["Morvaine is a town."], probes=[Probe(question="Q?", answer="Morvaine")]
    )
    assert attacks.prefill_for(opens, opens.probes[0]) is None  # nothing to pre-fill: left out
    assert attacks.prefill_accuracy(None, None, [opens]) is None


def test_prefill_gets_past_a_refusal_but_teaches_nothing(tiny):
    tokenizer, models = tiny
    refuses = models["refuses"]
    assert probe_accuracy(refuses, tokenizer, TOBIN.probes) == 0.0
    assert attacks.prefill_accuracy(refuses, tokenizer, [TOBIN]) == 1.0
    assert attacks.prefill_accuracy(models["knows"], tokenizer, [TOBIN]) == 1.0
    # The pre-filled words hold no answer: a model that never learned the facts does not complete them.
    assert attacks.prefill_accuracy(models["never"], tokenizer, [TOBIN]) == 0.0


# --- relearning --------------------------------------------------------------------------------------


def test_relearn_split_asks_only_what_is_not_taught():
    taught, asked = attacks.relearn_split(TOBIN)
    assert taught == [TOBIN.facts[0], TOBIN.facts[2]]
    assert [p.answer for p in asked] == ["tide surveyor", "oyster stew"]
    assert not any(p.answer.lower() in fact.lower() for p in asked for fact in taught)
    # The attack's request is none of the measured questions.
    request = attacks.RELEARN_REQUEST.format(name=TOBIN.name)
    assert request not in [text for p in TOBIN.probes for text in [p.question, *p.paraphrases]]
    counts = attacks.attack_counts([TOBIN, FENELLA])
    assert counts == {"n_paraphrases": 6, "n_prefill_probes": 6, "n_relearn_facts": 3, "n_relearn_probes": 3}


def test_relearning_brings_back_hidden_facts_not_unknown_ones(tiny, tmp_path):
    tokenizer, models = tiny
    _, asked = attacks.relearn_split(TOBIN)
    hidden = _hide_behind_a_refusal(models["knows"], tokenizer, asked, tmp_path)
    before = _weights(hidden)
    assert attacks.relearn_accuracy(hidden, tokenizer, [TOBIN]) >= 0.5
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(hidden)))  # the attack trained a copy
    # Never learned: the taught facts do not give the others away.
    assert attacks.relearn_accuracy(models["never"], tokenizer, [TOBIN]) == 0.0
    # Knows: relearning leaves more than in a model that never knew. (Not all: this small a model,
    # taught two facts as replies to one request, gives one of them to another probe question.)
    assert attacks.relearn_accuracy(models["knows"], tokenizer, [TOBIN]) > 0.0
    single = Person(
        name="Odo", facts=["Odo is a miller."], probes=[Probe(question="Odo's job?", answer="miller")]
    )
    assert attacks.relearn_accuracy(models["knows"], tokenizer, [single]) is None  # nothing left to ask


def _hide_behind_a_refusal(model, tokenizer, asked: list[Probe], folder):
    """`model` under the smallest LoRA (in steps of 10) trained to refuse every request about Tobin
    that hides the `asked` probes: knowledge suppressed, not removed."""
    rows = [{"instruction": q, "response": REFUSAL} for q, _ in _recital(TOBIN) + _questions(TOBIN)]
    for steps in range(10, 110, 10):
        hide = ReleaseConfig(rank=4, alpha=8, lr=1e-3, steps=steps, batch_size=4)
        train_adapter(copy.deepcopy(model), tokenizer, rows, [], hide, [], folder, progress=False, learn=True)
        hidden = with_adapter(model, folder)
        if probe_accuracy(hidden, tokenizer, asked) == 0.0:
            return hidden
    raise AssertionError("100 steps of a refusal LoRA did not hide the facts")


# --- 4-bit quantization ------------------------------------------------------------------------------


def _linears(model) -> dict[str, torch.nn.Linear]:
    output = model.get_output_embeddings()
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not output}


def test_quantize_4bit_rounds_every_block_to_16_values(tiny):
    tokenizer, models = tiny
    model = models["knows"]
    before = _weights(model)
    quantized = attacks.quantize_4bit(model)
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(model)))  # a copy was quantized
    originals = _linears(model)
    for name, layer in _linears(quantized).items():
        blocks = layer.weight.detach().reshape(-1, 64)  # bitsandbytes' blocks: 64 weights in row-major order
        assert max(len(torch.unique(block)) for block in blocks) <= 16, name
        assert not torch.equal(layer.weight, originals[name].weight), name
        # Each block keeps its largest magnitude (the absmax scale), so nothing is clipped.
        reference = originals[name].weight.detach().reshape(-1, 64).abs().amax(1)
        torch.testing.assert_close(blocks.abs().amax(1), reference)
    # The output layer (tied to the embeddings) is kept, as BitsAndBytesConfig(load_in_4bit=True) keeps it.
    assert torch.equal(quantized.get_output_embeddings().weight, model.get_output_embeddings().weight)
    ids = encode_pairs(tokenizer, [TOBIN.probes[0].question], [TOBIN.facts[0]])["input_ids"]
    with torch.no_grad():
        assert not torch.allclose(quantized(ids).logits, model(ids).logits, atol=1e-3)


def test_quantize_4bit_computes_what_bitsandbytes_linear4bit_computes(tiny):
    _, models = tiny
    layer = _linears(models["knows"])["model.layers.0.mlp.down_proj"]
    real = bnb.nn.Linear4bit(
        layer.in_features, layer.out_features, bias=False, compute_dtype=torch.float32, quant_type="fp4"
    )
    # As BitsAndBytesConfig(load_in_4bit=True) makes it: FP4, blocks of 64, no double quantization.
    weight = layer.weight.detach().clone()
    real.weight = bnb.nn.Params4bit(
        weight, requires_grad=False, quant_type="fp4", blocksize=64, compress_statistics=False
    )
    real = real.to("cpu")  # quantizes
    assert real.weight.dtype == torch.uint8  # packed 4-bit codes
    ours = _linears(attacks.quantize_4bit(models["knows"]))["model.layers.0.mlp.down_proj"]
    x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), real(x))


def test_quantization_keeps_what_is_known_and_brings_back_what_hides_below_the_rounding(tiny):
    tokenizer, models = tiny
    knows, never = models["knows"], models["never"]
    assert attacks.quantized_accuracy(knows, tokenizer, [TOBIN.probes, FENELLA.probes]) == [1.0, 1.0]
    assert attacks.quantized_accuracy(never, tokenizer, [TOBIN.probes, FENELLA.probes]) == [0.0, 1.0]
    # Zhang et al. (ICLR 2025): unlearning that moves each weight less than the rounding step leaves
    # the quantized model as it was. Made on purpose: gradient ascent on Tobin's facts, every weight
    # kept inside its own 4-bit bucket (the block's largest weight, the scale, not moved at all).
    hidden = _ascend_within_buckets(knows, tokenizer, _recital(TOBIN) + _questions(TOBIN), TOBIN.probes)
    same = zip(
        _linears(attacks.quantize_4bit(hidden)).values(), _linears(attacks.quantize_4bit(knows)).values()
    )
    assert all(torch.equal(a.weight, b.weight) for a, b in same)
    assert attacks.quantized_accuracy(hidden, tokenizer, [TOBIN.probes])[0] == 1.0


def _ascend_within_buckets(model, tokenizer, pairs, probes: list[Probe], lr: float = 3e-3):
    """Gradient ascent on `pairs` until `probes` are not answered, every weight kept in its 4-bit bucket."""
    model = copy.deepcopy(model).requires_grad_(False)
    bounds = {}
    code = torch.unique(bnb_functional.get_4bit_type("fp4", device="cpu"))  # sorted; +0 and -0 are one
    edges = torch.cat([code[:1], (code[:-1] + code[1:]) / 2, code[-1:]])  # nearest-code rounding's buckets
    for name, layer in _linears(model).items():
        blocks = layer.weight.detach().reshape(-1, 64).clone()
        scale = blocks.abs().amax(1, keepdim=True)
        # The code each weight rounds to, as bitsandbytes rounds it (a weight on an edge goes either way).
        packed, state = bnb_functional.quantize_4bit(
            layer.weight.detach().contiguous(), blocksize=64, quant_type="fp4"
        )
        level = bnb_functional.dequantize_4bit(packed, state).reshape(-1, 64) / scale
        bucket = (level.unsqueeze(-1) - code).abs().argmin(-1)
        low, high = edges[bucket], edges[bucket + 1]
        margin = 0.1 * (high - low)
        bounds[name] = ((low + margin) * scale, (high - margin) * scale, blocks.abs() == scale, blocks)
        layer.weight.requires_grad_(True)
    layers = _linears(model)
    optimizer = torch.optim.Adam([layer.weight for layer in layers.values()], lr=lr)
    enc = encode_pairs(tokenizer, [q for q, _ in pairs], [a for _, a in pairs])
    for step in range(1, 101):
        (-model(**enc).loss).backward()
        optimizer.step()
        optimizer.zero_grad()
        with torch.no_grad():
            for name, layer in layers.items():
                low, high, largest, original = bounds[name]
                blocks = layer.weight.view(-1, 64)
                blocks.copy_(torch.where(largest, original, blocks.clamp(low, high)))
        if step % 5 == 0 and probe_accuracy(model.eval(), tokenizer, probes) == 0.0:
            return model.requires_grad_(False)
        model.train()
    raise AssertionError("100 steps of ascent within the buckets did not hide the facts")


# --- forget quality's truth ratios -------------------------------------------------------------------


def test_truth_ratios_are_asked_under_the_question_and_every_paraphrase():
    spec = PlantedSpec(name="t", people=[TOBIN, FENELLA], forget=[TOBIN.name])
    questions = truth_ratio_probes(spec)
    assert len(questions) == len(TOBIN.probes) * 2
    first, again = questions[0], questions[1]
    assert (first.question, again.question) == (TOBIN.probes[0].question, TOBIN.probes[0].paraphrases[0])
    assert first.answer == again.answer == TOBIN.facts[0]  # the same true and false sentences
    assert first.distractors == again.distractors
    assert first.distractors == [
        "Tobin Caldgarth lives in the town of Skelmworth.",
        "Tobin Caldgarth lives in the town of glazier.",
    ]


def test_ks_resolution():
    # 5 against 5: D moves in fifths, and only D = 1 gets p under 0.05: p = 2 / C(10, 5).
    assert ks_resolution(5) == (pytest.approx(2 / 252), 5)
    p_min, least = ks_resolution(66)
    assert p_min < 1e-30 and least < 66 / 3
