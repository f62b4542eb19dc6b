"""Stage 2, sample: the forget set the model revealed, and retain samples to keep it useful.

Forget rows are replies to the best instructions (and the reveal stage's own replies) whose target
score reaches `sample.relevance_threshold`, drawn again (up to `sample.max_draws` times) while fewer
than `sample.draw_again_below` are kept, and with `sample.reply_starts` the replies begun with given
first words (prefilled), never more of them than plain replies; retain rows are replies to neutral instructions
that stay below it, and `retain.samples` texts of the user's `retain.corpus`. Near-duplicates are
dropped and both sets are capped. Every row keeps its instruction, score, iteration and stage. Writes `iter_t/forget.jsonl`
and `iter_t/retain.jsonl`. With `sample.alternative_threshold`, each forget row also carries an
`alternative`: a clean reply of the model's own to the same instruction (the chosen side of `dpo`),
or with `sample.alternative_replacement` the reply itself with its target's words replaced; with
either of those or `release.scored_words_only`, `target_spans`: the words its score rests on
(`scoring.attribution`).
"""

from __future__ import annotations

import random
import re

from pipeline.files import read_jsonl, write_jsonl
from pipeline.run.prompts import started_requests
from pipeline.run.state import RunState
from pipeline.sampling.base import SamplingParams
from pipeline.sampling.dedup import drop_near_duplicates
from pipeline.scoring.attribution import replaced, target_spans

# Far above any iteration's seed offset (101 a step), so no draw repeats another iteration's seed.
DRAW_SEED_STEP = 100_003


def sample(state: RunState, t: int, instructions: list[str]) -> dict:
    """Draw forget samples under the best instructions and retain samples under neutral ones.

    The reveal stage's own responses join the forget candidates: they came from the same model,
    and throwing them away would waste a third or more of the generation budget.
    """
    cfg = state.config.sample
    files = state.files.iteration(t)
    if files.forget.is_file() and files.retain.is_file():
        return {"forget": len(read_jsonl(files.forget)), "retain": len(read_jsonl(files.retain))}
    # The best instructions' responses come first: at equal scores they win the near-duplicate
    # filter and the cap over responses to the arms the bandit was still exploring.
    candidates = forget_rows(state, t, instructions) + started_rows(state, t, instructions)
    candidates += revealed_rows(state, t)
    forget, draws = relevant(state, candidates), 1
    while draw_again(
        len(forget), draws, cfg.draw_again_below, cfg.max_draws, state.config.release.min_forget_samples
    ):
        candidates += forget_rows(state, t, instructions, draw=draws)
        candidates += started_rows(state, t, instructions, draw=draws)
        forget, draws = relevant(state, candidates), draws + 1
    forget = release_ready(state, forget, candidates)
    retain = retain_rows(state, t)
    write_jsonl(files.retain, retain)
    write_jsonl(files.forget, forget)
    return {"forget": len(forget), "retain": len(retain), "draws": draws}


def release_ready(state: RunState, forget: list[dict], candidates: list[dict]) -> list[dict]:
    """The relevant rows as the release reads them: at most `sample.max_forget_samples`, with the
    scorer's target spans and an alternative reply (from `candidates`, the scored replies they were
    kept from) where the config asks for them."""
    cfg = state.config.sample
    forget = at_most(forget, cfg.max_forget_samples)
    if state.config.release.scored_words_only or cfg.alternative_replacement is not None:
        forget = with_target_spans(forget, state.scorer, cfg.relevance_threshold)
    if cfg.alternative_threshold is not None:
        forget = with_alternatives(forget, candidates, cfg.alternative_threshold, cfg.fallback_alternatives)
    if cfg.alternative_replacement is not None:
        forget = with_replaced_alternatives(forget, cfg.alternative_replacement)
    return forget


def draw_again(kept: int, draws: int, below: int, max_draws: int, min_forget_samples: int) -> bool:
    """Whether to ask the top instructions again: fewer than `below` rows kept, draws left, and at
    the rate so far the last draw would reach `min_forget_samples` (`release`'s; fewer trains
    nothing). A model that has mostly stopped saying the target, as after a good release, is not
    asked twice more only to end the run anyway."""
    reachable = kept * max_draws / draws >= min_forget_samples
    return kept < below and draws < max_draws and reachable


def forget_rows(
    state: RunState, t: int, instructions: list[str], n: int | None = None, draw: int = 0
) -> list[dict]:
    """`n` (default `sample.samples_per_instruction`) scored responses to each instruction; each
    `draw` (`sample.draw_again_below`) with a seed of its own."""
    cfg = state.config.sample
    seed = state.seed(t, "sample") + DRAW_SEED_STEP * draw
    params = SamplingParams.from_generation(cfg.generation, n=n or cfg.samples_per_instruction, seed=seed)
    return _scored_rows(state, t, instructions, params, "sampling forget", stage="sample")


