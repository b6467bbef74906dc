"""Scoring a rollout batch: decode completions, call the reward functions TRL-style.

Prompts and completions are passed in the dataset's own format (strings, or chat messages for
conversational data) together with every extra dataset column, so a TRL reward function works
unchanged. The token ids the engine sampled are passed as `completion_ids`; no text is
re-tokenised.
"""

from __future__ import annotations

from typing import Sequence

import torch

from postrl.rewards.guard import RewardError
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
    try:
        result = reward_set(prompts, completions, ids, columns)
    except RewardError as e:  # name the dataset row too: that is what the user can look at
        rows_named = sorted({row_of[b].index + 1 for b in e.positions if b < len(row_of)})
        if not rows_named:
            raise
        shown = ", ".join(map(str, rows_named[:5])) + (", ..." if len(rows_named) > 5 else "")
        raise RewardError(f"{e} [prompt: dataset row {shown}]", e.positions) from None
    batch.metadata["completion_text"] = texts
    if result.failed is not None and bool(result.failed.any()):  # on_error: skip_group
        batch.metadata["reward_failed"] = result.failed.tolist()
    return result


def skip_failed_groups(batch: RolloutBatch) -> dict[str, float]:
    """`on_error: skip_group`: every group with a failed reward gets loss mask 0 (the policy update
    ignores it; its rewards stay in the batch for metrics); `reward/skipped_groups` counts them.
    Called on the final batch, after refills and merges, so a group is judged whole."""
    flags = batch.metadata.get("reward_failed")
    if not flags or not any(flags):
        return {}
    failed = torch.tensor([bool(f) for f in flags])  # None: a row merged in from an unflagged part
    groups = batch.group_ids[failed].unique()
    skip = torch.isin(batch.group_ids, groups)
    keep = (~skip).unsqueeze(-1)
    batch.loss_mask = batch.loss_mask * keep.to(batch.loss_mask.dtype)
    if batch.value_mask is not None:
        batch.value_mask = batch.value_mask * keep.to(batch.value_mask.dtype)
    return {"reward/skipped_groups": float(len(groups))}


def reward_failure_metrics(reward_set) -> dict[str, float]:
    """The failures counted since the last call (`reward/<name>/errors`, `.../timeouts`), from a
    RewardSet, a RewardSet inside an env's EpisodeRewards, or a Ray RewardPool; {} if it counts none."""
    for candidate in (reward_set, getattr(reward_set, "outcome", None)):
        take = getattr(candidate, "take_failure_counts", None)
        if take is not None:
            return take()
    return {}


def primary_success(result, reward_set, threshold: float) -> torch.Tensor:
    """1.0 where the first reward function reached `threshold` (NaN counts as a failure)."""
    first = result.per_function[reward_set.names[0]]
    return (torch.nan_to_num(first, nan=float("-inf")) >= threshold).float()
