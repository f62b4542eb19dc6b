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

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if self.temperature != 1.0:
            scores = scores / self.temperature
        if self.top_p >= 1:
            return scores
        filtered = torch.full_like(scores, -float("inf"))
        rows = torch.arange(scores.shape[0], device=scores.device)  # those still to filter
        log_total = scores.logsumexp(-1, keepdim=True)  # each row's normaliser, over the vocabulary
        for k in self.candidates:
            part, covered = self._from_top(scores[rows], log_total[rows], min(k, scores.shape[-1]))
            filtered[rows[covered]] = part[covered]
            rows = rows[~covered]
            if len(rows) == 0:
                return filtered
        self.rows_sorted += len(rows)
        filtered[rows] = self.full_sort(input_ids[rows], scores[rows])
        return filtered

    def _from_top(
        self, scores: torch.Tensor, log_total: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row filtered from its `k` most likely tokens, and whether those hold its nucleus
        (the candidates' probabilities, normalised over the whole vocabulary, sum to at least top_p)."""
        top, index = scores.topk(k, dim=-1)
        probs = (top - log_total).exp()
        above = probs.cumsum(-1) - probs  # the mass of the candidates more likely than each
        keep = above < self.top_p
        keep[:, 0] = True
        filtered = torch.full_like(scores, -float("inf"))
        filtered.scatter_(-1, index, top.masked_fill(~keep, -float("inf")))
        return filtered, probs.sum(-1) >= self.top_p


class NucleusSampler(LogitsProcessor):
    """Draws each row's next token from its nucleus (`NucleusLogitsWarper`) with torch's generator;
    the scores it returns are -inf but at that token, so a greedy `generate` takes it."""

    def __init__(self, temperature: float, top_p: float, candidates: tuple[int, ...] = CANDIDATES) -> None:
        self.warper = NucleusLogitsWarper(temperature, top_p, candidates)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        filtered = self.warper(input_ids, scores)
        widest = int(torch.isfinite(filtered).sum(-1).max())  # the largest nucleus in the batch
        if widest > self.warper.candidates[-1]:  # top-p 1, or a row sorted in full: the whole row
            drawn = torch.multinomial(filtered.float().softmax(-1), 1)
        else:
            top, index = filtered.topk(max(widest, 1), dim=-1)
            drawn = index.gather(-1, torch.multinomial(top.float().softmax(-1), 1))
        return torch.full_like(scores, -float("inf")).scatter_(-1, drawn, 0.0)
