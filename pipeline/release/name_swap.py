"""The generic teacher of the `name_swap` objective: the same row with the target's names swapped.

Who's Harry Potter (Eldan & Russinovich, 2023, arXiv 2310.02238) unlearns an entity by training on
the model's *generic* predictions: what it predicts for the same text once the entity's anchored
terms are replaced by generic ones. For a named person the anchored terms are the name itself: the
frozen model, asked the same question about a name it has never seen and shown the same reply,
predicts what it would say of anyone (a town, a job, a year), while for the real name it predicts
the facts it knows. Distilling the first into the model in place of the second removes the
facts and leaves every token that does not depend on the name (the wording, the grammar, what it
knows of other people) as it was.

`encode_swapped` tokenises a row twice, as it is and with every name swapped for its anchor, and
labels the tokens the two share, in the same order: the reply's tokens outside the names. A name's
own tokens (and a token that straddles a name's edge) carry no label on either side, so the model
is not taught to say the anchor instead of the name, only what follows it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError
from pipeline.release.objectives import objective_named
from pipeline.textdata import IGNORE_INDEX, format_prompt

if TYPE_CHECKING:
    import torch


def anchor_map(names: list[str], anchors: list[str], avoid: list[str] = ()) -> dict[str, str]:
    """{phrase: its replacement}: each target name to an anchor name (`release.anchor_names`, the
    first that names no target and nobody in `avoid`), and each part of the name (a first name or
    surname alone, three letters or more) to the anchor's part in its place."""
    taken = {n.lower() for n in [*names, *avoid]}
    free = [a for a in anchors if a.lower() not in taken]
    if len(free) < len(names):
        raise ConfigError(
            f"release.anchor_names: {len(names)} target names need as many anchor names, only "
            f"{len(free)} of them name nobody the run forgets or keeps"
        )
    mapping: dict[str, str] = {}
    for name, anchor in zip(names, free):
        mapping[name] = anchor
        parts, anchor_parts = name.split(), anchor.split()
        for i, part in enumerate(parts):
            if len(part) >= 3 and part not in mapping:
                mapping[part] = anchor_parts[0] if i == 0 else anchor_parts[-1]
    return mapping


def generic_logits(own: torch.Tensor, twin: torch.Tensor, alpha: float) -> torch.Tensor:
    """Who's Harry Potter's generic prediction (its eq. 1, v_generic = v_baseline − α·ReLU(v_reinforced
    − v_baseline)), with the stranger's reading as the baseline, the real name's as the reinforced
    one, in log-probabilities:

        v_generic = v_twin − α · ReLU(v_own − v_twin)

    v_own is what the frozen model predicts at a reply token with the target's name, v_twin with
    the invented one. A token the real name makes more likely than a stranger's name (the answer
    to a fact, even where a stranger's reading gives it some weight) is pushed below the stranger's
    reading; every other token keeps the stranger's weight. With α = 0 it is the twin's reading."""
    own, twin = own.log_softmax(-1), twin.log_softmax(-1)
    return twin - alpha * (own - twin).clamp(min=0)


def run_anchor_map(config, method: str | None = None) -> dict[str, str] | None:
    """The `name_map` a release with `method` (default `release.method`) needs from a run's config
    (a `RunConfig`): `anchor_map` of its target's names, kept apart from the names it keeps knowing
    (`sample.retain_subjects`); None for an objective that swaps no names."""
    if not objective_named(method or config.release.method).swaps_names:
        return None
    return anchor_map(config.target.names, config.release.anchor_names, config.sample.retain_subjects)


def names_pattern(phrases) -> re.Pattern:
    """A regex finding any of `phrases` as whole words in any case, the longest first (so a full
    name wins over its first name alone)."""
    alternatives = "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))
    return re.compile(rf"(?<!\w)({alternatives})(?!\w)", re.IGNORECASE)


def swap(text: str, mapping: dict[str, str]) -> tuple[str, list[tuple[int, int, int]]]:
    """`text` with every phrase of `mapping` replaced (whole words, longest first, any case), and
    the pieces between names: (start in `text`, start in the swapped text, length)."""
    if not mapping:
        return text, [(0, 0, len(text))]
    lowered = {k.lower(): v for k, v in mapping.items()}
    out, pieces, at, shift = [], [], 0, 0
    for match in names_pattern(mapping).finditer(text):
        pieces.append((at, at + shift, match.start() - at))
        out.append(text[at : match.start()])
        new = lowered[match.group(0).lower()]
        out.append(new)
        shift += len(new) - (match.end() - match.start())
        at = match.end()
    pieces.append((at, at + shift, len(text) - at))
    out.append(text[at:])
    return "".join(out), pieces


def _keyed_tokens(tokenizer, text: str, pieces: list[tuple[int, int, int]], side: int) -> list[tuple]:
    """(token id, key) per token of `text`; key (piece, start, end) for a token inside one piece
    (offsets relative to it), None for a token in or across a name."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    tokens = []
    for token, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"]):
        key = None
        for index, piece in enumerate(pieces):
            origin, length = piece[side], piece[2]
            if origin <= start and end <= origin + length:
                key = (index, start - origin, end - origin, token)
                break
        tokens.append((token, key))
    return tokens


def encode_swapped(
    tokenizer, instruction: str, response: str, mapping: dict[str, str], max_length: int = 256
) -> tuple[tuple[list[int], list[int]], tuple[list[int], list[int]]]:
    """(row, teacher): `encode_pair`-like (ids, labels) of the row as it is, and of the row with the
    names swapped. Labelled are the reply's tokens the two share (and EOS), as many on each side and
    in the same order; the row's reply is cut to `max_length` with the prompt, the teacher to match.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("name_swap: needs a fast tokenizer (token offsets) to line the two rows up")
    swapped_response, pieces = swap(response, mapping)
    prompt = tokenizer(format_prompt(tokenizer, instruction), add_special_tokens=False)["input_ids"]
    teacher_prompt = tokenizer(
        format_prompt(tokenizer, swap(instruction, mapping)[0]), add_special_tokens=False
    )["input_ids"]
    eos = (tokenizer.eos_token_id, ("eos",))
    row = _keyed_tokens(tokenizer, response, pieces, 0) + [eos]
    row = row[: max(max_length - len(prompt), 1)]
    teacher = _keyed_tokens(tokenizer, swapped_response, pieces, 1) + [eos]
    shared = {key for _, key in row if key is not None} & {key for _, key in teacher if key is not None}
    # Keep the teacher up to its last shared token: what comes after it teaches nothing.
    last = max((i for i, (_, key) in enumerate(teacher) if key in shared), default=-1)
    teacher = teacher[: last + 1]

    def pair(prompt_ids: list[int], tokens: list[tuple]) -> tuple[list[int], list[int]]:
        ids = [token for token, _ in tokens]
        labels = [token if key in shared else IGNORE_INDEX for token, key in tokens]
        return prompt_ids + ids, [IGNORE_INDEX] * len(prompt_ids) + labels

    return pair(prompt, row), pair(teacher_prompt, teacher)
