"""Losses that control the policy's entropy: Clip-Cov, KL-Cov, GTPO, EPO.

All four start from the PPO surrogate (`policy_losses.ppo_clip`) and change the treatment of
a few tokens or completions: the ones whose log-prob most covaries with the advantage
(Clip-Cov, KL-Cov), tokens shared by good and bad completions of one prompt (GTPO), or tokens
whose entropy leaves a corridor around a reference entropy (EPO). Per-token losses, no
reduction; the covariance statistics are taken over the loss-mask tokens of the micro-batch
the loss sees, as in the official verl implementation (which also works per micro-batch).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from postrl.algorithms.losses_supervised import group_index, same_group
from postrl.algorithms.policy_losses import LossInputs, LossOutput, masked_mean, ppo_clip
from postrl.algorithms.registries import POLICY_LOSSES


def _centred_cov(inp: LossInputs) -> torch.Tensor:
    """Cov(y_t) = (log pi(y_t) - mean log pi) * (A_t - mean A) over loss-mask tokens (eq. 10); -inf off-mask."""
    mask = inp.mask > 0
    logp = inp.logprobs.detach()
    lp = torch.where(mask, logp, torch.zeros_like(logp))
    adv = torch.where(mask, inp.advantages, torch.zeros_like(inp.advantages))
    cov = (lp - masked_mean(lp, inp.mask)) * (adv - masked_mean(adv, inp.mask))
    return torch.where(mask, cov, torch.full_like(cov, float("-inf")))


def _count(fraction: float, n_tokens: int) -> int:
    # the official code selects at least one token whenever the fraction is positive
    return max(int(fraction * n_tokens), 1) if fraction > 0 and n_tokens > 0 else 0


@POLICY_LOSSES.register("clip_cov", paper="The Entropy Mechanism of Reinforcement Learning for Reasoning "
                        "Language Models", arxiv="2505.22617",
                        summary="PPO surrogate with the gradient detached on a random few high-covariance tokens")
def clip_cov(inp: LossInputs, *, clip_low: float = 0.2, clip_high: float = 0.2, clip_ratio: float = 2e-4,
             cov_lb: float = 1.0, cov_ub: float = 5.0, seed: int = 0) -> LossOutput:
    """Clip-Cov (sec. 4.2, eqs. 10-12): detach a random r-fraction of tokens with Cov in (cov_lb, cov_ub).

        Cov_t  = (log pi(y_t) - mean log pi) (A_t - mean A)           over the N loss-mask tokens
        I_clip = Uniform({t : cov_lb < Cov_t < cov_ub, t not already PPO-clipped}, max(floor(r N), 1))
        l_t    = ppo_clip_t                 for t not in I_clip
                 sg(ppo_clip_t)             for t in I_clip  (value kept, gradient 0)

    Defaults are the paper's (sec. 4.3): r = 2e-4, omega_low = 1, omega_high = 5, on GRPO's
    clipped surrogate (eps = 0.2). The official code (PRIME-RL/Entropy-Mechanism-of-RL,
    compute_policy_loss_clip_cov) skips tokens the PPO clip already zeroes and multiplies the
    chosen tokens' loss by 0; here their value is kept (detached), the gradient is the same.
    Reproducible choice: the torch.Generator is seeded with `seed` combined with the sum of the
    micro-batch's loss-mask token ids (or the token count when `token_ids` is None), so the same
    batch and seed choose the same tokens on any device. No candidate, or clip_ratio = 0: the
    loss is exactly ppo_clip.
    """
    base = ppo_clip(inp, clip_low=clip_low, clip_high=clip_high)
    mask = inp.mask > 0
    with torch.no_grad():
        ratio = torch.exp(inp.logprobs - inp.old_logprobs)
        unclipped = ratio * inp.advantages
        clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * inp.advantages
        cov = _centred_cov(inp)
        cand = mask & (clipped >= unclipped) & (cov > cov_lb) & (cov < cov_ub)
        n_tokens = int(mask.sum())
        cand_idx = cand.flatten().nonzero().flatten()
        k = min(_count(clip_ratio, n_tokens), cand_idx.numel())
        chosen = torch.zeros_like(mask)
        if k > 0:
            salt = int(torch.where(mask, inp.token_ids, 0).sum()) if inp.token_ids is not None else n_tokens
            gen = torch.Generator().manual_seed((seed * 1_000_003 + salt) % (2 ** 63))
            pick = cand_idx[torch.randperm(cand_idx.numel(), generator=gen)[:k].to(cand_idx.device)]
            chosen.view(-1)[pick] = True
    loss = torch.where(chosen, base.loss.detach(), base.loss)
    loss = torch.where(mask, loss, torch.zeros_like(loss))
    metrics = dict(base.metrics)
    with torch.no_grad():
        metrics["cov_detach_frac"] = masked_mean(chosen.float(), inp.mask)
        metrics["cov_candidate_frac"] = masked_mean(cand.float(), inp.mask)
    return LossOutput(loss, metrics)


@POLICY_LOSSES.register("kl_cov", paper="The Entropy Mechanism of Reinforcement Learning for Reasoning "
                        "Language Models", arxiv="2505.22617",
                        summary="|log pi - log pi_old| penalty on the top-k fraction of tokens by covariance")
def kl_cov(inp: LossInputs, *, top_k_ratio: float = 2e-3, kl_coef: float = 1.0,
           clip_low: float | None = None, clip_high: float | None = None) -> LossOutput:
    """KL-Cov (sec. 4.2, eqs. 13-14): a KL penalty on the top-k fraction of tokens by covariance.

        Cov_t = (log pi(y_t) - mean log pi) (A_t - mean A)           over the N loss-mask tokens
        I_KL  = {t : Rank(Cov_t) <= max(floor(k N), 1)}
        l_t   = -rho_t A_t + beta |log pi(y_t) - log pi_old(y_t)| 1[t in I_KL],   rho_t = pi/pi_old

    Defaults are the paper's: k = 2e-3 (Qwen2.5-7B; 2e-4 for 32B), beta = 1. Like eq. 14 and the
    official compute_policy_loss_kl_cov, the surrogate is unclipped; give clip_low / clip_high to
    put the penalty on ppo_clip instead. With top_k_ratio = 0 the loss is the surrogate alone.
    Ties in Cov are broken by torch.topk (deterministic on CPU).
    """
    if (clip_low is None) != (clip_high is None):
        raise ValueError("kl_cov: give both clip_low and clip_high (PPO-clipped surrogate) or neither (eq. 14)")
    if clip_low is None:
        ratio = torch.exp(inp.logprobs - inp.old_logprobs)
        surrogate = -ratio * inp.advantages
        metrics = {"ratio_mean": masked_mean(ratio.detach(), inp.mask)}
    else:
        base = ppo_clip(inp, clip_low=clip_low, clip_high=clip_high)
        surrogate, metrics = base.loss, dict(base.metrics)
    mask = inp.mask > 0
    with torch.no_grad():
        cov = _centred_cov(inp)
        k = _count(top_k_ratio, int(mask.sum()))
        chosen = torch.zeros_like(mask)
        if k > 0:
            chosen.view(-1)[torch.topk(cov.flatten(), k).indices] = True
    abs_kl = (inp.logprobs - inp.old_logprobs).abs()
    loss = surrogate + kl_coef * torch.where(chosen, abs_kl, torch.zeros_like(abs_kl))
    loss = torch.where(mask, loss, torch.zeros_like(loss))
    with torch.no_grad():
        metrics["cov_penalized_frac"] = masked_mean(chosen.float(), inp.mask)
        metrics["abs_kl_old"] = masked_mean(abs_kl, inp.mask)
    return LossOutput(loss, metrics)


@POLICY_LOSSES.register("gtpo", paper="GTPO: Trajectory-Based Policy Optimization in Large Language Models",
                        arxiv="2508.03772", needs=("groups",),
                        summary="protect conflict tokens (no negative update, amplified positive) and drop "
                                "high-entropy completions")
def gtpo(inp: LossInputs, *, clip_low: float = 0.2, clip_high: float = 0.2, conflict_weight: float = 2.0,
         entropy_threshold: float = 0.7, entropy_coef: float = 0.1) -> LossOutput:
    """GTPO: conflict-token protection and an entropy filter on top of the PPO surrogate.

        s_i        = sign of completion i's advantage (mean of A_t over its tokens)
        conflict   = token y_it equals y_jt at the same position t for some j of the group with s_j = -s_i
        w_it       = conflict_weight if conflict and s_i > 0;  0 if conflict and s_i < 0;  1 otherwise
        H_i        = mean token entropy of completion i;  keep_i = H_i <= entropy_threshold
        A'_it      = keep_i * (A_it - entropy_coef * H_i)
        l_it       = w_it * ppo_clip(rho_it, A'_it)

    Defaults are the official runtime knobs (winstonsmith1897/GTPO config.yaml / README:
    ent_threshold 0.7, ent_scale 0.1, w_raw 2.0); entropy is the current policy's, detached.
    Deviations from the official gtpo_training.py: conflicts are every same-position match (the
    paper's wording), not only the leading and trailing runs the code marks; the code's division
    of a completion's loss by its number of conflict tokens is not applied; the clipped PPO
    surrogate replaces its ratio-one REINFORCE. With no conflict, no filtered completion and
    entropy_coef = 0 the loss equals ppo_clip. Needs `inputs.token_ids` and `inputs.entropy`.
    Cost: the conflict search compares all rows pairwise, O(B^2 T) booleans per micro-batch.
    """
    if inp.entropy is None or inp.token_ids is None:
        missing = "inputs.entropy" if inp.entropy is None else "inputs.token_ids"
        raise ValueError(f"gtpo needs {missing}: the learner passes the forward's entropy and the completion "
                         "token ids; when calling the loss directly pass them in LossInputs")
    if inp.group_ids is None:
        raise ValueError("gtpo needs inputs.group_ids: its entry needs 'groups', so the learner sets them; "
                         "pass group_ids when calling the loss directly")
    mask = inp.mask > 0
    idx, _ = group_index(inp.group_ids)
    with torch.no_grad():
        n_tok = mask.sum(-1).clamp(min=1)
        seq_adv = torch.where(mask, inp.advantages, torch.zeros_like(inp.advantages)).sum(-1) / n_tok
        ent = torch.where(mask, inp.entropy.detach(), torch.zeros_like(inp.entropy)).sum(-1) / n_tok
        sign = torch.sign(seq_adv)
        opposite = same_group(idx) & (sign[:, None] * sign[None, :] < 0)  # [B, B]
        match = (inp.token_ids[:, None, :] == inp.token_ids[None, :, :]) & mask[:, None, :] & mask[None, :, :]
        conflict = (match & opposite[:, :, None]).any(1)  # [B, T]
        w = torch.ones_like(inp.advantages)
        w = torch.where(conflict & (sign > 0)[:, None], torch.full_like(w, conflict_weight), w)
        w = torch.where(conflict & (sign < 0)[:, None], torch.zeros_like(w), w)
        keep = ent <= entropy_threshold
        adv = torch.where(keep[:, None] & mask, inp.advantages - entropy_coef * ent[:, None],
                          torch.zeros_like(inp.advantages))
    base = ppo_clip(replace(inp, advantages=adv), clip_low=clip_low, clip_high=clip_high)
    metrics = dict(base.metrics)
    with torch.no_grad():
        metrics["gtpo_conflict_frac"] = masked_mean(conflict.float(), inp.mask)
        metrics["gtpo_filtered_frac"] = (~keep).float().mean()
        metrics["gtpo_mean_entropy"] = ent.mean()
    return LossOutput(torch.where(mask, w * base.loss, torch.zeros_like(base.loss)), metrics)


def _turn_mean(x: torch.Tensor, turn_ids: torch.Tensor, mask: torch.Tensor, *, per_pair: bool = False):
    """x [B, T] averaged over the mask tokens of each (row, turn): broadcast back to [B, T] (tokens
    outside every turn keep x), or with `per_pair` the mean of those turn means (a scalar)."""
    K = int(turn_ids.max().item()) + 1 if turn_ids.numel() else 0
    if K <= 0:
        return masked_mean(x, mask) if per_pair else x
    onehot = ((turn_ids[..., None] == torch.arange(K, device=x.device)) & mask[..., None]).to(x.dtype)  # [B, T, K]
    count = onehot.sum(1)  # [B, K]
    means = (x[..., None] * onehot).sum(1) / count.clamp(min=1)
    if per_pair:
        present = count > 0
        return means[present].mean() if present.any() else x.new_zeros(())
    inside = onehot.sum(-1) > 0
    return torch.where(inside, (onehot * means[:, None, :]).sum(-1), x)


@POLICY_LOSSES.register("epo", paper="EPO: Entropy-regularized Policy Optimization for LLM Agents "
                        "Reinforcement Learning", arxiv="2509.22576",
                        summary="PPO surrogate + entropy bonus + a penalty keeping entropy in a corridor "
                                "around a reference entropy", needs=("entropy_grad",))
def epo(inp: LossInputs, *, clip_low: float = 0.2, clip_high: float = 0.2, entropy_coef: float = 1e-3,
        smooth_coef: float = 0.1, low_ratio: float = 0.5, high_ratio: float = 1.5,
        reference_entropy: float | None = None, per_turn: bool = True) -> LossOutput:
    """EPO: entropy regularisation with an entropy-smoothing corridor (sec. 4).

        H_ref = reference_entropy, or -mean_t log pi_old(y_t) over the micro-batch's loss-mask tokens
        P_t   = relu(low_ratio * H_ref - H_t) + relu(H_t - high_ratio * H_ref)
        l_t   = ppo_clip_t - beta * (H_t - smooth_coef * P_t)

    The paper's reference is the historical average entropy H_bar (a running mean over past
    steps), a cross-step state a postrl loss does not keep. Instead the default estimates the
    entropy of this batch's old policy: tokens sampled from pi_old give E[-log pi_old(y)] =
    H(pi_old), so -mean log pi_old is an unbiased estimate (biased under top-p/top-k sampling).
    The corridor then bounds how far one update moves the entropy from the policy that generated
    the data (a one-step smoother). Pass `reference_entropy` to use a fixed value, e.g. a
    historical average tracked outside the loss. Deviation: the paper's penalty is an
    indicator, alpha * 1[H outside the corridor], whose gradient is zero almost everywhere
    (also in the official code, where the mask is a constant); here it is the hinge distance to
    the corridor, which pushes H back inside. Defaults: beta = 1e-3 (entropy_coeff), corridor
    [0.5, 1.5] x H_ref and smooth_coef = alpha * lambda = 0.1 * 1.0 (entropy_smooth_min/max_ratio,
    out_range_penalty, entropy_smooth_coeff in WujiangXu/EPO examples/general_running_server.sh).
    The phase-based weight beta_k (a schedule over training steps) is not part of a loss: change
    entropy_coef between runs or stages. `inputs.entropy` must carry gradient: the entry needs
    "entropy_grad", so the learner builds it.

    Multi-turn (per_turn = True and `inputs.turn_ids` set, i.e. agent batches): the entropy is
    measured per TURN, the paper's trajectory entropy averaged over turns, so a long turn does not
    outweigh the others inside it:

        H_k   = mean_{t in turn k} H_t          (loss-mask tokens of turn k of the row)
        H_ref = mean over the batch's (row, turn) pairs of mean_{t in turn k} -log pi_old(y_t)
        P_k   = relu(low_ratio * H_ref - H_k) + relu(H_k - high_ratio * H_ref)
        l_t   = ppo_clip_t - beta * (H_k - smooth_coef * P_k)     for every token t of turn k

    The paper bounds H_k by a running average over past training steps; a loss keeps no state
    across steps, so H_ref is this batch's turn-averaged old-policy entropy (or
    `reference_entropy`). Without turn_ids (single-turn batches) the per-token form above applies.
    """
    if inp.entropy is None:
        raise ValueError("epo needs inputs.entropy: the learner passes the forward's entropy; when calling "
                         "the loss directly set LossInputs.entropy")
    if inp.logprobs.requires_grad and not inp.entropy.requires_grad:
        raise ValueError("epo needs the entropy with gradient, but inputs.entropy has none: its registry "
                         "entry needs 'entropy_grad'; when calling the loss directly pass an entropy with grad")
    base = ppo_clip(inp, clip_low=clip_low, clip_high=clip_high)
    mask = inp.mask > 0
    ent = torch.where(mask, inp.entropy, torch.zeros_like(inp.entropy))
    turns = per_turn and inp.turn_ids is not None
    if turns:  # the turn's mean entropy on each of its tokens; H_ref = mean over (row, turn) pairs
        ent = _turn_mean(ent, inp.turn_ids, mask)
        old_turn = _turn_mean(torch.where(mask, -inp.old_logprobs.detach(), torch.zeros_like(ent)), inp.turn_ids,
                              mask, per_pair=True)
    if reference_entropy is None:
        h_ref = old_turn if turns else masked_mean(-inp.old_logprobs.detach(), inp.mask)
    else:
        h_ref = torch.as_tensor(reference_entropy, dtype=ent.dtype, device=ent.device)
    outside = torch.relu(low_ratio * h_ref - ent) + torch.relu(ent - high_ratio * h_ref)
    reg = entropy_coef * (ent - smooth_coef * outside)
    loss = torch.where(mask, base.loss - reg, torch.zeros_like(reg))
    metrics = dict(base.metrics)
    with torch.no_grad():
        metrics["epo_reference_entropy"] = h_ref
        metrics["epo_outside_frac"] = masked_mean((outside > 0).float(), inp.mask)
        metrics["epo_per_turn"] = torch.tensor(float(turns))
    return LossOutput(loss, metrics)
