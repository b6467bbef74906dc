"""Advantage estimators: `fn(batch, **hparams) -> advantages [B, T]`.

Every estimator reads a `RolloutBatch` (rewards, optional dense `token_rewards`, `group_ids`,
`loss_mask`) and returns per-token advantages that are zero wherever `loss_mask` is zero. The
sequence return used by outcome estimators is `rewards + token_rewards.sum(-1)`, so a KL penalty
placed in the reward (`kl_in_reward`) or a process reward is included without special cases.
"""

from __future__ import annotations

import torch

from postrl.algorithms.registries import ADVANTAGES
from postrl.rollout.batch import RolloutBatch


def sequence_returns(batch: RolloutBatch) -> torch.Tensor:
    """Outcome reward plus any dense token rewards, per sequence: [B]."""
    if batch.rewards is None:
        raise ValueError("advantage estimation needs batch.rewards; score the batch first")
    r = batch.rewards.float()
    if batch.token_rewards is not None:
        r = r + (batch.token_rewards.float() * batch.loss_mask).sum(-1)
    return r


def group_stats(values_B: torch.Tensor, group_ids_B: torch.Tensor):
    """Per-row group mean, unbiased group std and group size (each [B])."""
    _, inv = torch.unique(group_ids_B, return_inverse=True)
    n_groups = int(inv.max().item()) + 1 if inv.numel() else 0
    v = values_B.double()
    count = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, inv, torch.ones_like(v))
    total = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, inv, v)
    mean = total / count
    sq = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, inv, (v - mean[inv]) ** 2)
    std = torch.sqrt(sq / (count - 1).clamp(min=1))
    return mean[inv].to(values_B.dtype), std[inv].to(values_B.dtype), count[inv].to(values_B.dtype)


def broadcast(adv_B: torch.Tensor, batch: RolloutBatch) -> torch.Tensor:
    return adv_B[:, None] * batch.loss_mask


@ADVANTAGES.register("grpo", paper="DeepSeekMath: Pushing the Limits of Mathematical Reasoning in "
                     "Open Language Models", arxiv="2402.03300",
                     summary="group-normalised outcome reward: (r - mean_G) / std_G")
def grpo(batch: RolloutBatch, *, eps: float = 1e-6, scale_by_std: bool = True) -> torch.Tensor:
    """Group Relative Policy Optimization, outcome supervision (sec. 4.1.2).

        A_{i,t} = (r_i - mean({r_1..r_G})) / (std({r_1..r_G}) + eps)     for every token t of o_i

    std is the unbiased sample std of the group. A group of one completion, or a group with all
    rewards equal, gets advantage 0 (no relative signal). `scale_by_std=False` gives Dr. GRPO.
    """
    return broadcast(group_normalized(batch, eps=eps, scale_by_std=scale_by_std), batch)


def group_normalized(batch: RolloutBatch, *, eps: float = 1e-6, scale_by_std: bool = True) -> torch.Tensor:
    """GRPO's per-completion advantage [B] (before broadcasting over tokens)."""
    r = sequence_returns(batch)
    mean, std, count = group_stats(r, batch.group_ids)
    adv = r - mean
    if scale_by_std:
        adv = adv / (std + eps)
    return torch.where(count > 1, adv, torch.zeros_like(adv))


@ADVANTAGES.register("dr_grpo", paper="Understanding R1-Zero-Like Training: A Critical Perspective",
                     arxiv="2503.20783", summary="group mean baseline without std scaling (Dr. GRPO)")
def dr_grpo(batch: RolloutBatch) -> torch.Tensor:
    """GRPO Done Right: remove the std normalisation that up-weights too easy/hard questions.

        A_{i,t} = r_i - mean({r_1..r_G})

    Pair with `loss_agg: seq_mean_token_sum_norm` (the paper's constant-length normaliser) to
    remove the length bias as well; the `dr_grpo` preset does.
    """
    return grpo(batch, scale_by_std=False)


@ADVANTAGES.register("rloo", paper="Back to Basics: Revisiting REINFORCE Style Optimization for "
                     "Learning from Human Feedback in LLMs", arxiv="2402.14740",
                     summary="REINFORCE leave-one-out baseline: r_i - mean_{j!=i} r_j")
def rloo(batch: RolloutBatch) -> torch.Tensor:
    """REINFORCE Leave-One-Out (eq. 6): each sample's baseline is the mean of the others.

        A_i = r_i - 1/(k-1) sum_{j != i} r_j  =  k/(k-1) * (r_i - mean_G(r))

    Groups of one get advantage 0. Identical rewards give 0.
    """
    r = sequence_returns(batch)
    mean, _, count = group_stats(r, batch.group_ids)
    adv = torch.where(count > 1, count / (count - 1).clamp(min=1) * (r - mean), torch.zeros_like(r))
    return broadcast(adv, batch)


@ADVANTAGES.register("reinforce_pp", paper="REINFORCE++: An Efficient RLHF Algorithm with Robustness "
                     "to Both Prompt and Reward Models", arxiv="2501.03262",
                     summary="token-level returns with KL in the reward, globally normalised")
def reinforce_pp(batch: RolloutBatch, *, gamma: float = 1.0, eps: float = 1e-8) -> torch.Tensor:
    """REINFORCE++ (k=1 variant): per-token reward, discounted return, batch-wide whitening.

        r_t = 1[t = last] * r(x, y) + token_reward_t        (token_reward_t = -beta * KL_t)
        G_t = sum_{s >= t} gamma^{s-t} r_s
        A_t = (G_t - mean_batch(G)) / (std_batch(G) + eps)   over all valid tokens of the batch

    Global (batch) normalisation replaces GRPO's per-prompt normalisation; groups are not used.
    """
    mask = batch.loss_mask.float()
    B, T = mask.shape
    per_token = torch.zeros(B, T, dtype=torch.float32, device=mask.device)
    if batch.token_rewards is not None:
        per_token = per_token + batch.token_rewards.float() * mask
    lengths = batch.completion_mask.sum(-1).clamp(min=1).long()
    last = torch.zeros_like(per_token)
    last[torch.arange(B), lengths - 1] = batch.rewards.float()
    per_token = per_token + last
    returns = torch.zeros_like(per_token)
    running = torch.zeros(B, dtype=torch.float32, device=mask.device)
    for t in range(T - 1, -1, -1):
        running = per_token[:, t] + gamma * running
        returns[:, t] = running
    valid = mask > 0
    if valid.sum() < 2:
        return torch.zeros_like(returns)
    mean, std = returns[valid].mean(), returns[valid].std()
    return (returns - mean) / (std + eps) * mask
