"""DPO with one auxiliary input: rationales, token-level guidance, another objective's margin, online samples.

Each entry is the DPO likelihood of `preference.py` changed by one signal beyond the pair's sequence
log-probs: dpo_rationale (the likelihood of a rationale, needs "rationales"), tgdpo (per-token
weights, needs "token_logps"), modpo (a margin from other objectives, needs "margins") and hypo (a
KL term on responses sampled online, needs "online_kl"). The need words are documented on
`PREFERENCE_LOSSES` (`registries.py`). Notation: u = log pi(y|x) - log pi_ref(y|x), h = u_w - u_l.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from postrl.algorithms.policy_losses import LossOutput, masked_mean
from postrl.algorithms.preference import PrefInputs, implicit_rewards, pair_metrics, require
from postrl.algorithms.registries import PREFERENCE_LOSSES

_PAIR = ("rejected_logps", "chosen_ref_logps", "rejected_ref_logps")


@PREFERENCE_LOSSES.register("dpo_rationale", paper="Data-Centric Human Preference Optimization with Rationales",
                            arxiv="2407.14477", needs=("reference", "rationales"),
                            summary="DPO plus the likelihood of a rationale explaining the preference")
def dpo_rationale(inp: PrefInputs, *, beta: float = 0.1, gamma: float = 0.1) -> LossOutput:
    """DPO with rationales: the preference and the rationale r (why y_w wins) are both maximised.

        l = -log sigmoid(beta h) - gamma * log pi(r | x, y_w, y_l)

    `rationale_logps` is log pi(r | x, y_w, y_l) summed over the rationale's tokens, with gradient
    (needs "rationales"). gamma = 0 is DPO. Defaults beta = gamma = 0.1 from the authors' rdpo
    config. At pi = pi_ref, l = log 2 - gamma * log pi(r | x, y_w, y_l).
    """
    require(inp, "dpo_rationale", *_PAIR, "rationale_logps")
    chosen, rejected = implicit_rewards(inp, beta)
    loss = -F.logsigmoid(chosen - rejected) - gamma * inp.rationale_logps
    metrics = pair_metrics(chosen, rejected)
    metrics["rationale/logps"] = inp.rationale_logps.detach().mean()
    return LossOutput(loss, metrics)


def _token_log_ratio(logps: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """u_t = log pi(y_t) - log pi_ref(y_t) on response tokens, 0 elsewhere (padding may hold anything)."""
    keep = mask > 0
    return torch.where(keep, logps, torch.zeros_like(logps)) - torch.where(keep, ref, torch.zeros_like(ref))


@PREFERENCE_LOSSES.register("tgdpo", paper="TGDPO: Harnessing Token-Level Reward Guidance for Enhancing Direct "
                            "Preference Optimization", arxiv="2506.14574", needs=("reference", "token_logps"),
                            summary="DPO whose per-token log-ratios are weighted by a token reward")
def tgdpo(inp: PrefInputs, *, beta: float = 0.1, alpha: float = 0.5) -> LossOutput:
    """TGDPO: each token's deviation from the reference is weighted by its token-level reward.

        u_t = log pi(y_t|x, y_<t) - log pi_ref(y_t|x, y_<t)
        h   = sum_t beta (1 + alpha r_t^w) u_t^w  -  sum_t beta (1 - alpha r_t^l) u_t^l
        l   = -log sigmoid(h)

    Deviation: the paper takes the token reward r_t = beta * log(pi_dpo / pi_ref)(y_t) from a
    separately trained DPO model. Here the guide is the current policy itself, detached,
    r_t = beta * sg(u_t), so no third model is loaded; the weights carry no gradient. At pi = pi_ref
    (the start of training) r_t = 0 and the loss is DPO on the token sums, log 2. alpha = 0 is DPO.
    Defaults beta = 0.1, alpha = 0.5 from the authors' Llama-3 example config.
    """
    require(inp, "tgdpo", "chosen_token_logps", "chosen_token_mask", "chosen_token_ref_logps",
            "rejected_token_logps", "rejected_token_mask", "rejected_token_ref_logps")
    u_w = _token_log_ratio(inp.chosen_token_logps, inp.chosen_token_ref_logps, inp.chosen_token_mask)
    u_l = _token_log_ratio(inp.rejected_token_logps, inp.rejected_token_ref_logps, inp.rejected_token_mask)
    with torch.no_grad():
        weight_w = beta * (1.0 + alpha * beta * u_w)  # r_t = beta * u_t, detached
        weight_l = beta * (1.0 - alpha * beta * u_l)
    chosen, rejected = (weight_w * u_w).sum(-1), (weight_l * u_l).sum(-1)
    metrics = pair_metrics(chosen, rejected)
    metrics["tgdpo/weight_chosen"] = masked_mean(weight_w / beta, inp.chosen_token_mask)
    metrics["tgdpo/weight_rejected"] = masked_mean(weight_l / beta, inp.rejected_token_mask)
    return LossOutput(-F.logsigmoid(chosen - rejected), metrics)


@PREFERENCE_LOSSES.register("modpo", paper="Beyond One-Preference-Fits-All Alignment: Multi-Objective Direct "
                            "Preference Optimization", arxiv="2310.03708", needs=("reference", "margins"),
                            summary="DPO on one objective with a margin from the others' rewards (multi-objective)")
def modpo(inp: PrefInputs, *, beta: float = 0.1, weight: float = 0.5) -> LossOutput:
    """MODPO: the policy is trained as the reward of objective k, the other objectives entering as a margin.

        m = r_phi(x, y_w) - r_phi(x, y_l)            (`margins`: the other objective's reward gap)
        l = -log sigmoid( (beta h - (1 - w) m) / w )

    w = `weight` in (0, 1] is the weight of the preference being trained; the other objective gets
    1 - w (with several, pass m = sum_j w_j / (1 - w) * gap_j). w = 1 ignores m and is DPO; m = 0
    is DPO with beta / w. The optimum is the policy of the w-weighted sum of rewards. At
    pi = pi_ref, l = -log sigmoid(-(1 - w) m / w). Defaults beta = 0.1, w = 0.5 from the authors'
    safety-alignment script.
    """
    if not 0.0 < weight <= 1.0:
        raise ValueError(f"modpo: weight must be in (0, 1], got {weight}")
    require(inp, "modpo", *_PAIR, "margins")
    chosen, rejected = implicit_rewards(inp, beta)
    logits = (chosen - rejected - (1.0 - weight) * inp.margins) / weight
    metrics = pair_metrics(chosen, rejected)
    metrics["modpo/margin"] = inp.margins.detach().mean()
    return LossOutput(-F.logsigmoid(logits), metrics)


@PREFERENCE_LOSSES.register("hypo", paper="The Importance of Online Data: Understanding Preference Fine-tuning "
                            "via Coverage", arxiv="2406.01462", needs=("reference", "online_kl"),
                            summary="offline DPO plus a reverse-KL penalty estimated on responses sampled online")
def hypo(inp: PrefInputs, *, beta: float = 0.1, kl_coef: float = 0.01) -> LossOutput:
    """HyPO: DPO on the offline pairs plus lambda * KL(pi || pi_ref) estimated on online samples.

        l_i = -log sigmoid(beta h_i) + lambda * k_i,   k_i = log pi(y~_i|x_i) - log pi_ref(y~_i|x_i)

    Offline: the DPO term, on the dataset's (x, y_w, y_l). Online, supplied by the trainer (needs
    "online_kl"): per example one response y~_i ~ pi(.|x_i) sampled from the current policy for the
    same prompt; `kl_logps` is its policy log-prob with gradient, `kl_ref_logps` its reference one.
    The KL gradient E[k grad log pi(y~)] is taken by REINFORCE: the term's value is k_i but its
    gradient is lambda (k_i - b_i) grad log pi(y~_i), with the leave-one-out baseline
    b_i = mean_{j != i} k_j over the batch (0 when B = 1). Deviation: the paper uses RLOO over several
    samples of one prompt; here the baseline comes from other prompts' samples (still unbiased).
    kl_coef = lambda (0.01 is our choice, not a paper value). At pi = pi_ref, l = log 2.
    """
    require(inp, "hypo", *_PAIR, "kl_logps", "kl_ref_logps")
    chosen, rejected = implicit_rewards(inp, beta)
    k = (inp.kl_logps - inp.kl_ref_logps).detach()
    n = k.shape[0]
    baseline = (k.sum() - k) / (n - 1) if n > 1 else torch.zeros_like(k)
    score = inp.kl_logps - inp.kl_logps.detach()  # value 0, gradient grad log pi(y~)
    kl_term = k + (k - baseline) * score
    metrics = pair_metrics(chosen, rejected)
    metrics["hypo/kl"] = k.mean()
    return LossOutput(-F.logsigmoid(chosen - rejected) + kl_coef * kl_term, metrics)
