"""Scoring a rollout batch: decode completions, call the reward functions TRL-style.

Prompts and completions are passed in the dataset's own format (strings, or chat messages for
conversational data) together with every extra dataset column, so a TRL reward function works
unchanged. The token ids the engine sampled are passed as `completion_ids`; no text is
re-tokenised.
"""

from __future__ import annotations

from typing import Sequence

import torch

from postrl.rollout.batch import RolloutBatch
from postrl.rollout.multiturn import EPISODE_COLUMNS


def completion_token_lists(batch: RolloutBatch) -> list[list[int]]:
    return [ids[m.bool()].tolist() for ids, m in zip(batch.completion_ids, batch.completion_mask)]


def score_batch(batch: RolloutBatch, rows: Sequence, tokenizer, reward_set):
    """Rewards of every completion; `rows[g]` is the dataset row of group id g."""
    ids = completion_token_lists(batch)
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    row_of = [rows[g] for g in batch.group_ids.tolist()]
    prompts = [r.prompt for r in row_of]
    # a sampler's answer prefix (trainers/hints.py) is part of the answer the rewards judge
    prefixes = batch.metadata.get("answer_prefix") or [None] * len(texts)
    answers = [(a or "") + t for a, t in zip(prefixes, texts)]
    completions = [[{"role": "assistant", "content": t}] if isinstance(r.prompt, list) else t
                   for r, t in zip(row_of, answers)]
    keys = sorted(set().union(*(r.columns.keys() for r in row_of))) if row_of else []
    columns = {k: [r.columns.get(k) for r in row_of] for k in keys}
    # an episode batch (rollout/multiturn.py) hands the env's results to the rewards as columns
    columns.update({k: list(batch.metadata[k]) for k in EPISODE_COLUMNS if k in batch.metadata})
    result = reward_set(prompts, completions, ids, columns)
    batch.metadata["completion_text"] = texts
    return result


def primary_success(result, reward_set, threshold: float) -> torch.Tensor:
    """1.0 where the first reward function reached `threshold` (NaN counts as a failure)."""
    first = result.per_function[reward_set.names[0]]
    return (torch.nan_to_num(first, nan=float("-inf")) >= threshold).float()
