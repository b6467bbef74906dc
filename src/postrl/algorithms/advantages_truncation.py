"""Truncation-aware group advantages: what a GRPO user does with completions cut at the length limit.

A completion cut at `rollout.max_new_tokens` (finish_reason "length") is scored like a finished
one, although it never got to answer. Three treatments appear in the literature:

- keep it (plain `grpo`): it is usually wrong, so it gets a negative advantage, which pushes the
  policy towards shorter answers (Skywork-OR1's final choice, "No-Adv-Mask");
- mask its loss (`algorithm.mask_truncated`, DAPO's overlong filtering; it still counts in the
  group's mean and std);
- `grpo_truncation` (below): leave it out of the group statistics of the finished completions
  and give it a fixed advantage (Skywork-OR1's "Adv-Mask-Before"), or keep it in the statistics
  and only override its advantage ("Adv-Mask-After").

For value-based PPO the analogue is bootstrapping from the critic at the cut: `t_ppo`
(`advantages_value.py`, T-PPO's extended GAE); plain `gae` treats the cut as the end of the episode.
"""

from __future__ import annotations

from typing import Literal

import torch

from postrl.algorithms.advantages import broadcast, group_stats, sequence_returns
from postrl.algorithms.registries import ADVANTAGES
from postrl.rollout.batch import RolloutBatch


def truncated_rows(batch: RolloutBatch, name: str) -> torch.Tensor:
    """[B] bool: rows whose finish_reason is "length"."""
    reasons = batch.metadata.get("finish_reason")
    if reasons is None:
        raise ValueError(f"advantage estimator {name!r} needs batch.metadata['finish_reason'] (set by the rollout "
                         "engines) to tell truncated completions from finished ones")
    return torch.tensor([r == "length" for r in reasons], dtype=torch.bool)


@ADVANTAGES.register("grpo_truncation", paper="Skywork Open Reasoner 1 Technical Report", arxiv="2505.22312",
                     summary="GRPO whose group statistics leave out truncated completions, which get a fixed "
                     "advantage (Skywork-OR1's advantage masks)")
def grpo_truncation(batch: RolloutBatch, *, mode: Literal["before", "after"] = "before",
                    truncated_advantage: float = 0.0, eps: float = 1e-6, scale_by_std: bool = True) -> torch.Tensor:
    """GRPO with Skywork-OR1's advantage masks for truncated responses ("Adv-Mask-Before" / "-After").

        F = finished rows of the group, T = truncated rows (finish_reason "length")
        before: A_i = (r_i - mean_F(r)) / (std_F(r) + eps)    i in F   (0 if |F| < 2)
                A_i = truncated_advantage                      i in T
        after:  A_i = (r_i - mean_G(r)) / (std_G(r) + eps)    i in F   (statistics over the whole group)
                A_i = truncated_advantage                      i in T

    std is the unbiased sample std; `scale_by_std=False` drops the division (Dr. GRPO). With no
    truncated row, both modes equal `grpo`. The paper's masks set truncated advantages to 0 (the
    default); a negative `truncated_advantage` penalises running out of tokens by a fixed amount
    instead of by the group's statistics. Skywork-OR1 reports that keeping the negative advantages of
    truncated responses (plain `grpo`) gave better token efficiency and later scaling than either
    mask, and used no mask in its final recipe; a mask suits truncation caused by a limit you will
    lift later (multi-stage context growth) rather than by the policy rambling.
    """
    if mode not in ("before", "after"):
        raise ValueError(f"algorithm.advantage_kwargs.mode must be 'before' or 'after', got {mode!r}")
    r = sequence_returns(batch)
    cut = truncated_rows(batch, "grpo_truncation").to(r.device)
    if mode == "before":
        # statistics of the finished rows only: truncated rows get a group of their own (id -1 - g)
        ids = torch.where(cut, -1 - batch.group_ids.to(r.device), batch.group_ids.to(r.device))
    else:
        ids = batch.group_ids.to(r.device)
    mean, std, count = group_stats(r, ids)
    adv = r - mean
    if scale_by_std:
        adv = adv / (std + eps)
    adv = torch.where(count > 1, adv, torch.zeros_like(adv))
    adv = torch.where(cut, torch.full_like(adv, float(truncated_advantage)), adv)
    return broadcast(adv, batch)
