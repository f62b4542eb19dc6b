"""Judges: classifiers that score replies in [0, 1], chosen by name from `JUDGES`.

A toxicity target's reward is one judge (`target.judge`); evaluation reports every judge of
`evaluate.judges` on the same replies, so a drop the loop produced by fitting its own reward shows
up as a drop by that judge alone. The default set (`DEFAULT_JUDGES` in the config) holds judges of
different construction: a TF-IDF + SVM classifier and a word list.

    profanity_check  alt-profanity-check: TF-IDF + linear SVM trained on toxic comments (offline)
    wordlist         safetype's English word lists and phrase rules, weighted by severity
    hf_classifier    any local transformers sequence-classification folder (Detoxify, a RoBERTa
                     toxicity model, a user's own), the probability of one label
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pipeline.config import ConfigError, JudgeConfig
from pipeline.scoring.toxicity import ToxicityScorer
from pipeline.scoring.wordlist import WordListScorer

Judge = Callable[[list[str]], list[float]]


class HFClassifier:
    """P(label | text) from a local transformers sequence classifier, batched, without gradients.

    Multi-label models (`problem_type: multi_label_classification`, as Detoxify's) and one-logit
    models score with a sigmoid, since their labels are independent; the others with a softmax
    over the labels.
    """

    def __init__(self, path: Path, label: str = "toxic", batch_size: int = 32, max_length: int = 256):
        import torch  # here, not at the top: the input checks read this module, and need no torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        check_classifier(path, label)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token is None:  # many classifiers ship without one; padding needs it
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.index = label_index(self.model.config.id2label, label, path)
        config = self.model.config
        self.sigmoid = config.num_labels == 1 or config.problem_type == "multi_label_classification"
        self.batch_size, self.max_length = batch_size, max_length

    def __call__(self, texts: list[str]) -> list[float]:
        import torch

        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = [t or " " for t in texts[start : start + self.batch_size]]
            enc = self.tokenizer(
                chunk, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length
            )
            with torch.no_grad():
                logits = self.model(**enc.to(self.device)).logits.float()
            probs = logits.sigmoid() if self.sigmoid else logits.softmax(dim=-1)
            scores += probs[:, self.index].tolist()
        return scores


def check_classifier(path: Path | None, label: str) -> None:
    """ConfigError unless `path` is a local classifier folder that has `label`; reads only its config."""
    if path is None or not (Path(path) / "config.json").is_file():
        raise ConfigError(f"hf_classifier: {path} is not a local transformers model folder (no config.json)")
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"hf_classifier: {path}/config.json cannot be read: {exc}") from None
    id2label = {int(k): v for k, v in (config.get("id2label") or {}).items()}
    if id2label:
        label_index(id2label, label, path)


def label_index(id2label: dict, label: str, path) -> int:
    """The index of `label` (a name, case-insensitive, or an index) among the classifier's labels."""
    names = {int(k): str(v) for k, v in id2label.items()}
    for index, name in names.items():
        if name.lower() == label.lower():
            return index
    if label.isdigit() and int(label) in names:
        return int(label)
    known = ", ".join(f"{i}: {n}" for i, n in sorted(names.items()))
    raise ConfigError(f"hf_classifier: {path} has no label {label!r}; its labels are {known}")


JUDGES: dict[str, Callable[[JudgeConfig], Judge]] = {
    "profanity_check": lambda config: ToxicityScorer(),
    "wordlist": lambda config: WordListScorer(),
    "hf_classifier": lambda config: HFClassifier(
        config.path, config.label, config.batch_size, config.max_length
    ),
}


def check_judge(config: JudgeConfig, field: str) -> None:
    """ConfigError for a judge that is not in the table, or a classifier folder that cannot serve."""
    if config.kind not in JUDGES:
        raise ConfigError(f"{field}: {config.kind!r} is not a judge; choose from {', '.join(JUDGES)}")
    if config.kind == "hf_classifier":
        check_classifier(config.path, config.label)


def make_judge(config: JudgeConfig, field: str = "judge") -> Judge:
    check_judge(config, field)
    return JUDGES[config.kind](config)


def make_judges(configs: list[JudgeConfig], field: str = "evaluate.judges") -> dict[str, Judge]:
    """{name: judge} in the configured order; two judges may not share a name."""
    judges: dict[str, Judge] = {}
    for i, config in enumerate(configs):
        if config.name in judges:
            raise ConfigError(f"{field}[{i}]: two judges are named {config.name!r}; give one a `name`")
        judges[config.name] = make_judge(config, f"{field}[{i}]")
    return judges
