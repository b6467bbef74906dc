"""Policy losses built on the importance ratio pi_theta/pi_old (or pi_theta/mu, mu the sampler).

`ppo_clip` (in `policy_losses`) clips r = pi_theta/pi_old at fixed bounds. This module owns the
variants that change what is clipped or how: a second bound for negative advantages (dual_clip),
a length-normalised sequence ratio (gspo, gspo_token), a soft gate instead of a clip (sapo), a
clipped, detached IS weight on a REINFORCE term (cispo), tapered sequence-level IS on negative
samples (topr), bounds that depend on the old probability (dcpo) or adapt to the batch (bapo).
GPG (2504.02546) has no entry here: its loss is `reinforce` exactly; what is new is its advantage
(the `gpg` estimator, a group-mean baseline scaled by B / B_valid).

Shared conventions: log-ratios are 0 on masked tokens (garbage there never reaches exp) and
clamped to +-20 (exp(20) ~ 5e8; beyond it float32 overflows and 0 * inf in backward gives NaN);
every loss is 0, with zero gradient, on masked tokens. Importing this module registers the entries.
"""

from __future__ import annotations

import math

import torch

from postrl.algorithms.policy_losses import LossInputs, LossOutput, masked_mean
from postrl.algorithms.registries import POLICY_LOSSES

_MAX_LOG_RATIO = 20.0


def _log_ratio(logp: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log(pi / ref) per token [B, T]: 0 on masked tokens, clamped to +-20."""
    diff = torch.where(mask > 0, logp - ref, torch.zeros_like(logp))
    return diff.clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)


def _on_mask(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x on policy tokens, 0 elsewhere (a `where`, so masked tokens pass back no gradient)."""
    return torch.where(mask > 0, x, torch.zeros_like(x))


def _seq_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over each sequence's masked tokens: [B, 1] (0 for an empty sequence)."""
    m = mask.to(x.dtype)
    return (x * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1.0)


def _surrogate(ratio, adv, low, high, clip_c: float | None = None):
    """PPO's -min(r A, clip(r, low, high) A); for A < 0 also at most clip_c |A| (dual clip).

    `low`/`high` are absolute ratio bounds (floats or tensors broadcasting to `ratio`).
    Returns the per-token loss, where the clipped term is active, where the dual bound is.
    """
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, low, high) * adv
    loss = -torch.minimum(unclipped, clipped)
    dual = None
    if clip_c is not None:
        bound = clip_c * adv.abs()  # = -c A for A < 0
        dual = (adv < 0) & (loss > bound)
        loss = torch.where(dual, bound, loss)
    return loss, clipped < unclipped, dual


