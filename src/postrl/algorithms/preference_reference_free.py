"""Reference-free pairwise preference losses: SimPO, ORPO and CPO.

They read only the policy's sequence log-probs (and lengths) of the chosen and rejected responses,
never pi_ref, so their entries do not need "reference" and the trainer loads no reference model.
ORPO and CPO add a supervised NLL term on the chosen response, taken as its mean per-token negative
log-likelihood, -log pi(y_w|x) / |y_w|.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from postrl.algorithms.policy_losses import LossOutput
from postrl.algorithms.preference import PrefInputs, pair_metrics, require
from postrl.algorithms.registries import PREFERENCE_LOSSES


def _mean_logps(logps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Average per-token log-prob; an empty response (length 0) counts as one token."""
    return logps / lengths.clamp(min=1.0)


@PREFERENCE_LOSSES.register("simpo", paper="SimPO: Simple Preference Optimization with a Reference-Free Reward",
                            arxiv="2405.14734", summary="length-normalised log-likelihood margin with a target "
                            "margin gamma, no reference model")
def simpo(inp: PrefInputs, *, beta: float = 2.0, gamma: float = 0.5) -> LossOutput:
    """SimPO: the Bradley-Terry likelihood of average log-likelihoods, with a target reward margin gamma.

        r(y) = beta / |y| * log pi(y|x)
        l    = -log sigmoid(r(y_w) - r(y_l) - gamma)

    Adding a constant c to every token's log-prob shifts both r(y) by beta c and leaves l unchanged;
    a constant added to the sequence sums does change l when |y_w| != |y_l|. When the two average
    log-likelihoods are equal, l = log(1 + e^gamma). Defaults beta = 2.0, gamma = 0.5
    (gamma / beta = 0.25) from the authors' SimPOConfig.
    """
    require(inp, "simpo", "rejected_logps", "rejected_lengths")
    chosen = beta * _mean_logps(inp.chosen_logps, inp.chosen_lengths)
    rejected = beta * _mean_logps(inp.rejected_logps, inp.rejected_lengths)
    return LossOutput(-F.logsigmoid(chosen - rejected - gamma), pair_metrics(chosen, rejected))


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - e^x) for x < 0, accurate on both sides of x = -log 2 (Maechler's two branches)."""
    x = x.clamp(max=-1e-6)  # a mean log-prob of 0 (probability 1) would make the odds infinite
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


@PREFERENCE_LOSSES.register("orpo", paper="ORPO: Monolithic Preference Optimization without Reference Model",
                            arxiv="2403.07691", summary="NLL on the chosen response plus a log odds-ratio "
                            "penalty, no reference model")
def orpo(inp: PrefInputs, *, beta: float = 0.1) -> LossOutput:
    """ORPO: supervised NLL of y_w plus lambda times the log-sigmoid of the log odds ratio.

        P(y)  = exp(log pi(y|x) / |y|)              (average per-token likelihood)
        odds(y) = P(y) / (1 - P(y))
        l = -log P(y_w) + lambda * -log sigmoid(log odds(y_w) - log odds(y_l))

    lambda = `beta` (TRL's name; 0.1 in the paper and TRL). The NLL is per example, -log pi(y_w|x)
    / |y_w|; TRL averages the cross-entropy over all chosen tokens of the batch instead, which weights
    long responses more (equal when lengths are equal). Edge case: an average log-prob of 0 is
    clamped to -1e-6 (finite odds). With P(y_w) = P(y_l) the odds term is lambda log 2.
    """
    require(inp, "orpo", "rejected_logps", "rejected_lengths")
    chosen = _mean_logps(inp.chosen_logps, inp.chosen_lengths)
    rejected = _mean_logps(inp.rejected_logps, inp.rejected_lengths)
    log_odds = (chosen - _log1mexp(chosen)) - (rejected - _log1mexp(rejected))
    ratio_loss = -F.logsigmoid(log_odds)
    nll = -chosen
    metrics = pair_metrics(chosen, rejected)
    metrics.update({"orpo/nll": nll.detach().mean(), "orpo/log_odds_ratio": log_odds.detach().mean()})
    return LossOutput(nll + beta * ratio_loss, metrics)


@PREFERENCE_LOSSES.register("cpo", paper="Contrastive Preference Optimization: Pushing the Boundaries of LLM "
                            "Performance in Machine Translation", arxiv="2401.08417",
                            summary="reference-free DPO-style preference term plus NLL on the chosen response")
def cpo(inp: PrefInputs, *, beta: float = 0.1, alpha: float = 1.0) -> LossOutput:
    """CPO: DPO with a uniform reference (the reference terms dropped) plus behaviour cloning of y_w.

        l = -log sigmoid(beta log pi(y_w|x) - beta log pi(y_l|x)) + alpha * -log pi(y_w|x) / |y_w|

    The preference term uses sequence sums, the NLL the per-token mean (as TRL's CPOTrainer, whose
    cpo_alpha = alpha = 1.0 and beta = 0.1 are the defaults); the paper writes the NLL as
    -log pi(y_w|x). alpha = 0 is DPO with log pi_ref = 0. With equal sums the preference term is log 2.
    """
    require(inp, "cpo", "rejected_logps")
    chosen, rejected = beta * inp.chosen_logps, beta * inp.rejected_logps
    nll = -_mean_logps(inp.chosen_logps, inp.chosen_lengths)
    metrics = pair_metrics(chosen, rejected)
    metrics["cpo/nll"] = nll.detach().mean()
    return LossOutput(-F.logsigmoid(chosen - rejected) + alpha * nll, metrics)
