"""Top-p (nucleus) filtering without sorting the whole vocabulary.

transformers' `TopPLogitsWarper` sorts every row of scores at every generated token: for 64 rows
of SmolLM2's 49,152-token vocabulary that is ~120 ms on two CPU cores, about a third of a sampling
step (py-spy on `make demo`: 8% of the whole run). The nucleus is mostly among the few hundred
most likely tokens, which `topk` finds in ~5 ms: the candidates' probabilities (normalised over
the whole vocabulary) are summed, and a row whose candidates hold at least `top_p` of the mass is
filtered from them alone; a row whose nucleus is wider tries the next, larger candidate set, and
only a row wider than all of them is sorted in full, by transformers' own warper. The filter is
the same: a token is kept when the tokens more likely than it hold less than `top_p` of the mass
(Holtzman et al., "The Curious Case of Neural Text Degeneration", ICLR 2020), the most likely token
always; the two differ only by float rounding exactly at the cut.

The warper divides by the temperature itself (as `TemperatureLogitsWarper` does), so top-p sees
the tempered scores. `NucleusSampler` then draws each row's token from its nucleus alone and
leaves only that token finite, and `generate` runs greedy: its own sampling draws a random number
for every token of the vocabulary (`torch.multinomial`: 54 ms a step for 64 rows of 49,152 tokens
on two CPU cores, a third of a sampling step in bfloat16), ours for the nucleus's few hundred.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, TopPLogitsWarper

# How many of the most likely tokens to try, in turn, before the full sort. With SmolLM2 at
# temperature 1.0 and top-p 0.95 the nucleus held more than 256 tokens in a third of the rows, more
# than 2,048 in 3%: `topk` of 256 and of 4,096 leaves few rows to sort.
CANDIDATES = (256, 4096)


class NucleusLogitsWarper(LogitsProcessor):
    """Scores divided by `temperature`, those outside each row's nucleus then set to -inf."""

    def __init__(self, temperature: float, top_p: float, candidates: tuple[int, ...] = CANDIDATES) -> None:
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if not temperature > 0:
            raise ValueError(f"temperature must be above 0, got {temperature}")
        self.temperature, self.top_p, self.candidates = float(temperature), float(top_p), candidates
        self.full_sort = TopPLogitsWarper(top_p)
        self.rows_sorted = 0  # rows whose nucleus was wider than every candidate set

    def tempered(self, scores: torch.Tensor) -> torch.Tensor:
        return scores / self.temperature if self.temperature != 1.0 else scores

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        scores = self.tempered(scores)
        if self.top_p >= 1:
            return scores
        filtered = torch.full_like(scores, -float("inf"))
        groups, wide = self.nuclei(scores)
        for rows, top, index, keep in groups:
            part = torch.full(
                (len(rows), scores.shape[-1]), -float("inf"), dtype=scores.dtype, device=scores.device
            )
            filtered[rows] = part.scatter_(-1, index, top.masked_fill(~keep, -float("inf")))
        if len(wide):
            filtered[wide] = self.full_sort(input_ids[wide], scores[wide])
        return filtered

    def nuclei(self, scores: torch.Tensor) -> tuple[list[tuple], torch.Tensor]:
        """The rows' nuclei from their most likely tokens: a list of (rows, top, index, keep), one
        for each candidate set that holds some rows' nuclei (their k highest `scores` [n, k], those
        tokens' ids, and which of them are in the nucleus), and the rows wider than every set
        (counted in `rows_sorted`: the caller sorts them in full).

        A set holds a row's nucleus when the candidates' probabilities, normalised over the whole
        vocabulary, sum to at least top_p; a token is in it when the candidates more likely than it
        hold less than top_p, the most likely always."""
        rows = torch.arange(scores.shape[0], device=scores.device)  # those still to place
        log_total = scores.logsumexp(-1, keepdim=True)  # each row's normaliser, over the vocabulary
        groups = []
        for k in self.candidates:
            top, index = scores[rows].topk(min(k, scores.shape[-1]), dim=-1)
            probs = (top - log_total[rows]).exp()
            keep = probs.cumsum(-1) - probs < self.top_p
            keep[:, 0] = True
            covered = probs.sum(-1) >= self.top_p
            groups.append((rows[covered], top[covered], index[covered], keep[covered]))
            rows = rows[~covered]
            if len(rows) == 0:
                break
        self.rows_sorted += len(rows)
        return groups, rows


class NucleusSampler(LogitsProcessor):
    """Draws each row's next token from its nucleus (`NucleusLogitsWarper.nuclei`) with torch's
    generator; the scores it returns are -inf but at that token, so a greedy `generate` takes it.
    A row's draw is among its candidates; only a row wider than every candidate set, or top-p 1,
    draws over the whole vocabulary."""

    def __init__(self, temperature: float, top_p: float, candidates: tuple[int, ...] = CANDIDATES) -> None:
        self.warper = NucleusLogitsWarper(temperature, top_p, candidates)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        scores = self.warper.tempered(scores).float()
        if self.warper.top_p >= 1:
            drawn = torch.multinomial(scores.softmax(-1), 1)
        else:
            drawn = torch.empty((scores.shape[0], 1), dtype=torch.long, device=scores.device)
            groups, wide = self.warper.nuclei(scores)
            for rows, top, index, keep in groups:
                weights = (top - top[:, :1]).exp() * keep  # each candidate's probability, up to a factor
                drawn[rows] = index.gather(-1, torch.multinomial(weights, 1))
            if len(wide):
                filtered = self.warper.full_sort(input_ids[wide], scores[wide])
                drawn[wide] = torch.multinomial(filtered.softmax(-1), 1)
        return torch.full_like(scores, -float("inf")).scatter_(-1, drawn, 0.0)
