"""Policy losses: `fn(inputs: LossInputs, **hparams) -> LossOutput` with a per-token loss.

Losses never reduce over tokens; `algorithms.aggregation.aggregate` applies the configured mode.
Metrics are tensors (no `.item()` host syncs inside a loss); the learner averages them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from postrl.algorithms.registries import POLICY_LOSSES


@dataclass
class LossInputs:
    """Per-token tensors [B, T] aligned with the completion tokens, plus per-sequence [B] context."""

    logprobs: torch.Tensor  # log pi_theta(y_t), with gradient
    old_logprobs: torch.Tensor  # log pi_old(y_t), no gradient
    advantages: torch.Tensor
    mask: torch.Tensor  # loss mask: 1 on policy-generated tokens
    ref_logprobs: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    token_ids: torch.Tensor | None = None
    behavior_logprobs: torch.Tensor | None = None  # log mu(y_t) of the sampling engine, no gradient
    rewards: torch.Tensor | None = None  # [B] sequence rewards
    group_ids: torch.Tensor | None = None  # [B] completions of one prompt share an id
    vocab_mean: torch.Tensor | None = None  # mean_v log pi_theta(v|s_t), with gradient; losses that need "vocab_mean"
    old_vocab_mean: torch.Tensor | None = None  # mean_v log pi_old(v|s_t), no gradient; same losses
    alt_logprobs: torch.Tensor | None = None  # log pi_theta(y_t) under the row's alternative prompt, with gradient ("alt_context")
    old_alt_logprobs: torch.Tensor | None = None  # the same under pi_old, no gradient; same losses
    turn_ids: torch.Tensor | None = None  # [B, T] turn of each token (agent batches; -1 none), e.g. multi-turn EPO


@dataclass
class LossOutput:
    loss: torch.Tensor  # [B, T] per-token loss (masked positions are ignored by aggregation)
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # scalar tensors


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


@POLICY_LOSSES.register("ppo_clip", paper="Proximal Policy Optimization Algorithms", arxiv="1707.06347",
                        summary="clipped surrogate with separate low/high bounds (DAPO clip-higher)")
def ppo_clip(inp: LossInputs, *, clip_low: float = 0.2, clip_high: float = 0.2) -> LossOutput:
    """PPO clipped surrogate (eq. 7), with DAPO's decoupled bounds (2503.14476 eq. 10).

        rho_t = exp(log pi_theta(y_t) - log pi_old(y_t))
        l_t   = -min(rho_t A_t, clip(rho_t, 1 - eps_low, 1 + eps_high) A_t)

    With eps_low = eps_high it is PPO/GRPO; eps_high > eps_low is clip-higher. At rho = 1 the
    gradient equals REINFORCE's, -A_t grad log pi_theta(y_t).
    """
    ratio = torch.exp(inp.logprobs - inp.old_logprobs)
    unclipped = ratio * inp.advantages
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * inp.advantages
    loss = -torch.minimum(unclipped, clipped)
    with torch.no_grad():
        is_clipped = (clipped < unclipped).float()
        metrics = {
            "clip_frac": masked_mean(is_clipped, inp.mask),
            "clip_frac_low": masked_mean(is_clipped * (ratio < 1.0 - clip_low).float(), inp.mask),
            "clip_frac_high": masked_mean(is_clipped * (ratio > 1.0 + clip_high).float(), inp.mask),
            "approx_kl_old": masked_mean(0.5 * (inp.logprobs - inp.old_logprobs) ** 2, inp.mask),
            "ratio_mean": masked_mean(ratio, inp.mask),
        }
    return LossOutput(loss, metrics)


@POLICY_LOSSES.register("reinforce", paper="Simple Statistical Gradient-Following Algorithms for "
                        "Connectionist Reinforcement Learning (Williams, 1992)", arxiv=None,
                        summary="vanilla policy gradient: -A * log pi")
def reinforce(inp: LossInputs) -> LossOutput:
    """REINFORCE (Williams 1992, eq. for the likelihood-ratio gradient).

        l_t = -A_t log pi_theta(y_t)

    On-policy only: it ignores `old_logprobs`, so reusing a batch for several updates makes the
    gradient biased (use ppo_clip there).
    """
    return LossOutput(-inp.advantages * inp.logprobs, {})
