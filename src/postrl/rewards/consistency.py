"""How likely each completion's answer is given its own reasoning, under a reference model.

GRPO-CARE (arXiv 2506.16141) rewards completions whose final answer follows from their
reasoning. It measures that as the reference model's likelihood of the answer tokens given the
prompt and everything the completion wrote before the answer:

    c_i = exp( mean_{t in answer_i} log pi_ref(y_t | x, y_<t) )

computed on the token ids the engine sampled (never re-tokenised). The answer is found in the
decoded completion text (the last match of a pattern, default `<answer>...</answer>`, or else the
last number) and mapped back to the tokens that overlap those characters: token k covers the
characters between len(decode(y_<k)) and len(decode(y_<=k)), found by bisection over prefix
decodes. A completion without an answer gets NaN (no span, no likelihood).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from functools import lru_cache
from typing import Callable, Sequence

import torch

from postrl.rollout.batch import RolloutBatch

_LAST_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@lru_cache(maxsize=16)
def _compile(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def answer_char_span(text: str, pattern: str, fallback: str = "last_number") -> tuple[int, int] | None:
    """[start, end) of the answer in `text`: group 1 (or the whole match) of the last match of
    `pattern`, without surrounding whitespace; else the last number when fallback is last_number."""
    matches = list(_compile(pattern).finditer(text))
    if matches:
        m = matches[-1]
        group = 1 if m.re.groups else 0
        start, end = m.span(group)
        inner = text[start:end]
        start, end = start + (len(inner) - len(inner.lstrip())), end - (len(inner) - len(inner.rstrip()))
        return (start, end) if end > start else None
    if fallback == "last_number":
        numbers = list(_LAST_NUMBER.finditer(text))
        return numbers[-1].span() if numbers else None
    return None


def token_span(n_tokens: int, prefix_len: Callable[[int], int], start: int, end: int) -> tuple[int, int]:
    """[t0, t1): the tokens overlapping characters [start, end), where `prefix_len(k)` is the length
    of the decoded first k tokens (non-decreasing in k)."""
    class Lengths(Sequence):  # a lazy view, so bisection decodes only O(log n) prefixes
        def __len__(self):
            return n_tokens + 1

        def __getitem__(self, k):
            return prefix_len(k)

    lengths = Lengths()
    t0 = bisect_right(lengths, start) - 1  # the last token that starts at or before `start`
    t1 = t0 + 1
    lo, hi = t1, n_tokens  # the first k with prefix_len(k) >= end
    while lo < hi:
        mid = (lo + hi) // 2
        if prefix_len(mid) >= end:
            hi = mid
        else:
            lo = mid + 1
    return max(t0, 0), max(lo, t1)


def answer_mask(batch: RolloutBatch, tokenizer, pattern: str, fallback: str = "last_number") -> torch.Tensor:
    """[B, T] float: 1 on the completion tokens of each row's answer span, 0 elsewhere."""
    mask = torch.zeros(batch.completion_ids.shape, dtype=torch.float32)
    for i, (row, m) in enumerate(zip(batch.completion_ids, batch.completion_mask)):
        ids = row[m.bool()].tolist()
        text = tokenizer.decode(ids, skip_special_tokens=True)
        span = answer_char_span(text, pattern, fallback)
        if span is None:
            continue
        t0, t1 = token_span(len(ids), lambda k: len(tokenizer.decode(ids[:k], skip_special_tokens=True)), *span)
        mask[i, t0:t1] = 1.0
    return mask


def answer_likelihood(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B]: exp of the mean log-prob over each row's masked tokens (the geometric-mean token
    probability); NaN for a row with no masked token."""
    n = mask.sum(-1)
    mean = (logprobs * mask).sum(-1) / n.clamp(min=1)
    return torch.where(n > 0, mean.exp(), torch.full_like(mean, float("nan")))


class AnswerLikelihood:
    """c_i of a batch under an `EmaModel` (learner/ema.py) of the policy."""

    def __init__(self, ema, tokenizer, *, pattern: str, fallback: str, temperature: float, micro_batch_size: int):
        _compile(pattern)  # a bad pattern fails at start-up, not at the first scored batch
        self.ema, self.tokenizer, self.pattern, self.fallback = ema, tokenizer, pattern, fallback
        self.temperature, self.micro_batch_size = temperature, micro_batch_size

    def __call__(self, batch: RolloutBatch) -> torch.Tensor:
        mask = answer_mask(batch, self.tokenizer, self.pattern, self.fallback) * batch.completion_mask.float()
        if not mask.any():  # nothing to score: skip the reference forward
            return torch.full((batch.size,), float("nan"))
        logp = self.ema.logprobs(batch, temperature=self.temperature, micro_batch_size=self.micro_batch_size)
        return answer_likelihood(logp, mask)