def _clip_metrics(ratio, log_ratio, is_clipped, low, high, mask, dual=None) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        clipped = is_clipped.float()
        metrics = {
            "clip_frac": masked_mean(clipped, mask),
            "clip_frac_low": masked_mean(clipped * (ratio < low).float(), mask),
            "clip_frac_high": masked_mean(clipped * (ratio > high).float(), mask),
            "approx_kl_old": masked_mean(0.5 * log_ratio**2, mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
        if dual is not None:
            metrics["dual_clip_frac"] = masked_mean(dual.float(), mask)
    return metrics


def _check_clip_c(name: str, clip_c: float) -> None:
    if not clip_c > 1.0:
        raise ValueError(f"{name}: clip_c must be > 1 (it caps the loss of a negative-advantage token at "
                         f"clip_c * |A|, i.e. bounds ratios above 1); got {clip_c}")


@POLICY_LOSSES.register("dual_clip", paper="Mastering Complex Control in MOBA Games with Deep Reinforcement "
                        "Learning", arxiv="1912.09729",
                        summary="PPO clip plus a bound c*|A| on the loss of negative-advantage tokens")
def dual_clip(inp: LossInputs, *, clip_low: float = 0.2, clip_high: float = 0.2, clip_c: float = 3.0) -> LossOutput:
    """Dual-clip PPO: PPO's clipped surrogate with a second bound for negative advantages.

        r_t = pi_theta(y_t) / pi_old(y_t)
        A_t >= 0:  l_t = -min(r_t A_t, clip(r_t, 1 - eps_low, 1 + eps_high) A_t)
        A_t <  0:  l_t = min(-min(r_t A_t, clip(r_t, 1 - eps_low, 1 + eps_high) A_t), -c A_t)

    i.e. the objective max(min(r A, clip(r) A), c A) for A < 0: a token whose ratio exploded
    (r > c) contributes a constant c|A| and no gradient, instead of an unbounded r|A|. c = 3 is
    verl's `clip_ratio_c` default, which cites the paper; c must be > 1. For r < c it equals
    ppo_clip (eps 0.2, PPO's).
    """
    _check_clip_c("dual_clip", clip_c)
    log_ratio = _log_ratio(inp.logprobs, inp.old_logprobs, inp.mask)
    ratio = torch.exp(log_ratio)
    loss, clipped, dual = _surrogate(ratio, inp.advantages, 1.0 - clip_low, 1.0 + clip_high, clip_c)
    metrics = _clip_metrics(ratio, log_ratio, clipped, 1.0 - clip_low, 1.0 + clip_high, inp.mask, dual)
    return LossOutput(_on_mask(loss, inp.mask), metrics)


def _gspo(inp: LossInputs, clip_low: float, clip_high: float, per_token: bool) -> LossOutput:
    log_ratio = _log_ratio(inp.logprobs, inp.old_logprobs, inp.mask)
    log_s = _seq_mean(log_ratio, inp.mask)  # [B, 1]: log of the geometric mean of token ratios
    if per_token:  # same value; the gradient reaches each token through its own log-prob only
        logp = _on_mask(inp.logprobs, inp.mask)
        log_s = log_s.detach() + logp - logp.detach()
    s = torch.exp(log_s)
    loss, clipped, _ = _surrogate(s, inp.advantages, 1.0 - clip_low, 1.0 + clip_high)
    with torch.no_grad():
        has_tokens = (inp.mask.sum(-1) > 0).float()
        metrics = {
            "clip_frac": masked_mean(clipped.float(), inp.mask),
            "seq_ratio_mean": masked_mean(s.detach()[:, 0], has_tokens),
            "approx_kl_old": masked_mean(0.5 * log_ratio**2, inp.mask),
        }
    return LossOutput(_on_mask(loss, inp.mask), metrics)


@POLICY_LOSSES.register("gspo", paper="Group Sequence Policy Optimization", arxiv="2507.18071",
                        summary="clipped surrogate on the length-normalised sequence ratio (geometric mean)")
def gspo(inp: LossInputs, *, clip_low: float = 3e-4, clip_high: float = 4e-4) -> LossOutput:
    """GSPO (eq. 5): one importance ratio per sequence, clipped, applied to all its tokens.

        s_i = (pi_theta(y_i|x) / pi_old(y_i|x))^(1/|y_i|) = exp(1/|y_i| sum_t log r_{i,t})
        l_{i,t} = -min(s_i A_{i,t}, clip(s_i, 1 - eps_low, 1 + eps_high) A_{i,t})

    The sum runs over the sequence's masked tokens (policy tokens), so s_i is the geometric mean
    of its token ratios. eps_low = 3e-4, eps_high = 4e-4 are the paper's ranges (sequence ratios
    stay much nearer 1 than token ratios). With a sequence advantage and `loss_agg:
    seq_mean_token_mean` this is the paper's 1/G sum_i objective. A sequence with no policy token
    has s = 1 and loss 0. Gradient of token t: -A s_i / |y_i| (all tokens share it).
    """
    return _gspo(inp, clip_low, clip_high, per_token=False)


@POLICY_LOSSES.register("gspo_token", paper="Group Sequence Policy Optimization", arxiv="2507.18071",
                        summary="GSPO-token: sequence ratio value with a per-token gradient path")
def gspo_token(inp: LossInputs, *, clip_low: float = 3e-4, clip_high: float = 4e-4) -> LossOutput:
    """GSPO-token: GSPO's ratio value, differentiated through each token alone.

        s_{i,t} = sg[s_i] * pi_theta(y_{i,t}) / sg[pi_theta(y_{i,t})]     (value = s_i)
        l_{i,t} = -min(s_{i,t} A_{i,t}, clip(s_{i,t}, 1 - eps_low, 1 + eps_high) A_{i,t})

    Gradient of token t: -A_{i,t} s_i (unclipped), so per-token advantages are honoured; with
    one advantage per sequence and `seq_mean_token_mean` it matches gspo exactly.
    """
    return _gspo(inp, clip_low, clip_high, per_token=True)


@POLICY_LOSSES.register("sapo", paper="Soft Adaptive Policy Optimization", arxiv="2511.20347",
                        summary="smooth sigmoid gate on the token ratio instead of a hard clip; tau_neg > tau_pos")
def sapo(inp: LossInputs, *, tau_pos: float = 1.0, tau_neg: float = 1.05) -> LossOutput:
    """SAPO: replace clip(r) by a temperature-controlled soft gate of the token ratio.

        f(r) = (4 / tau) * sigmoid(tau (r - 1)),   tau = tau_pos if A > 0 else tau_neg
        l_t  = -f(r_t) A_t
        dl_t/dlog pi = -4 sigmoid(tau(r-1)) (1 - sigmoid(tau(r-1))) r_t A_t   (= -A_t at r = 1)

    The gradient weight peaks at r = 1 and decays smoothly as the token goes off-policy, so
    only strongly off-policy tokens are damped. tau_neg > tau_pos damps negative-advantage
    tokens faster (their updates spread mass over many unsampled tokens); defaults 1.0 / 1.05
    are the paper's recommendation (ms-swift SAPO docs, SkyRL's SAPO example). The paper
    aggregates 1/G sum_i 1/|y_i| sum_t (`seq_mean_token_mean`).
    """
    if tau_pos <= 0 or tau_neg <= 0:
        raise ValueError(f"sapo: temperatures must be > 0; got tau_pos={tau_pos}, tau_neg={tau_neg}")
    log_ratio = _log_ratio(inp.logprobs, inp.old_logprobs, inp.mask)
    ratio = torch.exp(log_ratio)
    tau = torch.where(inp.advantages > 0, torch.full_like(ratio, tau_pos), torch.full_like(ratio, tau_neg))
    gate = torch.sigmoid(tau * (ratio - 1.0))
    loss = -(4.0 / tau) * gate * inp.advantages
    with torch.no_grad():
        metrics = {"gate_weight_mean": masked_mean(4.0 * gate * (1.0 - gate), inp.mask),
                   "approx_kl_old": masked_mean(0.5 * log_ratio**2, inp.mask),
                   "ratio_mean": masked_mean(ratio, inp.mask)}
    return LossOutput(_on_mask(loss, inp.mask), metrics)


@POLICY_LOSSES.register("cispo", paper="MiniMax-M1: Scaling Test-Time Compute Efficiently with Lightning "
                        "Attention", arxiv="2506.13585",
                        summary="REINFORCE weighted by a clipped, detached IS ratio: no token loses its gradient")
def cispo(inp: LossInputs, *, clip_low: float = 1.0, clip_high: float = 0.2) -> LossOutput:
    """CISPO: clip the importance-sampling weight, not the update.

        r_hat_t = clip(r_t, 1 - eps_low, 1 + eps_high)
        l_t     = -sg(r_hat_t) A_t log pi_theta(y_t)        gradient: -r_hat_t A_t

    Every token keeps a gradient (PPO zeroes it outside the trust region). The paper imposes no
    lower bound ("setting eps_low to a large value"): clip_low = 1.0 makes the bound 0. It tunes
    only eps_high and does not publish the value; 0.2 is verl's CISPO example (`clip_ratio_high`).
    The paper aggregates over all tokens of the batch (`token_mean`). The loss value is a
    log-likelihood surrogate, not the objective; only its gradient is meaningful.
    """
    log_ratio = _log_ratio(inp.logprobs, inp.old_logprobs, inp.mask)
    with torch.no_grad():
        ratio = torch.exp(log_ratio)
        weight = ratio.clamp(max(1.0 - clip_low, 0.0), 1.0 + clip_high)
        metrics = {"clip_frac_high": masked_mean((ratio > 1.0 + clip_high).float(), inp.mask),
                   "clip_frac_low": masked_mean((ratio < 1.0 - clip_low).float(), inp.mask),
                   "approx_kl_old": masked_mean(0.5 * log_ratio**2, inp.mask),
                   "ratio_mean": masked_mean(ratio, inp.mask)}
    loss = -weight * inp.advantages * _on_mask(inp.logprobs, inp.mask)
    return LossOutput(_on_mask(loss, inp.mask), metrics)


@POLICY_LOSSES.register("topr", paper="Tapered Off-Policy REINFORCE: Stable and efficient reinforcement "
                        "learning for LLMs", arxiv="2503.14286",
                        summary="REINFORCE; positive sequences weight 1, negative ones sg(clip(pi/mu, 0, 1))")
def topr(inp: LossInputs, *, split: str = "reward", threshold: float = 0.0) -> LossOutput:
    """TOPR: asymmetric, tapered (truncated) importance sampling on whole sequences.

        w_i = 1                                       if R_i >= threshold   (positive)
        w_i = sg(clip(pi_theta(y_i|x) / mu(y_i|x), 0, 1))                 otherwise
        l_{i,t} = -w_i A_{i,t} log pi_theta(y_{i,t})

    pi(y_i|x)/mu(y_i|x) = exp(sum_t log pi - log mu) over the sequence's policy tokens, with mu
    the behaviour policy (`behavior_logprobs`, else `old_logprobs`). Positives get an SFT-like
    gradient however unlikely they became; a negative's push-down shrinks with pi(y)/mu(y) once
    pi(y) < mu(y), so the objective stays bounded and off-policy training is stable without KL.
    The paper multiplies by R(tau) and splits on R(tau) >= 0; here the factor is the advantage A
    (pass the reward through the advantage estimator to match exactly) and `split` chooses the
    sign test: "reward" uses `inputs.rewards` (required), "advantage" the sequence's mean
    advantage (Trinity-RFT's rule).
    With {0, 1} rewards and threshold 0 every sample is positive: use rewards signed around the
    threshold (e.g. +-1) or threshold 0.5.
    """
    if split not in ("reward", "advantage"):
        raise ValueError(f"topr: split must be 'reward' or 'advantage', got {split!r}")
    if split == "reward" and inp.rewards is None:
        raise ValueError("topr: split='reward' needs the sequence rewards (inputs.rewards) to tell positive "
                         "from negative samples; the learner sets them from the batch, so score the batch "
                         "first, or use split='advantage'")
    mu = inp.behavior_logprobs if inp.behavior_logprobs is not None else inp.old_logprobs
    with torch.no_grad():
        key = (inp.rewards.to(inp.advantages.dtype) if split == "reward"
               else _seq_mean(inp.advantages, inp.mask)[:, 0])
        positive = key >= threshold
        diff = torch.where(inp.mask > 0, inp.logprobs - mu, torch.zeros_like(mu))
        taper = torch.exp(diff.sum(-1).clamp(max=0.0))  # clip(pi/mu, 0, 1) in log space: no overflow
        w = torch.where(positive, torch.ones_like(taper), taper)
        negative = (~positive).float()
        metrics = {"neg_frac": negative.mean(),
                   "neg_weight_mean": masked_mean(taper, negative)}
    loss = -w[:, None] * inp.advantages * _on_mask(inp.logprobs, inp.mask)
    return LossOutput(_on_mask(loss, inp.mask), metrics)


@POLICY_LOSSES.register("dcpo", paper="DCPO: Dynamic Clipping Policy Optimization", arxiv="2509.02333",
                        summary="token clip bounds widening as the old probability q falls")
def dcpo(inp: LossInputs, *, clip_low: float = 0.2, clip_high: float = 0.28, max_ratio: float = 10.0,
         clip_c: float = 10.0) -> LossOutput:
    """DCPO dynamic-adaptive clipping: bounds from |(r - 1) p| <= eps, with p = r q.

        q_t = pi_old(y_t)
        0.5 + 0.5 sqrt(max(1 - 4 eps_low / q_t, 0)) <= r_t <= min(0.5 + 0.5 sqrt(1 + 4 eps_high / q_t), max_ratio)
        l_t = -min(r_t A_t, clip(r_t, low_t, high_t) A_t),  and for A_t < 0 at most clip_c |A_t|

    Rare tokens (small q) may move further: q = 0.01, eps 0.16/0.2 allows p in [0.005, 0.05]
    (paper's table); confident ones stay near PPO's window. Defaults follow the released code
    and run script (lime-RL/DCPO `get_clip_low_high`, recipe/dcpo/run_dcpo.sh: eps_low 0.2,
    eps_high 0.28, `clip_ratio_c` 10, used both as the cap of the upper bound, at least 10, and
    as a dual clip for A < 0). The README's table illustrates eps 0.16/0.2. DCPO's other parts,
    smooth advantage standardisation and its OTM aggregation, are not in this loss.
    """
    _check_clip_c("dcpo", clip_c)
    log_ratio = _log_ratio(inp.logprobs, inp.old_logprobs, inp.mask)
    ratio = torch.exp(log_ratio)
    with torch.no_grad():
        # q -> 0 would divide by zero; at 1e-30 the bounds have long reached 0.5 and max_ratio
        q = torch.exp(_on_mask(inp.old_logprobs, inp.mask)).clamp(min=1e-30)
        low = 0.5 + 0.5 * torch.sqrt((1.0 - 4.0 * clip_low / q).clamp(min=0.0))
        high = (0.5 + 0.5 * torch.sqrt(1.0 + 4.0 * clip_high / q)).clamp(max=max_ratio)
    loss, clipped, dual = _surrogate(ratio, inp.advantages, low, high, clip_c)
    metrics = _clip_metrics(ratio, log_ratio, clipped, low, high, inp.mask, dual)
    with torch.no_grad():
        metrics.update(low_mean=masked_mean(low, inp.mask), high_mean=masked_mean(high, inp.mask))
    return LossOutput(_on_mask(loss, inp.mask), metrics)


def _ladder(start: float, stop: float, step: float) -> list[float]:
    """start, start + step, ... up to stop (stop included); rounded so steps land on round values."""
    if step <= 0 or stop <= start:
        return [start]
    n = math.ceil((stop - start) / step - 1e-9)
    return [round(min(start + k * step, stop), 12) for k in range(n + 1)]


@POLICY_LOSSES.register("bapo", paper="BAPO: Stabilizing Off-Policy Reinforcement Learning for LLMs via "
                        "Balanced Policy Optimization with Adaptive Clipping", arxiv="2510.18927",
                        summary="per-batch clip bounds widened until positive tokens reach a share rho0 of the loss")
def bapo(inp: LossInputs, *, rho0: float = 0.5, clip_low_start: float = 0.6, clip_low_max: float = 0.9,
         clip_high_start: float = 1.2, clip_high_max: float = 3.0, low_step: float = 0.05,
         high_step: float = 0.05, clip_c: float = 3.0) -> LossOutput:
    """BAPO: PPO clipping whose bounds [c_low, c_high] adapt so positive tokens are not drowned out.

        contribution_t(c_low, c_high) = min(r_t, c_high) A_t     if A_t >= 0
                                      = max(r_t, c_low) A_t      if A_t <  0
        rho = sum_{A>0} contribution / sum |contribution|         (positive share of the loss)
        search: c_low = a-, c_high = a+; raise c_low by low_step up to b-, then c_high by
                high_step up to b+, stopping at the first (c_low, c_high) with rho >= rho0
        l_t = -min(r_t A_t, clip(r_t, c_low, c_high) A_t),  and for A_t < 0 at most clip_c |A_t|

    Bounds are absolute ratios, not epsilons. Raising c_high lets low-probability positive
    tokens keep their gradient (raises entropy); raising c_low drops the gradient of negative
    tokens the policy already pushed down (r < c_low). Defaults: rho0 = 0.5 and the ranges
    [a-, b-] = [0.6, 0.9], [a+, b+] = [1.2, 3.0] are the paper's (WooooDyy/BAPO README); the
    0.05 steps, the search order and contribution measure, and the dual clip c = 3 follow the
    official verl recipe (recipe/bapo/policy_loss.py). If no bounds reach rho0 the widest are
    used; with no nonzero advantage the start bounds are kept.

    The search runs over the tokens this call receives, i.e. one micro-batch: with several
    micro-batches per update each gets its own bounds (the official recipe also searches per
    micro-batch, but all-reduces the sums across data-parallel ranks; here each rank decides
    alone). All candidates are scored in one tensor op, without host syncs.
    """
    _check_clip_c("bapo", clip_c)
    if not (0.0 <= rho0 <= 1.0):
        raise ValueError(f"bapo: rho0 is a share of the loss and must lie in [0, 1]; got {rho0}")
    log_ratio = _log_ratio(inp.logprobs, inp.old_logprobs, inp.mask)
    ratio = torch.exp(log_ratio)
    adv = inp.advantages
    lows = _ladder(clip_low_start, clip_low_max, low_step)
    highs = _ladder(clip_high_start, clip_high_max, high_step)
    path = [(lo, highs[0]) for lo in lows] + [(lows[-1], hi) for hi in highs[1:]]
    with torch.no_grad():
        cand = torch.tensor(path, dtype=ratio.dtype, device=ratio.device)  # [K, 2]
        lo_k, hi_k = cand[:, 0, None, None], cand[:, 1, None, None]
        r = ratio.detach()[None]
        contrib = torch.where(adv[None] >= 0, torch.minimum(r, hi_k), torch.maximum(r, lo_k)) * adv[None]
        contrib = torch.where(inp.mask[None] > 0, contrib, torch.zeros_like(contrib))  # [K, B, T]
        pos = contrib.clamp(min=0).sum((1, 2))
        neg = (-contrib).clamp(min=0).sum((1, 2))
        ok = pos >= rho0 * (pos + neg)
        k = torch.where(ok.any(), ok.float().argmax(), torch.tensor(len(path) - 1, device=ok.device))
        c_low, c_high = cand[k, 0], cand[k, 1]
    loss, clipped, dual = _surrogate(ratio, adv, c_low, c_high, clip_c)
    metrics = _clip_metrics(ratio, log_ratio, clipped, c_low, c_high, inp.mask, dual)
    with torch.no_grad():
        metrics.update(clip_low=c_low, clip_high=c_high,
                       pos_share=pos[k] / (pos[k] + neg[k]).clamp(min=1e-12))
    return LossOutput(_on_mask(loss, inp.mask), metrics)
