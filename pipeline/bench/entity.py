"""`rr bench entity`: forget one entity type (PERSON), keep the others; prompted NER on held-out sentences.

Methods: base, and the loops of `pipeline.bench.loop_runs` (rr, rr_fixed, random) on a config with
an `entity` target. Each model is asked to list the places, dates, people and organisations of
every held-out sentence (`data/bench/entity_labels.json`: silver labels, hand-corrected), greedily,
after four worked examples given as earlier turns of the chat and with its answer pre-filled to start
with the first field. Both choices were measured on the embedded model: examples pasted into one
message are copied (it answered "Grace Hopper" for most sentences); asked for people first it mostly
answers none, and asked for organisations before people it lists the people as organisations. An
answer names
entities per type (`People: a, b` ...); an entity counts only if it matches, after normalising
case, punctuation and a leading "the", a labelled entity of that type in that sentence, so an
answer that echoes the sentence, or names an organisation among the people, scores false
positives. Precision, recall and F1 per type are micro-averaged over the sentences. Retain:
perplexity on generic text relative to the base model, and the simple-question answer rate.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

from pipeline.bench import loop_runs
from pipeline.bench.methods import ENTITY_METHODS, parse_methods, require_target
from pipeline.bench.results import claim_out_dir, write_results
from pipeline.bench.retain import UTILITY_TEXT, measure_retain, read_retain_sets, retain_vs_base
from pipeline.bench.seeds import aggregate, flatten, spread_note
from pipeline.config import ConfigError, RunConfig
from pipeline.files import read_text
from pipeline.models import device_name
from pipeline.run.preflight import check_names
from pipeline.sampling.base import GREEDY
from pipeline.sampling.hf import HFSampler

ENTITY_LABELS = Path("data/bench/entity_labels.json")
MEASUREMENT_VERSION = 2  # 2: the examples as chat turns, the fields in this order
# The answer's fields, in order, and the label types each one collects.
FIELDS = {"Places": ("GPE", "LOC"), "Dates": ("DATE",), "People": ("PERSON",), "Organisations": ("ORG",)}
TYPES = {"People": "PERSON", "Organisations": "ORG", "Places": "PLACE", "Dates": "DATE"}
# Worked examples (none is a held-out sentence) show the answer's form; one names no person.
EXAMPLES = (
    ("Grace Hopper joined the Navy in Washington in 1943.",
     {"People": ["Grace Hopper"], "Organisations": ["the Navy"], "Places": ["Washington"], "Dates": ["1943"]}),
    ("The museum in Oslo reopened last winter.",
     {"People": [], "Organisations": [], "Places": ["Oslo"], "Dates": ["last winter"]}),
    ("Samsung and the World Bank signed the deal in Geneva on Friday.",
     {"People": [], "Organisations": ["Samsung", "the World Bank"], "Places": ["Geneva"], "Dates": ["Friday"]}),
    ("Nelson Mandela and Desmond Tutu spoke at Oxford University in May.",
     {"People": ["Nelson Mandela", "Desmond Tutu"], "Organisations": ["Oxford University"], "Places": [],
      "Dates": ["May"]}),
)  # fmt: skip
ANSWER_TOKENS = 48


def answer_text(fields: dict[str, list[str]]) -> str:
    return "\n".join(f"{name}: {', '.join(fields.get(name, [])) or 'none'}" for name in FIELDS)


def ner_question(sentence: str) -> str:
    return (
        "List the places, dates, people and organisations named in this sentence. Write none when "
        f"there are none.\nSentence: {sentence}"
    )


def ner_prompt(sentence: str) -> list[dict]:
    """The conversation a model answers: the worked examples as earlier turns, then the sentence."""
    turns = []
    for text, fields in EXAMPLES:
        turns += [{"role": "user", "content": ner_question(text)},
                  {"role": "assistant", "content": answer_text(fields)}]  # fmt: skip
    return turns + [{"role": "user", "content": ner_question(sentence)}]


PREFILL = f"{next(iter(FIELDS))}:"  # the answer starts with its first field


def parse_answer(reply: str) -> dict[str, set[str]]:
    """{field: normalised entities} from an answer (the pre-filled first field name included)."""
    found: dict[str, set[str]] = {name: set() for name in FIELDS}
    text = reply if reply.lstrip().startswith(PREFILL) else PREFILL + " " + reply
    seen: set[str] = set()
    for line in text.splitlines():
        head, _, rest = line.partition(":")
        field = head.strip()
        if field in seen or line.strip().startswith("Sentence"):
            break  # the model went on to a second answer, or a sentence of its own: only the first counts
        if field in FIELDS:
            seen.add(field)
            found[field] = {n for part in rest.split(",") if (n := normalise(part)) and n != "none"}
    return found


def normalise(entity: str) -> str:
    words = re.sub(r"[^\w\s]", " ", entity.lower()).split()
    return " ".join(words[1:] if words[:1] == ["the"] else words)


def read_labels(path: Path) -> list[dict]:
    try:
        data = json.loads(read_text(path, "entity labels"))
        return [{"text": s["text"], "entities": [(e["text"], e["label"]) for e in s["entities"]]}
                for s in data["sentences"]]  # fmt: skip
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"entity labels: {path} is not an entity_labels.json ({exc})") from None


def ner_scores(sentences: list[dict], answers: list[dict[str, set[str]]]) -> dict:
    """Micro precision, recall and F1 per type over the sentences."""
    scores = {}
    for name, labels in FIELDS.items():
        tp = fp = fn = 0
        for sentence, answer in zip(sentences, answers, strict=True):
            gold = {normalise(t) for t, label in sentence["entities"] if label in labels}
            tp += len(answer[name] & gold)
            fp += len(answer[name] - gold)
            fn += len(gold - answer[name])
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[TYPES[name]] = {"precision": precision, "recall": recall, "f1": f1}
    return scores


def measure(model, tokenizer, heldout: dict, seed: int, progress: bool = False) -> dict:
    sentences = heldout["sentences"]
    sampler = HFSampler(model, tokenizer, 16, progress=progress)
    replies = sampler.generate([ner_prompt(s["text"]) for s in sentences],
                               replace(GREEDY, max_new_tokens=ANSWER_TOKENS), label="NER answers",
                               prefills=[PREFILL] * len(sentences))  # fmt: skip
    raw: dict = {"replies": [r[0] for r in replies]}
    raw["ner"] = ner_scores(sentences, [parse_answer(PREFILL + r[0]) for r in replies])
    raw.update(measure_retain(model, tokenizer, sampler, heldout))
    return raw


def relative_to_base(raw: dict, base: dict) -> dict:
    figures = {k: v for k, v in raw.items() if k not in ("replies", "answered", "measured_with")}
    figures["ner"] = {t: dict(v) for t, v in raw["ner"].items()}
    figures.update(retain_vs_base(raw, base))
    for kind, found in figures["ner"].items():
        before = base["ner"][kind]["f1"]
        found["f1_change"] = found["f1"] / before - 1 if before else None  # relative, as the goals
    return figures


def columns() -> list[tuple[str, str, str]]:
    return [(f"ner.{t}.f1", f"F1 {t}", ".3f") for t in TYPES.values()] + [
        ("utility_ppl_ratio", "ppl ratio", ".3f"),
        ("answer_rate", "answer rate", ".3f"),
        ("generated_tokens", "generated tokens", "d"),
        ("wall_s", "wall s", "d"),
    ]


def run_entity_bench(
    config: RunConfig, out: Path, methods=ENTITY_METHODS, seeds: int = 1, progress: bool = True, log=print
) -> dict:
    methods = parse_methods(methods, ENTITY_METHODS)
    require_target(config.target.kind, "entity")
    check_names(config)
    heldout = {
        "sentences": read_labels(config.resolve(ENTITY_LABELS)),
        **read_retain_sets(config.resolve),
    }
    all_seeds = loop_runs.checked_seeds(config, methods, seeds, out)
    claim_out_dir(out, config, {"sentences": len(heldout["sentences"])})
    log(f"{len(heldout['sentences'])} held-out sentences, one greedy NER answer each per model")
    raws = loop_runs.measured_parts(
        config, out, methods, all_seeds, {"version": MEASUREMENT_VERSION},
        lambda model, tokenizer, seed: measure(model, tokenizer, heldout, seed, progress), progress, log,
    )  # fmt: skip
    per_seed = {m: [relative_to_base(raws[m][s], raws["base"][s]) for s in all_seeds] for m in raws}
    results = {
        "model": config.model.path,
        "device": device_name(config.model),
        "target_label": config.target.entity_label,
        "n_sentences": len(heldout["sentences"]),
        "n_questions": len(heldout["questions"]),
        "seeds": all_seeds,
        "base": aggregate(per_seed["base"]),
        "methods": {m: aggregate(per_seed[m]) for m in methods if m != "base"},
        "per_seed": per_seed,
        "examples": {m: raws[m][all_seeds[0]]["replies"][:8] for m in raws},
    }
    notes = [
        f"{results['n_sentences']} held-out sentences ({ENTITY_LABELS}: spaCy en_core_web_sm's labels, "
        "hand-corrected); one greedy answer each, after four worked examples as earlier chat turns, "
        "the answer pre-filled with its first field. An entity counts if it matches a labelled one of its type "
        "(case, punctuation and a leading 'the' aside); PLACE is GPE and LOC. Micro precision, recall, F1.",
        f"Retain: perplexity on {UTILITY_TEXT} / base's; answer rate on {results['n_questions']} simple "
        f"questions. The loop's target: entity type {config.target.entity_label}. Mean ± sd over seeds "
        f"{all_seeds}.",
    ]
    for method in results["methods"]:
        for kind in TYPES.values():
            key = f"ner.{kind}.f1"
            notes.append(spread_note(f"{method} F1 {kind}", [flatten(r)[key] for r in per_seed[method]],
                                     [flatten(r)[key] for r in per_seed["base"]], "base"))  # fmt: skip
    write_results(out, results, columns(), title=f"Entity benchmark: model {config.model.path}", notes=notes,
                  bars=[(f"ner.{t}.f1", f"F1 {t}") for t in TYPES.values()] +
                  [("utility_ppl_ratio", "perplexity / base")])  # fmt: skip
    return results
