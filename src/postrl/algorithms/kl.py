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

import math

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


def scheduled_kl_coef(schedule: str, start: float | None, end: float, step: int, steps: int) -> float:
    """The KL coefficient of `step` under `algorithm.kl_schedule` (GRPO-D, OThink-MR1 2503.16081).

        u       = min(1, step / steps)                   steps: where the schedule ends
        linear: beta(step) = start + (end - start) * u
        cosine: beta(step) = start + (end - start) * (1 - cos(pi u)) / 2
        constant: beta = end

    A pure function of the step, so a resumed run continues exactly. `start` may exceed `end`
    (a decaying KL); after `steps` the coefficient stays at `end`.
    """
    if schedule == "constant":
        return float(end)
    if start is None:
        raise ValueError(f"algorithm.kl_schedule={schedule!r} needs algorithm.kl_coef_start")
    u = min(1.0, step / max(1, steps))
    if schedule == "linear":
        return float(start + (end - start) * u)
    if schedule == "cosine":
        return float(start + (end - start) * (1 - math.cos(math.pi * u)) / 2)
    raise ValueError(f"unknown algorithm.kl_schedule {schedule!r}; valid: constant, linear, cosine")
