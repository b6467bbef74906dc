"""Sequence-level and pairwise objectives: P3O, CoPG, RiskPO.

P3O and CoPG compare every pair of completions of one prompt through whole-sequence
log-prob sums; RiskPO weights completions by where their reward falls in the group's reward
distribution. All need "groups". The pairwise losses are sequence-level: completion i's share
of its pairs is written on each of its loss-mask tokens (see `losses_supervised.on_tokens`),
so `loss_agg: seq_mean_token_mean` gives the mean over completions of a prompt, i.e. the mean
over its pairs. A completion's value then depends on the other completions' log-probs; the
gradient of the aggregated loss is still exact.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from postrl.algorithms.losses_supervised import need_groups, group_std, on_tokens, same_group, seq_sum
from postrl.algorithms.policy_losses import LossInputs, LossOutput, masked_mean, ppo_clip
from postrl.algorithms.registries import POLICY_LOSSES


def _pair_mean(pair_BB: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Per row i: mean over j of pair_BB[i, j] for the pairs of i's group (0 for a group of one)."""
    n = pairs.sum(-1)
    total = torch.where(pairs, pair_BB, torch.zeros_like(pair_BB)).sum(-1)
    return total / n.clamp(min=1).to(total.dtype)


@POLICY_LOSSES.register("p3o", paper="Pairwise Proximal Policy Optimization: Harnessing Relative Feedback "
                        "for LLM Alignment", arxiv="2310.00212", needs=("groups",),
                        summary="pairwise trajectory policy gradient on reward differences, clipped on the "
                                "pair's ratio")
def p3o(inp: LossInputs, *, clip: float = 0.2, is_cap: float = 10.0) -> LossOutput:
    """P3O with joint clipping (P3O-V2), over every pair (i, j) of a group.

        x_ij = log [rho_i / rho_j],  rho_i = pi_theta(y_i) / pi_old(y_i)   (sequence ratios)
        w_ij = sg(clip(rho_i rho_j, 1/is_cap, is_cap))                      (pair importance weight)
        L_ij = max(-(r_i - r_j) w_ij x_ij, -(r_i - r_j) w_ij clip(x_ij, -clip, clip)) / 2
        l_i  = mean_{j != i} L_ij

    On-policy (rho = 1) the gradient is the pairwise policy gradient (eq. 6), E[(r_1 - r_2)
    grad log(pi(y_1)/pi(y_2))] / 2; summed over a group of G it equals REINFORCE with the RLOO
    advantage r_i - mean_{j!=i} r_j. Only reward differences enter, so adding any constant to the
    rewards of a group changes nothing (reward-equivalence invariance, the paper's point).
    Formula and defaults from the authors' implementation (thwu1/trlx
    accelerate_p3o_trainer.p3o_loss with clip_tokenwise=False: cliprange 0.2, cliprange_ratio
    10); its clip bounds are written as [Delta_old - eps, Delta_old + eps] on the log-ratio
    difference, which is the clip of x_ij above. Their reward is KL-regularised (r - kl_coef
    log pi/pi_ref); here `inputs.rewards` is used as is: add a KL term with algorithm.kl_coef.
    The separately clipped variant (V1) is not implemented. Groups of one have no pair: loss 0.
    """
    rewards, idx, _ = need_groups(inp, "p3o")
    mask = inp.mask > 0
    log_rho = seq_sum(inp.logprobs - inp.old_logprobs, mask)
    pairs = same_group(idx)
    r = rewards.to(log_rho.dtype)
    q = (r[:, None] - r[None, :]).detach()
    x = log_rho[:, None] - log_rho[None, :]
    with torch.no_grad():
        w = torch.exp((log_rho[:, None] + log_rho[None, :]).clamp(max=30.0)).clamp(1.0 / is_cap, is_cap)
    unclipped = -q * w * x
    clipped = -q * w * x.clamp(-clip, clip)
    pair_loss = torch.maximum(unclipped, clipped) / 2
    per_seq = _pair_mean(pair_loss, pairs)
    with torch.no_grad():
        metrics = {"clip_frac": (clipped > unclipped)[pairs].float().mean() if pairs.any() else q.new_zeros(()),
                   "p3o_reward_gap": q.abs()[pairs].mean() if pairs.any() else q.new_zeros(()),
                   "p3o_log_ratio_abs": log_rho.abs().mean()}
    return LossOutput(on_tokens(per_seq, inp.mask), metrics)


@POLICY_LOSSES.register("copg", paper="Contrastive Policy Gradient: Aligning LLMs on sequence-level scores in "
                        "a supervised-friendly fashion", arxiv="2406.19185", needs=("groups", "reference"),
                        summary="off-policy contrastive pairwise regression on KL-regularised rewards, no "
                                "importance sampling")
