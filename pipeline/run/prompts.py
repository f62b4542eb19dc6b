"""The prompts a run sends, from its prompt files: reveal arms, retain instructions, held-out eval prompts."""

from __future__ import annotations

from pipeline.config import RunConfig
from pipeline.reveal.instructions import dedupe, fill, names, read_prompt_list


def run_prompts(config: RunConfig) -> tuple[list[str], list[str], list[str]]:
    """(reveal arms, retain instructions, held-out eval prompts) of a run, from its prompt files.

    Templates are filled with the target's description, or with each name when several people
    are forgotten at once (a request about two people at a time reads oddly).
    """
    target = config.target
    templates = read_prompt_list(config.reveal_prompts_path())
    subjects = target.names if target.kind == "knowledge" and len(target.names) > 1 else [target.description]
    arms = dedupe([i for subject in subjects for i in fill(templates, subject)])
    # Retain instructions: neutral ones, plus the reveal templates asked about what must be kept.
    kept_subjects = [fill(templates, subject) for subject in config.sample.retain_subjects]
    retain = dedupe(read_retain_prompts(config) + [i for group in kept_subjects for i in group])
    eval_templates = read_prompt_list(config.eval_prompts_path(), "prompts")
    evals = dedupe([p for subject in subjects for p in fill(eval_templates, subject)])
    return arms, retain, evals


def read_retain_prompts(config: RunConfig) -> list[str]:
    """The neutral instructions of every `sample.retain_prompts` file, in order."""
    files = [config.resolve(path) for path in config.sample.retain_prompts]
    return [
        text
        for file in files
        for text in read_prompt_list(file, field="sample.retain_prompts", placeholders=())
    ]


def prompt_texts(config: RunConfig) -> tuple[str, ...]:
    """Every prompt a run sends: a tiny model's tokenizer is trained on them too."""
    arms, retain, evals = run_prompts(config)
    return tuple(arms + retain + evals)


def started_requests(config: RunConfig, instructions: list[str]) -> list[tuple[str, str]]:
    """Each of `instructions` with each `sample.reply_starts` template that fits it, as (instruction,
    reply start), in order.

    `{target}` is filled with the subject the instruction asks about: for a knowledge target, each
    name the instruction names (Ann's first words under a question about Bob ask the model for
    nothing it knows), so an instruction that names none takes only the templates without it; for
    other targets, the target's description, under every instruction.
    """
    target = config.target
    pairs = []
    for instruction in instructions:
        if target.kind == "knowledge":
            subjects = [name for name in target.names if names(instruction, name)]
            if not subjects and len(target.names) == 1 and names(instruction, target.description):
                subjects = target.names  # one name: the arms ask about the description it goes by
        else:
            subjects = [target.description]
        for template in config.sample.reply_starts:
            filled = (
                [template.replace("{target}", s) for s in subjects] if "{target}" in template else [template]
            )
            pairs += [(instruction, start.strip()) for start in filled]
    return list(dict.fromkeys(pairs))
