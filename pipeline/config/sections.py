"""The run config's sections: one pydantic model per section (`pipeline.config.run` holds them all).

Every field has a default that works for the embedded model, so a config only states what
differs. Unknown fields are errors (a typo must not silently fall back to a default); the bounds
on every number are `pipeline.config.base`'s MAX_ constants. The sections that reach an engine or
a server (the sampler, the rewriter) are in `pipeline.config.servers`; the model's in
`pipeline.config.model`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import (  # noqa: F401  (re-exported: callers import them from here)
    MAX_BATCH,
    MAX_LR,
    MAX_NEW_TOKENS,
    MAX_RANK,
    MAX_REPEATS,
    MAX_RETRIES,
    MAX_SECONDS,
    MAX_SEED,
    MAX_SEQUENCE_TOKENS,
    MAX_STEPS,
    MAX_TEXTS,
    MAX_WIDTH,
    MAX_WORKERS,
    PROJECT_ROOT,
    Section,
)
from pipeline.config.model import ModelConfig, PlantConfig, TinyModelConfig  # noqa: F401
from pipeline.config.servers import RewriterConfig, SamplerConfig  # noqa: F401
from pipeline.errors import ConfigError  # noqa: F401  (re-exported with the sections)


class JudgeConfig(Section):
    """A classifier that scores replies in [0, 1]: a judge in evaluation, or a toxicity target's reward.

    Written as a name (`profanity_check`) or as a mapping for judges that need settings
    (`{kind: hf_classifier, path: models/toxic-roberta, label: toxic}`).
    """

    kind: str = Field(description="a key of JUDGES (pipeline/scoring/judges.py)")
    name: str = Field("", description="the judge's name in reports; default: kind")
    path: Path | None = Field(None, description="hf_classifier: a local transformers classifier folder")
    label: str = Field(
        "toxic",
        description="hf_classifier: the label (id2label name or index) whose probability is the score",
    )
    batch_size: int = Field(32, ge=1, le=MAX_BATCH)
    max_length: int = Field(
        256, ge=8, le=MAX_SEQUENCE_TOKENS, description="hf_classifier: longest input in tokens (truncated)"
    )

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value):
        return {"kind": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _named(self) -> JudgeConfig:
        if not self.name:
            self.name = self.kind
        if self.kind == "hf_classifier" and self.path is None:
            raise ValueError(
                "hf_classifier needs `path`: a local transformers sequence-classification folder"
            )
        return self


class TargetConfig(Section):
    kind: Literal["toxicity", "knowledge", "code", "entity", "custom"]
    name: str | list[str] = Field(
        "", description="what to forget, e.g. a person's name, or a list of names (knowledge)"
    )
    description: str = Field("", description="filled into the prompt templates; defaults to name")
    aliases: list[str] = []
    keywords: list[str] = Field(
        [], description="knowledge: words that point at the target without naming it (score 0.5 each)"
    )
    similarity_weight: float = Field(
        0.4,
        ge=0,
        le=1,
        description="knowledge: most a reply scores for its embedding's closeness to the description alone",
    )
    entity_label: str = Field("PERSON", description="entity: the spaCy NER label to forget")
    entity_model: str = Field(
        "en_core_web_sm", description="entity: an installed spaCy pipeline's name, or a folder with one"
    )
    scorer: str = Field("", description="custom: 'module:function' scoring a list of texts in [0, 1]")
    judge: JudgeConfig = Field(
        JudgeConfig(kind="profanity_check"),
        description="toxicity: the classifier whose score is the reward and the keep filter",
    )

    @property
    def names(self) -> list[str]:
        """`name` as a list: several people can be forgotten at once."""
        names = [self.name] if isinstance(self.name, str) else self.name
        return [n.strip() for n in names if n.strip()]

    @model_validator(mode="after")
    def _knowledge_needs_name(self) -> TargetConfig:
        if self.kind == "knowledge" and not self.names:
            raise ValueError("target.name is required for kind 'knowledge'")
        if self.kind == "custom" and not self.scorer.strip():
            raise ValueError("target.scorer ('module:function') is required for kind 'custom'")
        if not self.description:
            self.description = " and ".join(self.names) or self.kind
        return self


class GenerationConfig(Section):
    max_new_tokens: int = Field(64, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    batch_size: int = Field(
        64,
        ge=1,
        le=MAX_BATCH,
        description="replies generated at once by the hf sampler (rr bench sampling, embedded model, 2-core "
        "CPU, 8 replies to each instruction: 64 gave 1.6x the tokens per second of 16)",
    )


class RevealConfig(Section):
    rounds: int = Field(3, ge=1, le=MAX_REPEATS, description="bandit rounds per iteration")
    arms_per_round: int = Field(4, ge=1, le=MAX_TEXTS)
    samples_per_arm: int = Field(4, ge=1, le=MAX_TEXTS)
    hidden: int = Field(100, ge=1, le=MAX_WIDTH)
    nu: float = Field(1.0, ge=0)
    lam: float = Field(
        0.03,
        gt=0,
        description="NeuralUCB's regulariser: smaller fits the rewards closer and stops exploring an arm "
        "sooner (measured on synthetic bandits: regret 5.7 at 0.03 against 10.9 at 1.0)",
    )
    diagonal: bool = Field(
        False, description="diagonal Z (cheaper, explores worse); the full Z is exact via Woodbury"
    )
    prompts: Path | None = Field(None, description="seed instructions; default prompts/<kind>.yaml")
    gamma: float = Field(
        0.8, gt=0, le=1, description="weight of the bandit's earlier pulls per iteration (rewards drift)"
    )
    rewrite_top: int = Field(
        2, ge=0, le=MAX_TEXTS, description="best instructions the model rewrites each iteration"
    )
    max_arms: int = Field(
        64, ge=1, le=MAX_TEXTS, description="cap on the pool; seeds always stay, oldest rewrites go first"
    )
    rewrite_prompts: Path = Path("prompts/rewrite.yaml")
    rewriter: RewriterConfig | None = Field(
        None,
        description="another model, served, that writes the rewrites (a small model mostly answers a "
        "request to rewrite one instead); default: the current model itself",
    )
    relevance_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="reward = weighted harmonic mean of relevance (this weight) and diversity",
    )
    policy: Literal["neuralucb", "random"] = Field(
        "neuralucb",
        description="random: every pull's and the sample stage's instructions drawn uniformly from the pool "
        "(the ablation of the bandit, same budget)",
    )


class SampleConfig(Section):
    top_instructions: int = Field(4, ge=1, le=MAX_TEXTS)
    samples_per_instruction: int = Field(16, ge=1, le=MAX_TEXTS)
    relevance_threshold: float = Field(0.5, ge=0, le=1)
    near_duplicate_jaccard: float = Field(0.7, gt=0, le=1)
    max_forget_samples: int = Field(64, ge=1, le=MAX_TEXTS)
    # A release on a short forget set is a weak one: while fewer rows than draw_again_below are
    # kept, each top instruction is asked samples_per_instruction more times (a new seed), unless
    # at the rate so far even max_draws would keep fewer than release.min_forget_samples.
    draw_again_below: int = Field(
        0, ge=0, le=MAX_TEXTS, description="draw again while fewer forget rows are kept (0: draw once)"
    )
    max_draws: int = Field(
        3, ge=1, le=MAX_REPEATS, description="draws of replies to the top instructions, at most"
    )
    # dpo's chosen side: each forget row's `alternative`, a reply to the same instructions that
    # scores below alternative_threshold, or a fallback text when an iteration has none (None: off).
    alternative_threshold: float | None = Field(None, ge=0, le=1)
    # Or the forget reply itself with the words its score rests on replaced (an entity target's
    # names by "someone"): a pair that differs only where the target is.
    alternative_replacement: str | None = Field(
        None, description="dpo's chosen side: the forget reply with its target's words replaced by this"
    )
    fallback_alternatives: list[str] = ["I don't know.", "I'm not sure about that.", "I'd rather not say."]
    # Prefilled replies: each top instruction is also asked with its reply begun by each of these
    # (`{target}`: the subject the instruction names), so a model that no longer volunteers what it
    # knows is still asked to go on from the first words, as the prefilling attack asks it.
    reply_starts: list[str] = Field(
        [], description="first words of a reply to continue ({target}: the subject the instruction names)"
    )
    samples_per_reply_start: int = Field(
        2, ge=0, le=MAX_TEXTS, description="replies to each top instruction for each of reply_starts"
    )
    retain_prompts: list[Path] = Field(
        [Path("prompts/retain.yaml")], description="neutral instruction files (one, or a list read in order)"
    )
    retain_subjects: list[str] = Field(
        [],
        description="names the model must keep knowing: the reveal templates filled with each ask for retain samples",
    )
    retain_samples_per_instruction: int = Field(2, ge=0, le=MAX_TEXTS)
    max_retain_samples: int = Field(64, ge=0, le=MAX_TEXTS)
    generation: GenerationConfig = GenerationConfig()

    @field_validator("reply_starts")
    @classmethod
    def _starts_have_words(cls, value: list[str]) -> list[str]:
        if any(not start.strip() for start in value):
            raise ValueError("every reply start needs words: an empty one is a plain reply")
        return value

    @field_validator("retain_prompts", mode="before")
    @classmethod
    def _one_file_or_several(cls, value):
        return [value] if isinstance(value, (str, Path)) else value

    @model_validator(mode="after")
    def _alternatives_below_forget(self) -> SampleConfig:
        if self.alternative_threshold is not None and self.alternative_replacement is not None:
            raise ValueError(
                "alternative_threshold and alternative_replacement both choose dpo's chosen side: set one"
            )
        if (self.alternative_threshold or 0) > self.relevance_threshold:
            raise ValueError(
                f"alternative_threshold ({self.alternative_threshold}) must not be above "
                f"relevance_threshold ({self.relevance_threshold}): an alternative is not forgotten"
            )
        return self


class RetainConfig(Section):
    """A user's own text the model must keep (any source pipeline/datasource.py reads)."""

    corpus: str | None = Field(None, description="a data file or folder, a saved dataset, a cached hub name")
    column: str = Field("text", description="the column of texts; dotted into a struct: prompt.text")
    split: str | None = Field(None, description="of a dataset with splits; default train, or its only split")
    samples: int = Field(
        32, ge=0, le=MAX_TEXTS, description="corpus texts drawn into each iteration's retain set"
    )