def copg(inp: LossInputs, *, beta: float = 0.1) -> LossOutput:
    """Contrastive Policy Gradient over every pair (i, j) of a group, without importance weights.

        R_beta(y) = r(y) - beta * log [pi_theta(y) / pi_ref(y)]          (sequence log-ratio)
        L_ij      = (R_beta(y_i) - R_beta(y_j))^2 / (4 beta)
        l_i       = mean_{j != i} L_ij

    Per prompt this is the squared contrastive loss 1/(G-1) sum_{i>j} (R_beta(y_i) -
    R_beta(y_j))^2 (as summarised in the Command A report, which uses CoPG) divided by 2 beta:
    the scale makes its gradient the contrastive policy gradient -1/(G-1) sum_j (R_beta(y_i) -
    R_beta(y_j)) grad log pi(y_i), with the other completion's regularised reward as the
    baseline; at pi = pi_ref it is REINFORCE with RLOO advantages, for any beta. The minimiser
    (beta log pi/pi_ref matching reward differences, the KL-regularised optimum) is the
    paper's; the 1/(4 beta) scale is postrl's choice. No ratio to pi_old: the loss is valid on
    off-policy samples (the paper's point), so reuse across epochs needs no clip. Shifting a
    group's rewards by a constant changes nothing. beta = 0.1 is not confirmed from the paper;
    tune it per task. Groups of one: loss 0. Needs reference log-probs.
    """
    if beta <= 0:
        raise ValueError(f"copg: beta must be > 0 (the KL strength and the loss scale), got {beta}")
    rewards, idx, _ = need_groups(inp, "copg")
    if inp.ref_logprobs is None:
        raise ValueError("copg needs inputs.ref_logprobs: the trainer computes them because the entry needs "
                         "'reference'; pass ref_logprobs when calling the loss directly")
    mask = inp.mask > 0
    log_ratio = seq_sum(inp.logprobs - inp.ref_logprobs, mask)
    reg_reward = rewards.to(log_ratio.dtype) - beta * log_ratio
    pairs = same_group(idx)
    diff = reg_reward[:, None] - reg_reward[None, :]
    per_seq = _pair_mean(diff.square() / (4 * beta), pairs)
    with torch.no_grad():
        metrics = {"copg_reg_reward_gap": diff.abs()[pairs].mean() if pairs.any() else diff.new_zeros(()),
                   "copg_log_ratio_ref": log_ratio.mean()}
    return LossOutput(on_tokens(per_seq, inp.mask), metrics)


@POLICY_LOSSES.register("riskpo", paper="RiskPO: Risk-based Policy Optimization via Verifiable Reward for LLM "
                        "Post-Training", arxiv="2510.00911", needs=("groups",),
                        summary="PPO surrogate with Mixed-Value-at-Risk advantages from the group's reward "
                                "quantiles")
def riskpo(inp: LossInputs, *, alpha: float = 0.2, beta: float = 0.9, w_mix: float = 1.5,
           scale_by_std: bool = True, eps: float = 1e-6, clip_low: float = 0.2,
           clip_high: float = 0.2) -> LossOutput:
    """RiskPO: the mean-reward objective is replaced by a Mixed Value-at-Risk of the group's rewards.

        q_a, q_b = alpha- and beta-quantiles of the group's rewards (linear interpolation)
        A_RVaR   = (clip(r, q_a, q_b) - q_b) / (beta - alpha)     (grad of RVaR_[alpha,beta], natural baseline)
        A_CVaR   = -max(q_a - r, 0) / alpha                       (grad of the lower-tail CVaR_alpha)
        A        = (w_mix A_CVaR + A_RVaR) / (w_mix + 1)  [/ (std_G r + eps) if scale_by_std]
        l_t      = ppo_clip(rho_t, A)

    Responses above the beta-quantile get 0, the ones in between a negative weight growing with
    their distance to q_b, the lower tail an extra CVaR push: risk-averse updates that focus on
    hard instances (the paper's remedy for entropy collapse). Defaults are the official script
    (RTkenny/RiskPO scripts/run_qwen2.5_1.5b_MVaR_math.sh with core_algos
    grpo_bundle_RVaR_quantile_tracking: quantile_down 0.2, quantile_up 0.9, w_mix 1.5,
    norm_adv_by_std_in_grpo, natural_baseline_adv). The official code is an advantage estimator;
    here it is a loss over `inputs.rewards` and `inputs.advantages` is ignored. Deviations:
    quantiles come from this group ("batch" mode), not the running quantile tracker (lr_q = 0.1,
    cross-step state a loss does not keep); bundling several questions into one "paper" is not
    done (a bundle would have to stay whole in every micro-batch); hence the per-question std
    credit assignment reduces to the one group std. A group of one or with all-equal rewards
    has q_a = q_b = r: advantage 0.
    """
    if not 0 < alpha < beta <= 1:
        raise ValueError(f"riskpo: need 0 < alpha < beta <= 1, got alpha={alpha}, beta={beta}")
    rewards, idx, n = need_groups(inp, "riskpo")
    r = rewards.to(inp.advantages.dtype).detach()
    q_a, q_b = torch.empty_like(r), torch.empty_like(r)
    for g in range(n):  # groups differ in size; a loop over the few groups of a micro-batch
        rows = idx == g
        qs = torch.quantile(r[rows], torch.tensor([alpha, beta], dtype=r.dtype, device=r.device))
        q_a[rows], q_b[rows] = qs[0], qs[1]
    a_rvar = (torch.minimum(torch.maximum(r, q_a), q_b) - q_b) / (beta - alpha + eps)
    a_cvar = -torch.relu(q_a - r) / (alpha + eps)
    adv = (w_mix * a_cvar + a_rvar) / (w_mix + 1.0)
    if scale_by_std:
        adv = adv / (group_std(r, idx, n) + eps)
    adv_bt = adv[:, None] * (inp.mask > 0).to(adv.dtype)
    base = ppo_clip(replace(inp, advantages=adv_bt), clip_low=clip_low, clip_high=clip_high)
    metrics = dict(base.metrics)
    with torch.no_grad():
        metrics["riskpo_adv_mean"] = adv.mean()
        metrics["riskpo_lower_tail_frac"] = (r < q_a).float().mean()
        metrics["riskpo_adv_token_mean"] = masked_mean(adv_bt, inp.mask)
    return LossOutput(torch.where(inp.mask > 0, base.loss, torch.zeros_like(base.loss)), metrics)
