"""Process rewards: the registry, its two types and how a completion is cut into steps.

An outcome reward scores a whole completion; a process reward scores its steps (or tokens).
Each `PROCESS_REWARDS` entry maps a `ProcessContext` (the sampled batch, its decoded texts,
dataset rows and the policy tokenizer) to `ProcessRewards`: a dense `[B, T]` token-reward
tensor aligned with `completion_ids`, plus per-sequence step rewards and the completion-token
index where each step ends. `postrl train` adds `weight * token_rewards` of every configured
entry to `batch.token_rewards` (see `trainers/process_scoring.py`).

A step is the text between two separators (default "\\n"). `step_end_tokens` finds step ends
on the sampled token ids from per-token decoded text, so the policy's own tokens are never
re-tokenised; `token_steps` also returns each step's text (decoded from its token span) for
models that score step texts, so the step count of the text and of the token ends always agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from postrl.registry import Registry
from postrl.rollout.batch import RolloutBatch
from postrl.trainers.scoring import completion_token_lists  # noqa: F401  (each row's real completion ids)

PROCESS_REWARDS = Registry("process reward")
"""name -> fn(ctx: ProcessContext, **hparams) -> ProcessRewards.

Entries are configured in `RLConfig.process_rewards` (name, weight, kwargs) like outcome
rewards; kwargs are checked against the entry's keyword-only parameters."""


@dataclass
class ProcessContext:
    """What a process reward sees: the sampled tokens and their texts, one row per sequence."""

    batch: RolloutBatch
    """The sampled tokens: completion_ids/completion_mask/loss_mask/behavior_logprobs, group_ids."""
    texts: list[str]
    """Decoded completions (skip_special_tokens=True), one per row."""
    rows: list
    """The dataset row of each sequence (row.prompt, row.columns: answer, tests, ...)."""
    tokenizer: Any
    """The policy tokenizer."""


@dataclass
class ProcessRewards:
    """A process reward's output for a batch of B sequences with T completion columns."""

    token_rewards: torch.Tensor
    """[B, T] float, aligned with completion_ids; 0 where no reward."""
    step_rewards: list[list[float]]
    """Per sequence, one value per step (empty list for dense-only rewards)."""
    step_ends: list[list[int]]
    """Per sequence, the completion-token index where each step ends."""


def token_steps(token_ids: list[int], tokenizer, separator: str = "\n") -> list[tuple[int, str]]:
    """(end token index, step text) of each non-empty step of one completion's tokens.

    A step ends at the token that completes an occurrence of `separator` (a separator split over
    several tokens ends at its last one); the final step ends at the last token. A segment with
    only whitespace/special tokens (a blank line, a trailing EOS) is not a step of its own: a
    leading one joins the first step and any later one extends the step before it, so the last
    step always ends at the last token. The step text is the step's token span decoded with
    special tokens skipped, minus the closing separator and surrounding whitespace.
    """
    if not separator:
        raise ValueError("process reward separator must be a non-empty string (e.g. '\\n')")
    pieces = [tokenizer.decode([t], skip_special_tokens=True) for t in token_ids]
    text = "".join(pieces)
    # char offset -> token: the token holding character c is the one whose piece covers c.
    char_token: list[int] = []
    for i, piece in enumerate(pieces):
        char_token.extend([i] * len(piece))
    cut_tokens: list[int] = []
    start = text.find(separator)
    while start >= 0:
        end_char = start + len(separator) - 1
        tok = char_token[end_char]
        if not cut_tokens or cut_tokens[-1] != tok:
            cut_tokens.append(tok)
        start = text.find(separator, start + len(separator))
    if token_ids and (not cut_tokens or cut_tokens[-1] != len(token_ids) - 1):
        cut_tokens.append(len(token_ids) - 1)

    steps: list[tuple[int, str]] = []
    begin = 0
    for end in cut_tokens:
        span = tokenizer.decode(token_ids[begin:end + 1], skip_special_tokens=True)
        body = span[:-len(separator)] if span.endswith(separator) else span
        if body.strip():
            steps.append((end, body.strip()))
            begin = end + 1
        elif steps:  # blank segment after a step: the step before absorbs it
            steps[-1] = (end, steps[-1][1])
            begin = end + 1
        # a leading blank segment: keep `begin`, so the first real step starts at token 0
    if steps and steps[-1][0] != len(token_ids) - 1:
        steps[-1] = (len(token_ids) - 1, steps[-1][1])
    return steps


def step_end_tokens(token_ids: list[int], tokenizer, separator: str = "\n") -> list[int]:
    """Completion-token index of the end of each step: the token that completes a separator,
    plus the last token (the final step) — computed from per-token decoded text, no re-tokenising.
    Blank segments are merged as in `token_steps`; an empty completion has no steps."""
    return [end for end, _ in token_steps(token_ids, tokenizer, separator)]


def scatter_step_rewards(step_rewards: list[list[float]], step_ends: list[list[int]],
                         shape: tuple[int, int]) -> torch.Tensor:
    """[B, T] tensor with each step's reward at its end token and 0 elsewhere."""
    out = torch.zeros(shape, dtype=torch.float32)
    for i, (rewards, ends) in enumerate(zip(step_rewards, step_ends)):
        if len(rewards) != len(ends):
            raise ValueError(f"row {i}: {len(rewards)} step rewards for {len(ends)} step ends")
        for r, e in zip(rewards, ends):
            out[i, e] += float(r)
    return out