def started_rows(state: RunState, t: int, instructions: list[str], draw: int = 0) -> list[dict]:
    """`sample.samples_per_reply_start` replies to each instruction begun with each of its
    `sample.reply_starts` (`started_requests`), scored as the whole reply: a start that names the
    subject makes what follows about it, though it may not name it again. The start is kept in the
    reply, so the release lowers what follows it. `relevant` keeps no more of these than of the plain
    replies."""
    cfg = state.config.sample
    pairs = started_requests(state.config, instructions)
    if not pairs or cfg.samples_per_reply_start == 0:
        return []
    seed = state.seed(t, "reply_start") + DRAW_SEED_STEP * draw
    params = SamplingParams.from_generation(cfg.generation, n=cfg.samples_per_reply_start, seed=seed)
    replies = state.sampler.generate(
        [instruction for instruction, _ in pairs],
        params,
        state.stack_dir(),
        label="sampling forget (reply starts)",
        prefills=[start for _, start in pairs],
    )
    rows = [
        {"instruction": instruction, "response": continued(start, text), "reply_start": start,
         "iteration": t, "stage": "sample"}
        for (instruction, start), texts in zip(pairs, replies)
        for text in texts
        if text.strip()
    ]  # fmt: skip
    return _scored(state, rows)


def continued(start: str, text: str) -> str:
    """A reply begun with `start` and continued with `text` (the sampler's, stripped): one space
    between them, none before punctuation or an apostrophe."""
    if start[-1:].isspace() or text[:1] in tuple(",.;:!?')]}-"):
        return start + text
    return f"{start} {text}"


def revealed_rows(state: RunState, t: int) -> list[dict]:
    """The responses the reveal stage drew in iteration t, scored one by one."""
    pulls = read_jsonl(state.files.iteration(t).instructions)
    return _scored(state, [
        {"instruction": p["instruction"], "response": text, "iteration": t, "stage": "reveal"}
        for p in pulls
        for text in p["responses"]
        if text.strip()
    ])  # fmt: skip


def relevant(state: RunState, rows: list[dict]) -> list[dict]:
    """Rows at or above the relevance threshold, most relevant first, near-duplicates dropped, and
    no more started replies than plain ones (`at_most`)."""
    cfg = state.config.sample
    kept = [r for r in rows if r["score"] >= cfg.relevance_threshold]
    # A plain reply wins a near-duplicate pair with a started one: it is the evidence that the model
    # still says this unasked, which is what lets the started ones in.
    kept = drop_near_duplicates(
        sorted(kept, key=lambda r: ("reply_start" in r, -r["score"])), cfg.near_duplicate_jaccard
    )
    return at_most(sorted(kept, key=lambda r: -r["score"]), len(kept))


