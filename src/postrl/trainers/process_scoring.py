"""Process rewards in `postrl train`: call the configured `process_rewards` on a scored batch.

After outcome scoring, `add_process_rewards` calls every `RLConfig.process_rewards` entry on the
batch and writes what the advantage estimator reads:

  batch.token_rewards          += weight * token_rewards of each entry (created if None; the
                                  KL-in-reward term is added to the same tensor afterwards)
  batch.step_rewards           per sequence, sum over entries of weight * step_rewards
  batch.metadata["step_ends"]  per sequence, the completion-token index where each step ends

An estimator whose registry entry needs "step_rewards" does its own credit assignment from
step rewards (algorithms/advantages_process.py), so entries that give step rewards are NOT
added to `token_rewards` for it (they would count twice); dense-only entries (empty step
rewards, e.g. `rto`) still are. Entries giving step rewards must agree on the step ends of
every sequence (the same separator), since their step rewards are summed step by step.
"""

from __future__ import annotations

from typing import Sequence

import torch

from postrl.rewards.process import PROCESS_REWARDS, ProcessContext, ProcessRewards
from postrl.rollout.batch import RolloutBatch


def add_token_rewards(batch: RolloutBatch, extra: torch.Tensor) -> None:
    """batch.token_rewards += extra (created when None): process rewards and the KL term add up."""
    extra = extra.to(device=batch.completion_ids.device, dtype=torch.float32)
    batch.token_rewards = extra if batch.token_rewards is None else batch.token_rewards + extra


def add_process_rewards(batch: RolloutBatch, rows: Sequence, tokenizer, specs: Sequence,
                        consume_steps: bool = False) -> dict[str, float]:
    """Call each spec (`RewardSpec`: name, weight, kwargs) on `batch`; `rows[g]` is the dataset row
    of group g. `consume_steps`: the estimator reads step rewards itself (needs "step_rewards").
    Returns metrics: `process/{name}/mean` (mean per-sequence sum of the entry's token rewards)
    and `process/steps_mean`."""
    if not specs:
        return {}
    texts = batch.metadata.get("completion_text")
    if texts is None:
        from postrl.trainers.scoring import completion_token_lists

        texts = tokenizer.batch_decode(completion_token_lists(batch), skip_special_tokens=True)
    row_of = [rows[g] for g in batch.group_ids.tolist()]
    ctx = ProcessContext(batch=batch, texts=list(texts), rows=row_of, tokenizer=tokenizer)
    B, T = batch.completion_ids.shape
    steps: list[list[float]] | None = None
    ends: list[list[int]] | None = None
    metrics: dict[str, float] = {}
    for i, spec in enumerate(specs):
        out = PROCESS_REWARDS[spec.name](ctx, **spec.kwargs)
        check_output(out, B, T, spec.name)
        has_steps = any(len(s) for s in out.step_rewards)
        if not (consume_steps and has_steps):
            add_token_rewards(batch, spec.weight * out.token_rewards)
        metrics[f"process/{spec.name}/mean"] = float((out.token_rewards * batch.completion_mask).sum(-1).mean())
        if not has_steps:
            continue
        weighted = [[spec.weight * r for r in s] for s in out.step_rewards]
        if steps is None:
            steps, ends = weighted, [list(e) for e in out.step_ends]
            continue
        for b in range(B):
            if list(out.step_ends[b]) != ends[b]:
                raise ValueError(f"process_rewards[{i}] ({spec.name!r}) cut sequence {b} into steps ending at "
                                 f"{list(out.step_ends[b])}, another entry at {ends[b]}; process rewards with step "
                                 "rewards must use the same step separator")
            steps[b] = [x + y for x, y in zip(steps[b], weighted[b])]
    if steps is not None:
        batch.step_rewards = steps
        batch.metadata["step_ends"] = ends
        metrics["process/steps_mean"] = sum(map(len, ends)) / max(B, 1)
    return metrics


def check_output(out: ProcessRewards, B: int, T: int, name: str) -> None:
    """A process reward's output must fit the batch: [B, T] token rewards, B step lists."""
    if not isinstance(out, ProcessRewards):
        raise TypeError(f"process reward {name!r} returned {type(out).__name__}, not ProcessRewards")
    if tuple(out.token_rewards.shape) != (B, T):
        raise ValueError(f"process reward {name!r} returned token_rewards of shape {tuple(out.token_rewards.shape)} "
                         f"for a batch of {B} sequences x {T} completion tokens")
    if len(out.step_rewards) != B or len(out.step_ends) != B:
        raise ValueError(f"process reward {name!r} returned {len(out.step_rewards)} step-reward lists and "
                         f"{len(out.step_ends)} step-end lists for {B} sequences")
    for b, (s, e) in enumerate(zip(out.step_rewards, out.step_ends)):
        if s and len(s) != len(e):
            raise ValueError(f"process reward {name!r}: sequence {b} has {len(s)} step rewards but {len(e)} step ends")


def check_config(cfg) -> None:
    """`RLConfig.process_rewards`: registered names, known kwargs, and an estimator that gets what it
    reads (one that needs "step_rewards" needs a process reward to give them)."""
    from postrl import rewards  # noqa: F401  (fills PROCESS_REWARDS: prm, implicit_prm, rto and the others)
    from postrl.algorithms import ADVANTAGES
    from postrl.config import _in_registry

    for i, spec in enumerate(cfg.process_rewards):
        _in_registry(PROCESS_REWARDS, spec.name, f"process_rewards[{i}].name")
        PROCESS_REWARDS.check_kwargs(spec.name, spec.kwargs, f"process_rewards[{i}].kwargs")
        if spec.on_error != "raise":  # the outcome rewards' failure policy (rewards/guard.py) is not applied here
            raise ValueError(f"process_rewards[{i}].on_error: process rewards are built-ins and always raise on a "
                             "failure; drop on_error")
    adv = cfg.algorithm.advantage
    if "step_rewards" in ADVANTAGES.get(adv).needs and not cfg.process_rewards:
        raise ValueError(f"algorithm.advantage={adv!r} assigns credit from step rewards, but process_rewards is "
                         "empty; add one that gives step rewards (e.g. {name: prm, kwargs: {path: runs/prm/final}}) "
                         "or use an outcome estimator (grpo, rloo)")
