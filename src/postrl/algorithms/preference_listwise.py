"""Preference losses over ranked lists and over per-token sums: LiPO-lambda and CPL.

LiPO reads K scored responses per prompt (`list_logps` / `list_ref_logps` / `scores` [B, K],
-inf log-probs where a prompt has fewer than K). CPL reads the per-token log-probs of a chosen and
a rejected response (needs "token_logps") and no reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from postrl.algorithms.policy_losses import LossOutput
from postrl.algorithms.preference import PrefInputs, pair_metrics, require
from postrl.algorithms.registries import PREFERENCE_LOSSES


def lambda_weights(s: torch.Tensor, psi: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """LambdaLoss weights Delta_ij [B, K, K] = |G_i - G_j| * |1/D(tau_i) - 1/D(tau_j)|.

    G = 2^psi - 1, D(tau) = log2(1 + tau), tau_i = the rank (1 = best) of s_i among the present
    responses (`valid`), ties broken by position.
    """
    B, K = s.shape
    order = s.masked_fill(~valid, float("-inf")).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(1, K + 1, device=s.device).expand(B, K))
    inv_discount = 1.0 / torch.log2(1.0 + rank.to(s.dtype))
    gain = torch.pow(2.0, psi) - 1.0
    return (gain[:, :, None] - gain[:, None, :]).abs() * (inv_discount[:, :, None] - inv_discount[:, None, :]).abs()


@PREFERENCE_LOSSES.register("lipo", paper="LiPO: Listwise Preference Optimization through Learning-to-Rank",
                            arxiv="2402.01878", needs=("reference",),
                            summary="listwise: lambda-weighted pairwise logistic losses over K ranked responses")
def lipo(inp: PrefInputs, *, beta: float = 0.05) -> LossOutput:
    """LiPO-lambda: every ordered pair of a ranked list, weighted by its LambdaLoss importance.

        s_i = beta (log pi(y_i|x) - log pi_ref(y_i|x))
        l   = sum_{psi_i > psi_j} Delta_ij * -log sigmoid(s_i - s_j)
        Delta_ij = |2^psi_i - 2^psi_j| * |1/log2(1 + tau_i) - 1/log2(1 + tau_j)|

    psi = `scores`; tau_i is the rank of s_i under the current policy (1 = highest), so Delta
    carries no gradient. Absent responses (-inf log-prob) and ties in psi form no pair; a list with
    no ordered pair has l = 0. With K = 2 and psi = (1, 0), Delta = 1 - 1/log2(3) = 0.3691 whatever
    the ranks, so l is 0.3691 times DPO's loss (DPO is the same pairwise logistic loss, unweighted).
    The sum over pairs is not normalised (as in the paper). beta = 0.05 as recalled from the paper's
    setup (not re-checked here).
    """
    require(inp, "lipo", "list_logps", "list_ref_logps", "scores")
    valid = torch.isfinite(inp.list_logps) & torch.isfinite(inp.list_ref_logps)
    zeros = torch.zeros_like(inp.list_logps)
    s = beta * (torch.where(valid, inp.list_logps, zeros) - torch.where(valid, inp.list_ref_logps, zeros))
    with torch.no_grad():
        psi = torch.where(valid, inp.scores.to(s.dtype), zeros)
        pairs = (psi[:, :, None] > psi[:, None, :]) & valid[:, :, None] & valid[:, None, :]  # i better than j
        weights = lambda_weights(s.detach(), psi, valid) * pairs
    loss = (weights * -F.logsigmoid(s[:, :, None] - s[:, None, :])).sum(dim=(1, 2))
    with torch.no_grad():
        correct = (s[:, :, None] > s[:, None, :]) & pairs
        metrics = {"rewards/accuracy": correct.sum() / pairs.sum().clamp(min=1),
                   "lipo/pairs": pairs.sum(dim=(1, 2)).float().mean()}
    return LossOutput(loss, metrics)


def _discounted_sum(logps: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """sum_t gamma^t log pi(y_t) over response tokens, t counted from 0 at the first one."""
    keep = mask > 0
    t = (keep.long().cumsum(-1) - 1).clamp(min=0).to(logps.dtype)
    return torch.where(keep, logps * gamma ** t, torch.zeros_like(logps)).sum(-1)


@PREFERENCE_LOSSES.register("cpl", paper="Contrastive Preference Learning: Learning from Human Feedback "
                            "without RL", arxiv="2310.13639", needs=("token_logps",),
                            summary="regret-based contrastive loss on discounted sums of alpha log pi, no reference")
def cpl(inp: PrefInputs, *, alpha: float = 0.1, bias: float = 0.5, gamma: float = 1.0) -> LossOutput:
    """CPL: a Bradley-Terry model on regrets, with the optimal advantage A*(s, a) = alpha log pi*(a|s).

        A(y) = sum_t gamma^t alpha log pi(y_t | x, y_<t)
        l    = -log sigmoid(A(y_w) - lambda A(y_l))

    lambda = `bias` in (0, 1], the conservative bias of CPL(lambda): lambda < 1 pushes the rejected
    segment down less than the chosen one up. With lambda = 1 and gamma = 1, l is DPO with
    log pi_ref = 0 and beta = alpha. Defaults alpha = 0.1, lambda = 0.5 from the authors'
    MetaWorld configs; their code sums without discount, hence gamma = 1. The optional BC
    regulariser of the paper is not part of this entry.
    """
    if not 0.0 < bias <= 1.0:
        raise ValueError(f"cpl: bias must be in (0, 1], got {bias}")
    require(inp, "cpl", "chosen_token_logps", "chosen_token_mask", "rejected_token_logps", "rejected_token_mask")
    chosen = alpha * _discounted_sum(inp.chosen_token_logps, inp.chosen_token_mask, gamma)
    rejected = alpha * _discounted_sum(inp.rejected_token_logps, inp.rejected_token_mask, gamma)
    return LossOutput(-F.logsigmoid(chosen - bias * rejected), pair_metrics(chosen, rejected))