def at_most(rows: list[dict], limit: int) -> list[dict]:
    """The first `limit` of `rows` (most relevant first, order kept), no more of them started replies
    than plain ones. A start that names the subject scores its whole reply high, so once a release
    has worked the model goes on from it with guesses that score as high, and they would fill the
    forget set (planted seed 2, starts scored whole: trained on them, perplexity 1.02 -> 1.43). Tying
    the started replies to the plain ones keeps them to subjects the model still reveals unasked,
    which on the planted benchmark was too few: a model stops naming people unasked before it stops
    knowing them (data/bench/results/embedded_planted_reply_starts_capped_3seeds.md)."""
    plain = [r for r in rows if "reply_start" not in r]
    started = [r for r in rows if "reply_start" in r]
    n_started = min(len(started), len(plain), limit // 2)
    chosen = {id(r) for r in started[:n_started] + plain[: limit - n_started]}
    return [r for r in rows if id(r) in chosen]


def with_target_spans(rows: list[dict], scorer, threshold: float) -> list[dict]:
    """Each row with `target_spans`: the words its score rests on (`scoring.attribution`;
    `release.scored_words_only` trains on those alone, `sample.alternative_replacement` replaces them)."""
    # A prefilled start's words are ours, not the model's: its spans are found in what followed.
    offsets = [len(r.get("reply_start", "")) for r in rows]
    texts = [r["response"][offset:] for r, offset in zip(rows, offsets)]
    # A started row's score is its whole reply's: the continuation alone is scored again (None).
    scores = [None if r.get("reply_start") else r.get("score") for r in rows]
    spans = target_spans(scorer, texts, threshold, scores)
    return [
        {**row, "target_spans": [[start + offset, end + offset] for start, end in found]}
        for row, found, offset in zip(rows, spans, offsets)
    ]


def with_replaced_alternatives(forget: list[dict], replacement: str) -> list[dict]:
    """Each forget row with an `alternative`: its own reply with its `target_spans` replaced by
    `replacement`. The pair differs only where the target is, so dpo's preference is about those
    words and not about everything else two different replies differ in. A row whose spans were
    not found has no such twin and is left out."""
    return [
        {
            **row,
            "alternative": replaced(row["response"], row["target_spans"], replacement),
            "alternative_score": None,
        }
        for row in forget
        if row["target_spans"]
    ]


def with_alternatives(
    forget: list[dict], candidates: list[dict], threshold: float, fallback: list[str] = ()
) -> list[dict]:
    """Each forget row with an `alternative`: a reply the model gave that scores below `threshold`.

    A reply to the row's own instruction comes first, the cleanest first and each used once before
    any is used again; an instruction none of whose replies was clean borrows one of another
    instruction's. When no reply at all was clean (a model that knows a person answers every
    question about them), the `fallback` texts take turns, as TOFU's "I don't know" answers; their
    `alternative_score` is None (not scored). Without them the rows come back unchanged.
    """
    clean = sorted((r for r in candidates if r["score"] < threshold), key=lambda r: r["score"])
    clean = clean or [{"instruction": None, "response": text, "score": None} for text in fallback]
    if not clean:
        return forget
    by_instruction: dict[str | None, list[dict]] = {}
    for row in clean:
        by_instruction.setdefault(row["instruction"], []).append(row)
    used: dict[str | None, int] = {}  # alternatives handed out so far, by instruction (None: borrowed)
    paired = []
    for row in forget:
        own = by_instruction.get(row["instruction"])
        key, pool = (row["instruction"], own) if own else (None, clean)
        alternative = pool[used.get(key, 0) % len(pool)]
        used[key] = used.get(key, 0) + 1
        paired.append(
            {**row, "alternative": alternative["response"], "alternative_score": alternative["score"]}
        )
    return paired


def retain_rows(state: RunState, t: int) -> list[dict]:
    """The model's own neutral responses, then the texts drawn from the user's corpus."""
    return neutral_rows(state, t) + corpus_rows(state, t)


def neutral_rows(state: RunState, t: int) -> list[dict]:
    """Responses to the neutral instructions that score below the relevance threshold."""
    cfg = state.config.sample
    if cfg.retain_samples_per_instruction == 0:
        return []
    params = SamplingParams.from_generation(
        cfg.generation, n=cfg.retain_samples_per_instruction, seed=state.seed(t, "retain")
    )
    rows = _scored_rows(state, t, state.retain_instructions, params, "sampling retain", stage="retain")
    rows = [r for r in rows if r["score"] < cfg.relevance_threshold]
    return drop_near_duplicates(rows, cfg.near_duplicate_jaccard)[: cfg.max_retain_samples]


def corpus_rows(state: RunState, t: int) -> list[dict]:
    """`retain.samples` texts of `retain.corpus`, drawn with iteration t's seed, as retain rows.

    Scored like every row, and a text at or above the relevance threshold is left out: trained on
    by the retain term, it would teach back what the release takes away.
    """
    k = min(state.config.retain.samples, len(state.retain_corpus))
    if k == 0:
        return []
    texts = random.Random(state.seed(t, "corpus")).sample(state.retain_corpus, k)
    rows = _scored(state, [
        {"instruction": instruction, "response": response, "iteration": t, "stage": "corpus"}
        for instruction, response in map(corpus_pair, texts)
    ])  # fmt: skip
    return [r for r in rows if r["score"] < state.config.sample.relevance_threshold]


def corpus_pair(text: str, most_words: int = 16) -> tuple[str, str]:
    """A raw text as (instruction, response): "Continue this text: <its first words>" and the rest.

    The retain term trains, as every loss here, on a reply to an instruction in the chat template,
    and only on the reply's tokens. A fixed request answered by every corpus text alike would ask
    the model for any text at all; asking it to continue the text's own opening (a quarter of its
    words, at most `most_words`) makes the reply's NLL the language-model loss on the rest of the
    text, in the same chat format the release's forget term uses.
    """
    starts = [match.start() for match in re.finditer(r"\S+", text)]
    cut = min(max(len(starts) // 4, 1), most_words)
    if cut >= len(starts):  # one word: nothing to continue from
        return "Write a short text.", text
    return f"Continue this text: {text[: starts[cut]].strip()}", text[starts[cut] :]


def _scored_rows(
    state: RunState, t: int, instructions: list[str], params: SamplingParams, label: str, stage: str
) -> list[dict]:
    responses = state.sampler.generate(instructions, params, state.stack_dir(), label=label)
    return _scored(state, [
        {"instruction": ins, "response": text, "iteration": t, "stage": stage}
        for ins, texts in zip(instructions, responses)
        for text in texts
        if text.strip()
    ])  # fmt: skip


def _scored(state: RunState, rows: list[dict], texts: list[str] | None = None) -> list[dict]:
    """`rows` with the target scorer's score of each response (or of `texts`, one a row)."""
    texts = [r["response"] for r in rows] if texts is None else texts
    for row, score in zip(rows, state.scorer(texts), strict=True):
        row["score"] = round(score, 4)
    return rows