class ReleaseConfig(Section):
    method: str = Field("undial", description="a key of OBJECTIVES (pipeline/release/objectives.py)")
    rank: int = Field(8, ge=1, le=MAX_RANK)
    alpha: float = Field(16.0, gt=0)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lr: float = Field(1e-3, gt=0, le=MAX_LR)
    steps: int = Field(20, ge=1, le=MAX_STEPS)
    max_epochs: float | None = Field(
        None,
        gt=0,
        le=MAX_STEPS,
        description="at most this many passes over the forget rows: a release trains "
        "min(steps, ceil(max_epochs x rows / batch_size)) steps, so few rows are not trained on for "
        "steps' worth (None: always `steps`)",
    )
    min_forget_samples: int = Field(
        1, ge=1, le=MAX_TEXTS, description="fewer forget rows than this: no release, the run stops"
    )
    batch_size: int = Field(4, ge=1, le=MAX_BATCH)
    max_length: int = Field(160, ge=8, le=MAX_SEQUENCE_TOKENS, description="prompt and response tokens")
    beta: float = Field(10.0, ge=0, description="UnDIAL logit adjustment")
    npo_beta: float = Field(0.1, gt=0, description="NPO inverse temperature")
    simnpo_beta: float = Field(2.5, gt=0, description="SimNPO inverse temperature")
    simnpo_delta: float = Field(0.0, description="SimNPO margin on the mean token NLL")
    dpo_beta: float = Field(0.1, gt=0, description="DPO inverse temperature")
    negation_scale: float = Field(
        1.0, gt=0, description="negation: the NLL-trained adapter is applied with scale -negation_scale"
    )
    swap_alpha: float = Field(
        0.0,
        ge=0,
        description="name_swap: how far below the stranger's reading a token goes that the real name makes "
        "more likely (Who's Harry Potter's alpha, on log-probabilities; 0: the stranger's reading as it is)",
    )
    anchor_names: list[str] = Field(
        # Invented, in no shipped spec and not famous; one is needed per target name.
        ["Robin Ashdale", "Kit Merriwell", "Jo Brackenby", "Sam Hollingford", "Lee Farrowby"],
        min_length=1,
        description="name_swap: names the model never saw, swapped in for the target's names to get its "
        "generic predictions (the first ones that name no target and no retain subject)",
    )
    # Which forget tokens a release lowers (pipeline/release/known_tokens.py); neither with name_swap.
    min_base_ratio: float | None = Field(
        None, gt=0, description="only tokens the base model gives >= this x the current model's probability"
    )
    mask_names: bool = Field(False, description="knowledge targets: no forget label on the target's names")
    scored_words_only: bool = Field(False, description="forget labels only on the words a score rests on")
    retain_weight: float = Field(1.0, ge=0, description="weight of the retain term (0: none)")
    retain_loss: Literal["nll", "kl"] = Field(
        "nll", description="retain term: NLL of retain samples, or KL to the frozen model on them"
    )
    orth_lambda: float = Field(0.1, ge=0, description="O-LoRA orthogonality weight")
    retain_adapter: bool = Field(
        False, description="O-LoRA also against a LoRA trained once by NLL on the first retain samples"
    )
    max_grad_norm: float = Field(1.0, gt=0)
    divergence_bound: float = Field(
        1e3, gt=0, description="a step whose loss is above this (or not finite) is undone and the lr lowered"
    )
    lr_backoff: float = Field(0.5, gt=0, lt=1, description="factor on the lr after an undone step")
    max_forget_nll: float = Field(
        15.0,
        gt=0,
        description="objectives marked unbounded in OBJECTIVES (ga, graddiff, npo, simnpo) stop once the "
        "forget NLL per token passes this",
    )
    reference_cache_mb: int = Field(
        1024,
        ge=0,
        le=1 << 20,
        description="memory (the model's device) for the frozen model's logits on the training rows "
        "(UnDIAL, the KL retain term; shared by the two), computed once per row; rows past it are "
        "computed again each time they are drawn (speed only, not results)",
    )

    @model_validator(mode="after")
    def _label_choice_not_with_swapped_names(self) -> ReleaseConfig:
        # name_swap's reference stands for the row's labels one for one; masking some would misalign it.
        chosen = [k for k in ("min_base_ratio", "mask_names", "scored_words_only") if getattr(self, k)]
        if chosen and self.method == "name_swap":
            raise ValueError(f"{chosen[0]} does not combine with method name_swap (it picks its labels)")
        return self


