"""Online and self-play preference losses: XPO, Nash-MD, Nash-MP, INPO and SPPO.

Each entry trains on responses the trainer samples during training (`trainers/online_pref.py`),
judged by a preference model or reward. What each needs beyond the pair's log-probs is a need
word on PREFERENCE_LOSSES (`registries.py`): "reference_sample" (XPO: the policy log-prob of a
reference sample, `ref_sample_logps`), "win_prob" (the judge's P(chosen beats rejected),
`chosen_win_prob`), "win_rates" (SPPO: each response's win rate against its group), "mixture_opponent"
(Nash-MD: the opponent comes from the geometric mixture, `rollout/mixture.py`), "prox_opponent"
(Nash-MP's two-step schedule) and "previous_iterate" (INPO, SPPO: `*_prev_logps` under a frozen
snapshot pi_t). With "mixture_opponent" / "prox_opponent" `chosen_*` is the policy's OWN sample y
and `rejected_*` the opponent's, not reordered by the judge.

Notation: u = log pi(y|x) - log pi_ref(y|x), h = u_w - u_l, p = P(y beats y' | x).
The Nash entries are policy-gradient (REINFORCE) losses: the value is an unbiased estimate of
the objective to minimise and the gradient is A * grad log pi(y), written as A + A * (lp - sg(lp)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from postrl.algorithms.policy_losses import LossOutput
from postrl.algorithms.preference import PrefInputs, implicit_rewards, pair_metrics, require
from postrl.algorithms.registries import PREFERENCE_LOSSES

_PAIR = ("rejected_logps", "chosen_ref_logps", "rejected_ref_logps")


def _reinforce(advantage: torch.Tensor, logps: torch.Tensor) -> torch.Tensor:
    """Value `advantage` (detached), gradient `advantage * grad logps`: a score-function surrogate."""
    advantage = advantage.detach()
    return advantage + advantage * (logps - logps.detach())


def _check_prob(p: torch.Tensor, loss: str, field: str) -> None:
    if bool(((p < 0) | (p > 1)).any()):
        raise ValueError(f"preference loss {loss!r}: {field} must be probabilities in [0, 1], got "
                         f"min {float(p.min()):.3g}, max {float(p.max()):.3g}; check the judge's output")


@PREFERENCE_LOSSES.register("xpo", paper="Exploratory Preference Optimization: Harnessing Implicit Q*-Approximation "
                            "for Sample-Efficient RLHF", arxiv="2405.21046", needs=("reference", "reference_sample"),
                            summary="online DPO plus an exploration bonus lowering the likelihood of reference samples")
def xpo(inp: PrefInputs, *, beta: float = 0.1, alpha: float = 1e-5) -> LossOutput:
    """XPO (Algorithm 1): online DPO on a (policy, reference) pair plus alpha * log pi of the reference sample.

        l = -log sigmoid(beta h) + alpha * log pi(y~|x),        y~ ~ pi_ref(.|x)

    The pair is y ~ pi and y~ ~ pi_ref for the same prompt, ordered by the judge (needs
    "reference_sample"); `ref_sample_logps` = log pi(y~|x) with gradient. Minimising alpha *
    log pi(y~) moves mass away from what the reference already generates: the optimism
    (exploration) term; its gradient on log pi(y~) is +alpha, so descent lowers it. alpha = 0 is
    online DPO. At pi = pi_ref, l = log 2 + alpha * log pi(y~|x). Defaults beta = 0.1, alpha = 1e-5
    from TRL's XPOConfig (the paper's LLM experiments tune alpha; its value there is not confirmed).
    """
    require(inp, "xpo", *_PAIR, "ref_sample_logps")
    chosen, rejected = implicit_rewards(inp, beta)
    explore = alpha * inp.ref_sample_logps
    metrics = pair_metrics(chosen, rejected)
    metrics["xpo/ref_sample_logps"] = inp.ref_sample_logps.detach().mean()
    metrics["xpo/dpo_loss"] = -F.logsigmoid(chosen - rejected).detach().mean()
    return LossOutput(-F.logsigmoid(chosen - rejected) + explore, metrics)


@PREFERENCE_LOSSES.register("nash_md", paper="Nash Learning from Human Feedback", arxiv="2312.00886",
                            needs=("reference", "mixture_opponent", "win_prob"),
                            summary="Nash-MD policy gradient against an opponent from the policy/reference mixture")
def nash_md(inp: PrefInputs, *, beta: float = 0.1, mixture_coef: float = 0.5) -> LossOutput:
    """Nash-MD-PG: REINFORCE on the preference against a mixture opponent, minus a KL to pi_ref.

        y ~ pi,  y' ~ pi_mix ∝ pi^(1-m) * pi_ref^m  (token-level, m = mixture_coef)
        A = -(p - 1/2) + beta * (log pi(y|x) - log pi_ref(y|x))
        l = A  with gradient  A * grad log pi(y|x)

    `chosen_*` is the policy's own sample y, `chosen_win_prob` p = P(y beats y') (needs
    "mixture_opponent", "win_prob"); the rejected (opponent) fields are not read. 1/2 is the
    control variate of the preference (P(y beats y) = 1/2); beta * u * grad log pi(y) is the
    score-function gradient of KL(pi || pi_ref). The value estimates -(P(pi beats pi_mix) - 1/2)
    + beta KL. A win (p > 1/2) at pi = pi_ref raises log pi(y). mixture_coef is read by the trainer
    (the opponent sampler), not here; m = 0 is self-play against pi, m = 1 against pi_ref.
    Deviation from TRL's NashMDTrainer: TRL's KL surrogate is per token, sum_t sg(u_t) log pi(y_t|..),
    which drops the later tokens' log-ratios from each token's weight; here the sequence log-ratio
    weights the whole sequence score (the exact KL gradient). Defaults beta = 0.1, mixture_coef = 0.5
    from TRL's NashMDConfig (the paper sweeps both).
    """
    if not 0.0 <= mixture_coef <= 1.0:
        raise ValueError(f"nash_md: mixture_coef must be in [0, 1], got {mixture_coef}")
    require(inp, "nash_md", "chosen_ref_logps", "chosen_win_prob")
    p = inp.chosen_win_prob
    _check_prob(p, "nash_md", "chosen_win_prob")
    kl = (inp.chosen_logps - inp.chosen_ref_logps).detach()
    loss = _reinforce(-(p - 0.5) + beta * kl, inp.chosen_logps)
    return LossOutput(loss, {"nash/win_prob": p.detach().mean(), "nash/kl": kl.mean()})


@PREFERENCE_LOSSES.register("nash_mp", paper="Accelerating Nash Learning from Human Feedback via Mirror Prox",
                            arxiv="2505.19731", needs=("reference", "prox_opponent", "win_prob"),
                            summary="Nash mirror prox: two proximal policy-gradient steps per iteration")
def nash_mp(inp: PrefInputs, *, beta: float = 0.1, eta: float = 1.0, prox_steps: int = 4) -> LossOutput:
    """Nash-MP, approximate version: both proximal steps of mirror prox are solved by policy gradient.

        pi_{k+1/2} = argmin_pi  -P(pi beats pi_k)       + beta KL(pi || pi_ref) + (beta/eta) KL(pi || pi_k)
        pi_{k+1}   = argmin_pi  -P(pi beats pi_{k+1/2}) + beta KL(pi || pi_ref) + (beta/eta) KL(pi || pi_k)

    (the paper's steps (1/beta) P(pi_k beats pi) + KL(pi||pi_ref) + (1/eta) KL(pi||pi_k), times beta).
    Per example, with y ~ pi, y' ~ the phase's opponent and p = P(y beats y'):

        A = -(p - 1/2) + beta * (log pi(y) - log pi_ref(y)) + (beta/eta) * (log pi(y) - log pi_k(y))
        l = A  with gradient  A * grad log pi(y)

    The trainer runs the schedule (needs "prox_opponent"): `prox_steps` optimizer steps with
    opponent pi_k, snapshot pi_{k+1/2}, `prox_steps` steps with opponent pi_{k+1/2}, then the
    anchor pi_k moves to the current policy; `chosen_prev_logps` = log pi_k(y) (the anchor) and
    `chosen_*` is the policy's own sample. eta -> inf drops the anchor term; at pi = pi_ref = pi_k,
    A = -(p - 1/2). Not confirmed from the paper (its practical LLM section could not be read):
    the defaults (beta = 0.1 as Nash-MD, eta = 1, prox_steps = 4 are our choices) and any
    LLM-specific approximation of the two steps beyond this policy-gradient form.
    """
    if eta <= 0 or prox_steps < 1:
        raise ValueError(f"nash_mp: eta must be > 0 and prox_steps >= 1, got eta={eta}, prox_steps={prox_steps}")
    require(inp, "nash_mp", "chosen_ref_logps", "chosen_win_prob", "chosen_prev_logps")
    p = inp.chosen_win_prob
    _check_prob(p, "nash_mp", "chosen_win_prob")
    kl_ref = (inp.chosen_logps - inp.chosen_ref_logps).detach()
    kl_anchor = (inp.chosen_logps - inp.chosen_prev_logps).detach()
    loss = _reinforce(-(p - 0.5) + beta * kl_ref + (beta / eta) * kl_anchor, inp.chosen_logps)
    return LossOutput(loss, {"nash/win_prob": p.detach().mean(), "nash/kl": kl_ref.mean(),
                             "nash/kl_anchor": kl_anchor.mean()})


@PREFERENCE_LOSSES.register("inpo", paper="Iterative Nash Policy Optimization: Aligning LLMs with General Preferences "
                            "via No-Regret Learning", arxiv="2407.00617", needs=("reference", "previous_iterate"),
                            summary="no-regret self-play: IPO-like squared loss against pi_t and pi_ref")
def inpo(inp: PrefInputs, *, eta: float = 0.0075, tau: float = 0.0025) -> LossOutput:
    """INPO (Algorithm 1): online mirror descent toward pi_{t+1} ∝ pi_t^(1-tau/eta) pi_ref^(tau/eta) exp(P/eta).

        h = log(pi(y_w)/pi(y_l)) - (tau/eta) log(pi_ref(y_w)/pi_ref(y_l)) - (1 - tau/eta) log(pi_t(y_w)/pi_t(y_l))
        l = (h - 1/(2 eta))^2

    pi_t is the previous iterate (needs "previous_iterate": `*_prev_logps`), pi_ref the initial
    model; (y_w, y_l) a judged pair of the current policy's samples. eta is the inverse step size
    of mirror descent and tau the KL strength to pi_ref; 0 <= tau <= eta (tau = eta anchors to
    pi_ref alone and is IPO with target 1/(2 eta); tau = 0 to pi_t alone). The minimum l = 0 is at
    h = 1/(2 eta). At pi = pi_t = pi_ref, l = 1/(4 eta^2) (4444.4 at the defaults). Defaults
    eta = 0.0075 and tau/eta = 1/3 from the INPO configs of the authors' follow-up code (MNPO's
    INPOConfig: ratio 1/3, eta 0.0075), not confirmed from the paper's text.
    """
    if eta <= 0 or not 0.0 <= tau <= eta:
        raise ValueError(f"inpo: need eta > 0 and 0 <= tau <= eta, got eta={eta}, tau={tau}")
    require(inp, "inpo", *_PAIR, "chosen_prev_logps", "rejected_prev_logps")
    w = tau / eta
    policy = inp.chosen_logps - inp.rejected_logps
    ref = inp.chosen_ref_logps - inp.rejected_ref_logps
    prev = inp.chosen_prev_logps - inp.rejected_prev_logps
    h = policy - w * ref - (1.0 - w) * prev
    metrics = pair_metrics(*implicit_rewards(inp, eta))
    metrics["inpo/h"] = h.detach().mean()
    return LossOutput((h - 1.0 / (2.0 * eta)) ** 2, metrics)


@PREFERENCE_LOSSES.register("sppo", paper="Self-Play Preference Optimization for Language Model Alignment",
                            arxiv="2405.00675", needs=("previous_iterate", "win_rates"),
                            summary="self-play: regress each response's log-ratio to pi_t onto eta * (win rate - 1/2)")
def sppo(inp: PrefInputs, *, eta: float = 1000.0) -> LossOutput:
    """SPPO (Algorithm 1): the exact multiplicative-weights target, one squared loss per response.

        l = (log(pi(y_w)/pi_t(y_w)) - eta (P^(y_w beats pi_t) - 1/2))^2
          + (log(pi(y_l)/pi_t(y_l)) - eta (P^(y_l beats pi_t) - 1/2))^2

    P^(y beats pi_t) is the response's win rate against the other samples of its group (needs
    "win_rates"); pi_t the previous iterate (needs "previous_iterate"), SPPO's only anchor, so no
    reference model is loaded. Unlike DPO each response is pushed to an absolute target: a response
    with win rate 1/2 keeps its likelihood. At pi = pi_t, l = eta^2 ((P_w - 1/2)^2 + (P_l - 1/2)^2).
    Default eta = 1/beta with beta = 0.001 from the authors' pipeline; their code halves the sum
    (the same minimiser) and averages each win rate over all K samples including itself (1/2
    against itself); the trainer here averages over the other K - 1.
    """
    if eta <= 0:
        raise ValueError(f"sppo: eta must be > 0, got {eta}")
    require(inp, "sppo", "rejected_logps", "chosen_prev_logps", "rejected_prev_logps",
            "chosen_win_rate", "rejected_win_rate")
    _check_prob(inp.chosen_win_rate, "sppo", "chosen_win_rate")
    _check_prob(inp.rejected_win_rate, "sppo", "rejected_win_rate")
    u_w = inp.chosen_logps - inp.chosen_prev_logps
    u_l = inp.rejected_logps - inp.rejected_prev_logps
    loss = (u_w - eta * (inp.chosen_win_rate - 0.5)) ** 2 + (u_l - eta * (inp.rejected_win_rate - 0.5)) ** 2
    metrics = pair_metrics(u_w, u_l)
    metrics["sppo/win_rate_chosen"] = inp.chosen_win_rate.detach().mean()
    metrics["sppo/win_rate_rejected"] = inp.rejected_win_rate.detach().mean()
    return LossOutput(loss, metrics)
