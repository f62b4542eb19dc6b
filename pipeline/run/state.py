"""What stays loaded for a whole run, and what measures a target: `RunState`, `EarlierTarget`."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import RunConfig
from pipeline.files import read_lines
from pipeline.planting.examples import plant_questions
from pipeline.planting.spec import load_spec
from pipeline.reveal.features import embed_texts
from pipeline.run.base_run import base_chain
from pipeline.run.model import load_run_model
from pipeline.run.preflight import check_names, read_retain_corpus
from pipeline.run.prompts import read_retain_prompts, run_prompts
from pipeline.run.rundir import RunDir
from pipeline.sampling import make_sampler
from pipeline.sampling.chat import ChatClient
from pipeline.sampling.hf import HFSampler
from pipeline.scoring import make_scorer
from pipeline.scoring.judges import make_judges

# Randomness is seeded per (run seed, iteration, stage): a resumed run makes the same choices.
STAGE_SEEDS = {
    "reveal": 1,
    "sample": 2,
    "retain": 3,
    "release": 4,
    "evaluate": 5,
    "rewrite": 6,
    "corpus": 7,
    "reply_start": 8,
}


def _uses_rewriter(config: RunConfig) -> bool:
    return config.reveal.rewriter is not None and config.reveal.rewrite_top > 0


class RunState:
    """What stays loaded for a whole run: config, model, sampler, scorer, instruction pool.

    A plain class on purpose (not a dataclass): Prefect walks dataclass task arguments, and
    there is nothing in here for it to look at.
    """

    def __init__(self, config: RunConfig, progress: bool = True, repeat: int = 0) -> None:
        check_names(config)  # before the model loads: a misspelt objective fails in a second
        self.config = config
        self.progress = progress
        self.repeat = repeat  # a benchmark's repeat: other reveal and sampling draws, same evaluation
        self.files = RunDir(config.run_dir)
        self.spec = load_spec(config.model.plant.spec) if config.model.plant else None
        self.arms, self.retain_instructions, self.eval_prompts = run_prompts(config)
        self.retain_corpus = read_retain_corpus(config)  # read once: each iteration draws from it
        # A run on top of earlier ones (`base_run`) starts from the nearest one's stacked adapter.
        self.base_runs = base_chain(config)
        self.base_adapter = RunDir(config.base_run).adapter if config.base_run else None
        self.model, self.tokenizer, self.model_info = load_run_model(config, progress)
        # Scoring (perplexity, likelihoods) always runs on the transformers model; generation on
        # the configured sampler, which is this one for `sampler.backend: hf`.
        self.hf_sampler = HFSampler(self.model, self.tokenizer, config.sample.generation.batch_size, progress)
        self.sampler = (
            self.hf_sampler
            if config.sampler.backend == "hf"
            else make_sampler(config, self.model, self.tokenizer, self.model_info["name_or_path"], progress)
        )
        # Another model that writes the reveal stage's rewrites, if one is configured.
        self.rewriter = ChatClient(config.reveal.rewriter) if _uses_rewriter(config) else None
        self.scorer = target_scorer(config, self)
        self.judges = make_judges(config.eval_judges())  # reported, never optimised
        self.forget_probes, self.retain_probes = probes(config, self.spec)
        self.retain_texts, self.retain_text_prompts = self._retain_text()

    def _retain_text(self):
        """Reference text for utility: the other people's facts as answers to their probes (planted),
        else the lines of `evaluate.retain_text`."""
        if self.retain_probes:
            pairs = [
                (probe.question, person.fact_for(probe))
                for person in other_people(self.config, self.spec)
                for probe in person.probes
            ]
            return [fact for _, fact in pairs], [question for question, _ in pairs]
        path = self.config.resolve(self.config.evaluate.retain_text)
        return read_lines(path, "evaluate.retain_text"), None

    def model_with(self, adapter: Path | None):
        """The transformers model with `adapter` merged in (cached while the adapter is unchanged)."""
        return self.hf_sampler.model_for(adapter)

    def stack_dir(self) -> Path | None:
        """The stacked adapter of all kept iterations so far; before the first, the base run's, or None.

        The last kept iteration's own `stack/`, not the run's `adapter/` (a copy of it): the stack
        follows from the committed iterations alone, so a resume that discards some cannot start
        from an adapter that still holds them.
        """
        kept = kept_iterations(self)
        return self.files.iteration(kept[-1]).stack if kept else self.base_adapter

    def seed(self, t: int, stage: str) -> int:
        return (self.config.seed + 7919 * self.repeat) * 1_000_003 + t * 101 + STAGE_SEEDS[stage]


def target_scorer(config: RunConfig, state: RunState):
    """The scorer of `config`'s target; texts are embedded by the run's base model."""
    return make_scorer(
        config.target,
        embed=lambda texts: embed_texts(state.model, state.tokenizer, texts),
        neutral=read_retain_prompts(config),
    )


def other_people(config: RunConfig, spec) -> list:
    forget = {name.lower() for name in config.target.names}
    return [p for p in spec.planted() if p.name.lower() not in forget]


def probes(config: RunConfig, spec) -> tuple[list, list]:
    """Planted people: the forget people's probes measure forgetting, the others' retention.

    The loop asks each probe in the first wording it was planted with (`plant_questions`), never
    in its own question or paraphrases: those are what `rr bench planted` measures, and the loop
    decides on its forget score (stop, drop an adapter), so a benchmark that asked the same
    questions would measure partly what the loop chose on.
    """
    if spec is None or config.target.kind != "knowledge":
        return [], []

    def asked(person) -> list:
        return [p.model_copy(update={"question": plant_questions(person, p)[0]}) for p in person.probes]

    forget = [probe for name in config.target.names for probe in asked(spec.person(name))]
    return forget, [probe for person in other_people(config, spec) for probe in asked(person)]


class EarlierTarget:
    """What measures an earlier run's target: its held-out prompts or probes, and its scorer."""

    def __init__(self, config: RunConfig, state: RunState) -> None:
        self.config = config
        spec = load_spec(config.model.plant.spec) if config.model.plant else None
        self.forget_probes, self.retain_probes = probes(config, spec)
        self.eval_prompts = run_prompts(config)[2]
        self.scorer = target_scorer(config, state)
        self.judges = make_judges(config.eval_judges())


def completed_iterations(state: RunState) -> list[dict]:
    """Metrics of the iterations that finished, in order, without their checksums (`chain`).

    Read as they are: the loop checked them when the run started (`pipeline.run.chain.walk`),
    and holds the run's lock since.
    """
    done, t = [], 1
    while (path := state.files.iteration(t).metrics).is_file():
        metrics = json.loads(path.read_text())
        metrics.pop("chain", None)
        done.append(metrics)
        t += 1
    return done


def kept_iterations(state: RunState) -> list[int]:
    """Iterations whose adapter is part of the stack (a dropped one broke the utility floor)."""
    return [
        t
        for t, metrics in enumerate(completed_iterations(state), start=1)
        if metrics.get("kept", True) and state.files.iteration(t).adapter.is_dir()
    ]
