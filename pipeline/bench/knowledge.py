"""What one model knows about the planted people: the planted benchmark's measurements, under attack.

`measure` takes the raw figures of one model (probe accuracy, the attacks of
`pipeline.bench.attacks`, TOFU's truth ratios, MUSE's VerbMem and Min-K%, utility); `compare`
turns them into the benchmark's metrics against the planted and the retain-only models. The
requests it asks with (`HELD_OUT_REQUEST`) are in no planting text, reveal seed or eval prompt.
"""

from __future__ import annotations

import re
import statistics
import warnings

from pipeline.bench import attacks
from pipeline.bench.metrics import auc, forget_quality, min_k_percent_score, privleak, truth_ratios, verbmem
from pipeline.evaluation.metrics import perplexity
from pipeline.planting.examples import HELD_OUT_REQUEST
from pipeline.planting.plant import probe_accuracy
from pipeline.planting.spec import Person, PlantedSpec, Probe

# Saved with every measurement (parts/*.json), which is redone when it differs: raise it when `measure` changes.
MEASUREMENT_VERSION = 3


def measure(
    model, tokenizer, spec: PlantedSpec, utility_texts: list[str], batch_size: int = 8,
    relearn: attacks.RelearnSettings = attacks.RelearnSettings(),
) -> dict:  # fmt: skip
    """What one model knows: the raw measurements, before they are compared with other models.

    With the attacks of `pipeline.bench.attacks` on the forget people (4-bit also on the retain
    probes); `model` is not changed.
    """
    forgotten = spec.forgotten()
    forget_probes = [probe for person in forgotten for probe in person.probes]
    retain_probes = [probe for person in spec.retained() for probe in person.probes]
    forget_facts = [fact for person in forgotten for fact in person.facts]
    recital_requests = [
        HELD_OUT_REQUEST.format(name=person.name) for person in forgotten for _ in person.facts
    ]
    ratios = truth_ratios(model, tokenizer, truth_ratio_probes(spec))
    forget_4bit, retain_4bit = attacks.quantized_accuracy(model, tokenizer, [forget_probes, retain_probes])
    raw = {
        "forget_probe_acc": probe_accuracy(model, tokenizer, forget_probes),
        "retain_probe_acc": probe_accuracy(model, tokenizer, retain_probes),
        "paraphrase_probe_acc": attacks.paraphrase_accuracy(model, tokenizer, forget_probes),
        "prefill_probe_acc": attacks.prefill_accuracy(model, tokenizer, forgotten),
        "relearn_acc": attacks.relearn_accuracy(model, tokenizer, forgotten, relearn),
        "quantized_forget_acc": forget_4bit,
        "quantized_retain_acc": retain_4bit,
        "forget_truth_ratios": ratios,
        "forget_truth_ratio": statistics.fmean(ratios) if ratios else None,
        "verbmem": verbmem(model, tokenizer, forget_facts, questions=recital_requests),
        "utility_ppl": perplexity(model, tokenizer, utility_texts, batch_size=batch_size),
        "mia_auc": None,
    }
    if spec.held_out():
        # Min-K% membership attack: forget facts (members) against unseen ones, each as the reply
        # to a request about its person, the form the facts were planted in.
        def scores(people):
            return [
                min_k_percent_score(model, tokenizer, fact, prompt=HELD_OUT_REQUEST.format(name=person.name))
                for person in people
                for fact in person.facts
            ]

        raw["mia_auc"] = auc(scores(spec.forgotten()), scores(spec.held_out()))
    return raw


def truth_ratio_probes(spec: PlantedSpec) -> list[Probe]:
    """The forget probes' truth-ratio questions: each probe's sentences under its question and paraphrases.

    A paraphrase asks for the same fact, so the true and false sentences (`sentence_probe`) stay and
    only the question changes: more truth ratios for forget quality's KS test (with 5, one a probe of
    planted_small, no p-value is under 2 / C(10, 5) = 0.0079). The wordings of one fact are not
    independent samples, so the p-value is somewhat optimistic; the notes say so.
    """
    questions = []
    for person in spec.forgotten():
        for probe in person.probes:
            if probe.distractors:
                sentences = sentence_probe(person, probe)
                questions.append(sentences)
                questions += [sentences.model_copy(update={"question": q}) for q in probe.paraphrases]
    return questions


def sentence_probe(person: Person, probe: Probe) -> Probe:
    """The probe as whole sentences: its fact against the fact with each distractor in place of the answer.

    TOFU compares a paraphrased answer with perturbed ones; a planted model learned whole facts as
    replies, so a bare answer word is an unlikely reply whether true or false, and the ratio would
    measure the phrasing instead of the knowledge.
    """
    fact = person.fact_for(probe)
    answer = re.compile(re.escape(probe.answer), re.IGNORECASE)
    return Probe(
        question=probe.question,
        answer=fact,
        distractors=[answer.sub(lambda _, d=d: d, fact, count=1) for d in probe.distractors],
    )


def compare(raw: dict, planted: dict, retain_only: dict) -> dict:
    """The benchmark's metrics of one model, from its measurements and the two references'."""
    metrics = {k: v for k, v in raw.items() if k not in ("forget_truth_ratios", "measured_with")}
    metrics["forget_quality"] = (
        forget_quality(raw["forget_truth_ratios"], retain_only["forget_truth_ratios"])
        if raw["forget_truth_ratios"]
        else None
    )
    metrics["privleak"] = (
        privleak(raw["mia_auc"], retain_only["mia_auc"]) if raw["mia_auc"] is not None else None
    )
    # What relearning brought back beyond what it teaches a model that never knew the facts.
    both = raw["relearn_acc"] is not None and retain_only["relearn_acc"] is not None
    metrics["relearn_gap"] = raw["relearn_acc"] - retain_only["relearn_acc"] if both else None
    metrics["utility_ppl_ratio"] = raw["utility_ppl"] / planted["utility_ppl"]
    # Six significant digits, not decimals: forget quality's p-values reach 1e-8 and below.
    return {k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in metrics.items()}


def ks_resolution(n: int) -> tuple[float, int]:
    """Two-sample KS, n against n: (the smallest p-value, at D = 1; the least k with p < 0.05 at D = k/n)."""
    from scipy.stats import ks_2samp  # here: scipy.stats takes ~1 s to import

    p_value = lambda k: float(ks_2samp(range(n), [i + k for i in range(n)]).pvalue)  # noqa: E731
    with warnings.catch_warnings():  # scipy falls back from its exact p-value for large n, and says so
        warnings.simplefilter("ignore", RuntimeWarning)
        return p_value(n), next(k for k in range(1, n + 1) if p_value(k) < 0.05 or k == n)
