"""Unpaired preference losses: each example is one completion labelled desirable or undesirable (KTO).

Unpaired inputs use `chosen_*` for the completion and `labels` [B] (1 desirable, 0 undesirable);
the KTO reference point comes from `kl_logps` / `kl_ref_logps` (needs "kto_kl").
"""

from __future__ import annotations

import torch

from postrl.algorithms.policy_losses import LossOutput, masked_mean
from postrl.algorithms.preference import PrefInputs, require
from postrl.algorithms.registries import PREFERENCE_LOSSES


@PREFERENCE_LOSSES.register("kto", paper="KTO: Model Alignment as Prospect Theoretic Optimization",
                            arxiv="2402.01306", needs=("reference", "kto_kl"),
                            summary="prospect-theoretic value of labelled completions against a KL reference point")
def kto(inp: PrefInputs, *, beta: float = 0.1, desirable_weight: float = 1.0,
        undesirable_weight: float = 1.0) -> LossOutput:
    """KTO (eq. 7): a sigmoid value of the implicit reward relative to the reference point z0.

        r    = log pi(y|x) - log pi_ref(y|x)
        z0   = max(0, mean_batch[log pi(y'|x) - log pi_ref(y'|x)])   (mismatched pairs, no gradient)
        l    = lambda_D (1 - sigmoid(beta (r - z0)))   if y is desirable
               lambda_U (1 - sigmoid(beta (z0 - r)))   if y is undesirable

    This is lambda_y - v(x, y) of the paper. z0 is detached, as in the paper and TRL, and estimated
    on the (micro-)batch it is given (TRL averages it over devices). At pi = pi_ref, r = z0 = 0 and
    l = lambda_y / 2. The paper advises lambda_D n_D / (lambda_U n_U) in [1, 4/3] for n_D
    desirable and n_U undesirable examples.
    """
    require(inp, "kto", "labels", "chosen_ref_logps", "kl_logps", "kl_ref_logps")
    reward = inp.chosen_logps - inp.chosen_ref_logps
    with torch.no_grad():
        z0 = (inp.kl_logps - inp.kl_ref_logps).mean().clamp(min=0.0)
    desirable = inp.labels > 0.5
    loss = torch.where(desirable, desirable_weight * (1.0 - torch.sigmoid(beta * (reward - z0))),
                       undesirable_weight * (1.0 - torch.sigmoid(beta * (z0 - reward))))
    with torch.no_grad():
        r = beta * reward
        metrics = {"kto/kl": z0, "rewards/desirable": masked_mean(r, desirable),
                   "rewards/undesirable": masked_mean(r, ~desirable),
                   "kto/desirable_frac": desirable.float().mean()}
    return LossOutput(loss, metrics)