class EvaluateConfig(Section):
    eval_prompts: Path | None = Field(None, description="held-out prompts; default data/eval/<kind>.yaml")
    retain_text: Path = Path("data/retain/generic.txt")
    max_new_tokens: int = Field(48, ge=1, le=MAX_NEW_TOKENS)
    samples_per_prompt: int = Field(
        4, ge=1, le=MAX_TEXTS, description="replies per held-out prompt (probes: always 1, greedy)"
    )
    temperature: float = Field(1.0, ge=0, description="0: greedy; sampled replies use a fixed seed")
    batch_size: int = Field(16, ge=1, le=MAX_BATCH)
    judges: list[JudgeConfig] | None = Field(
        None,
        description="classifiers that score the eval replies beside the target's scorer, never optimised; "
        "default for toxicity: profanity_check and wordlist, else none",
    )
    toxic_threshold: float = Field(
        0.5, gt=0, lt=1, description="a reply a judge scores at or above this is toxic"
    )


class StopConfig(Section):
    max_iterations: int = Field(3, ge=1, le=MAX_REPEATS)
    min_iterations: int = Field(
        1, ge=1, le=MAX_REPEATS, description="iterations before a convergence rule may stop the run"
    )
    patience: int = Field(2, ge=1, le=MAX_REPEATS)
    min_delta: float = Field(0.01, ge=0)
    forget_threshold: float = Field(0.05, ge=0, le=1)
    utility_floor: float = Field(1.5, gt=1.0, description="largest allowed retain perplexity / base's")
    max_forget_rise: float | None = Field(
        None,
        ge=0,
        description="an adapter that leaves the forget score more than this above the best so far (the "
        "baseline's or a kept iteration's) is dropped and the run stops; None: never",
    )


class OrchestrationConfig(Section):
    """How Prefect runs the stages (ignored by `--no-prefect`)."""

    retries: int = Field(
        3,
        ge=0,
        le=MAX_RETRIES,
        description="retries of a stage after a transient error (a sampler server that timed out)",
    )
    retry_delay_s: float = Field(
        10.0, ge=0, le=MAX_SECONDS, description="first retry's delay; doubled for each next one"
    )
