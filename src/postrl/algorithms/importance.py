"""Truncated importance sampling between the sampling policy and the learner's old policy.

When rollouts come from a policy other than the learner's pre-update policy pi_old (stale
weights in asynchronous training, or an inference engine whose numerics differ from the
trainer's), the policy-gradient estimate is biased. Truncated importance sampling (TIS; Yao et
al., "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training", 2025; the
truncation of IMPALA's V-trace, arXiv 1802.01561) re-weights each token's loss by

    w_t = min( pi_old(y_t | x, y_<t) / mu(y_t | x, y_<t), C )           (token level)
    w   = min( prod_t pi_old / mu, C ) = min( exp(sum_t log pi_old - log mu), C )   (sequence level)

with mu the behaviour (sampling) policy and C the cap; w is a constant (no gradient). The PPO
ratio pi_theta / pi_old is unchanged, so clipping still bounds the update step.
"""

from __future__ import annotations

import torch


def rollout_is_weights(old_logprobs: torch.Tensor, behavior_logprobs: torch.Tensor, mask: torch.Tensor,
                       *, level: str = "token", cap: float = 2.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token weights [B, T] (0 on masked tokens) and metrics (mean weight, truncated share)."""
    log_ratio = (old_logprobs - behavior_logprobs).detach() * mask
    if level == "token":
        raw = torch.exp(log_ratio.clamp(max=20.0))  # clamp: exp of a large gap overflows before min()
    elif level == "sequence":
        raw = torch.exp(log_ratio.sum(-1, keepdim=True).clamp(max=20.0)).expand_as(log_ratio)
    else:
        raise ValueError(f"rollout importance sampling level must be 'token' or 'sequence', got {level!r}")
    weights = raw.clamp(max=cap) * mask
    n = mask.sum().clamp(min=1)
    metrics = {"rollout_is/mean_weight": weights.sum() / n,
               "rollout_is/truncated_frac": ((raw > cap).float() * mask).sum() / n}
    return weights, metrics
