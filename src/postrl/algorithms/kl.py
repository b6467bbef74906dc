"""Per-token estimators of KL(pi_theta || pi_ref) from sampled tokens.

With r = log pi_ref(y_t) - log pi_theta(y_t) evaluated on tokens sampled from pi_theta
(J. Schulman, "Approximating KL Divergence", 2020; k3 is the estimator GRPO uses, 2402.03300 eq. 4):

    k1 = -r                 unbiased, high variance, can be negative
    k2 = r^2 / 2            biased, low variance, always >= 0
    k3 = exp(r) - r - 1     unbiased, low variance, always >= 0

In the loss the estimate carries gradients; in the reward (`kl_in_reward`) it is detached and
subtracted from the per-token reward as -beta * k.
"""

from __future__ import annotations

import torch


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    r = ref_logprobs - logprobs
    if kind == "k1":
        return -r
    if kind == "k2":
        return 0.5 * r.square()
    if kind == "k3":
        # clamp keeps exp finite when the policy has drifted far from the reference
        r = r.clamp(-20.0, 20.0)
        return torch.exp(r) - r - 1.0
    raise ValueError(f"unknown KL estimator {kind!r}; valid: k1, k2, k3")
