"""XRPO's novelty-aware advantage sharpening: correct answers the policy found unlikely get more credit."""

from __future__ import annotations

import torch

from postrl.algorithms.advantages import broadcast, group_normalized, group_stats
from postrl.algorithms.registries import ADVANTAGES
from postrl.rollout.batch import RolloutBatch


def mean_token_logprob(batch: RolloutBatch) -> torch.Tensor:
    """l_i = (1/|o_i|) sum_t log pi_old(o_{i,t} | ...) over loss tokens: the length-normalised
    sequence log-likelihood under the policy that sampled the row ([B])."""
    mask = batch.loss_mask.double()
    return (batch.behavior_logprobs.double() * mask).sum(-1) / mask.sum(-1).clamp(min=1)


@ADVANTAGES.register("xrpo_novelty", paper="XRPO: Pushing the limits of GRPO with Targeted Exploration and "
                     "Exploitation", arxiv="2510.06672",
                     summary="GRPO advantage, scaled by (1 + lam * novelty) for correct answers less likely than "
                             "their group")
def xrpo_novelty(batch: RolloutBatch, *, lam: float = 1.0, max_novelty: float = 1.0, threshold: float = 1.0,
                 scale_by_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """Novelty-aware advantage sharpening (XRPO's exploitation side), on GRPO advantages.

        A_i      = (r_i - mean_g r) / (std_g r + eps)                 (GRPO; scale_by_std=False: r_i - mean_g r)
        l_i      = mean over o_i's tokens of log pi_old(o_{i,t})       (length-normalised sequence likelihood)
        eta_i    = clip(mean_g l - l_i, 0, max_novelty)                (how much less likely than its group, nats/token)
        A'_i     = A_i (1 + lam eta_i)    if r_i >= threshold and A_i > 0
                 = A_i                    otherwise

    A correct answer the sampling policy rated unlikely relative to its group is a rarer route
    to the right answer; raising its advantage pushes probability mass toward it, beyond what the
    sparse reward alone gives. Wrong answers and all-correct groups (A = 0) are unchanged, so the
    sharpening never turns a penalty into a reward. The likelihood is the behaviour log-prob of
    the sampled tokens (no extra forward). Groups of one get 0; groups may differ in size.
    Not confirmed (the paper's body was not available to us): the exact novelty measure and how
    it enters; lam = 1 and max_novelty = 1 are this library's defaults.
    """
    if lam < 0 or max_novelty < 0:
        raise ValueError(f"xrpo_novelty: lam ({lam}) and max_novelty ({max_novelty}) must be >= 0 "
                         "(algorithm.advantage_kwargs)")
    adv = group_normalized(batch, eps=eps, scale_by_std=scale_by_std)
    ll = mean_token_logprob(batch)
    ll_mean, _, _ = group_stats(ll, batch.group_ids)
    novelty = (ll_mean - ll).clamp(0.0, max_novelty).to(adv.dtype)
    sharpen = (batch.rewards.float() >= threshold) & (adv > 0)
    adv = torch.where(sharpen, adv * (1 + lam * novelty), adv)
    return broadcast(adv, batch)
