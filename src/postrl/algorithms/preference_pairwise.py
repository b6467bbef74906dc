"""Pairwise DPO-family losses: other links on the same implicit rewards of a chosen/rejected pair.

Every entry here reads only the sequence log-probabilities of the two responses under the policy
and the frozen reference (needs "reference"): IPO (squared), hinge (SLiC), cDPO and rDPO (noisy
labels), NCA, APO-zero / APO-down (anchored) and BCO (binary classifier). DPO itself lives in
`preference.py`; DPO with an extra input (rationales, token guidance, margins, online samples) in
`preference_auxiliary.py`. Notation: r_w = beta * log(pi(y_w|x) / pi_ref(y_w|x)), r_l likewise,
and h = r_w - r_l with beta = 1 (the log-ratio margin).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from postrl.algorithms.policy_losses import LossOutput
from postrl.algorithms.preference import PrefInputs, implicit_rewards, pair_metrics, require
from postrl.algorithms.registries import PREFERENCE_LOSSES

_PAIR = ("rejected_logps", "chosen_ref_logps", "rejected_ref_logps")


def _rewards(inp: PrefInputs, name: str, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    require(inp, name, *_PAIR)
    return implicit_rewards(inp, beta)


@PREFERENCE_LOSSES.register("ipo", paper="A General Theoretical Paradigm to Understand Learning from Human "
                            "Preferences", arxiv="2310.12036", needs=("reference",),
                            summary="squared regression of the log-ratio margin onto 1/(2 tau)")
def ipo(inp: PrefInputs, *, beta: float = 0.1, average_logps: bool = False) -> LossOutput:
    """IPO (eq. 17) regresses the log-ratio margin onto a fixed target instead of pushing it up.

        h = (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))
        l = (h - 1 / (2 tau))^2                                     with tau = beta

    At pi = pi_ref, h = 0 and l = 1 / (4 tau^2) (25 at tau = 0.1); the minimum l = 0 sits at the
    finite margin h = 1 / (2 tau). `average_logps` divides each log-ratio by its response length
    first: TRL's deliberate deviation (its DPOTrainer averages per token for IPO); the paper sums.
    """
    require(inp, "ipo", *_PAIR)
    chosen, rejected = implicit_rewards(inp, 1.0)
    if average_logps:
        require(inp, "ipo", "rejected_lengths")
        chosen = chosen / inp.chosen_lengths.clamp(min=1.0)
        rejected = rejected / inp.rejected_lengths.clamp(min=1.0)
    loss = (chosen - rejected - 1.0 / (2.0 * beta)) ** 2
    return LossOutput(loss, pair_metrics(beta * chosen, beta * rejected))


@PREFERENCE_LOSSES.register("hinge", paper="SLiC-HF: Sequence Likelihood Calibration with Human Feedback",
                            arxiv="2305.10425", needs=("reference",),
                            summary="SLiC's rank-calibration hinge on reference-normalised log-likelihoods")
def hinge(inp: PrefInputs, *, beta: float = 0.1) -> LossOutput:
    """SLiC's calibration hinge, on log-likelihoods normalised by the reference (RSO's "hinge-norm").

        l = max(0, 1 - beta * h)

    SLiC-HF's rank loss is max(0, delta - log pi(y_w|x) + log pi(y_l|x)); RSO (2309.06657)
    normalises both log-likelihoods by pi_ref, and with delta = 1 / beta the result is l / beta:
    the same minimisers. Beyond the margin (beta * h >= 1) the loss and its gradient are 0; below
    it the gradient is -beta on log pi(y_w|x) and +beta on log pi(y_l|x). SLiC's separate
    cross-entropy regulariser on reference targets is not part of this entry. At pi = pi_ref, l = 1.
    """
    chosen, rejected = _rewards(inp, "hinge", beta)
    return LossOutput(torch.relu(1.0 - (chosen - rejected)), pair_metrics(chosen, rejected))


@PREFERENCE_LOSSES.register("cdpo", paper="A Note on DPO with Noisy Preferences & Relationship to IPO "
                            "(Mitchell, 2023; ericmitchell.ai/cdpo.pdf)", arxiv=None, needs=("reference",),
                            summary="conservative DPO: labels flipped with probability eps (label smoothing)")
def cdpo(inp: PrefInputs, *, beta: float = 0.1, label_smoothing: float = 0.1) -> LossOutput:
    """Conservative DPO: the DPO likelihood of labels that are flipped with probability eps.

        l = (1 - eps) * -log sigmoid(beta h) + eps * -log sigmoid(-beta h)

    eps = `label_smoothing` in [0, 1/2]; eps = 0 is DPO. For eps > 0 the minimum is at the finite
    margin beta h = log((1 - eps) / eps) instead of at infinity. At pi = pi_ref, l = log 2 for every
    eps. (TRL: loss_type "sigmoid" with label_smoothing; its default eps = 0, ours 0.1, since cDPO
    with eps = 0 is just `dpo`.)
    """
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"cdpo: label_smoothing must be in [0, 0.5], got {label_smoothing}")
    chosen, rejected = _rewards(inp, "cdpo", beta)
    logits = chosen - rejected
    loss = -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return LossOutput(loss, pair_metrics(chosen, rejected))


@PREFERENCE_LOSSES.register("rdpo", paper="Provably Robust DPO: Aligning Language Models with Noisy Feedback",
                            arxiv="2403.00409", needs=("reference",),
                            summary="robust DPO: unbiased DPO loss under labels flipped with probability eps")
def rdpo(inp: PrefInputs, *, beta: float = 0.1, label_smoothing: float = 0.1) -> LossOutput:
    """Robust DPO: an unbiased estimate of the clean-label DPO loss from labels flipped w.p. eps.

        l(h) = [(1 - eps) * -log sigmoid(beta h) - eps * -log sigmoid(-beta h)] / (1 - 2 eps)

    Unbiased: (1 - eps) l(h) + eps l(-h) = -log sigmoid(beta h), the DPO loss of the true label.
    eps = `label_smoothing` in [0, 1/2); eps = 0 is DPO. Unlike cDPO the loss is unbounded below
    and its gradient always raises h. At pi = pi_ref, l = log 2. (TRL: loss_type "robust".)
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"rdpo: label_smoothing must be in [0, 0.5), got {label_smoothing}")
    chosen, rejected = _rewards(inp, "rdpo", beta)
    logits = chosen - rejected
    eps = label_smoothing
    loss = (-(1.0 - eps) * F.logsigmoid(logits) + eps * F.logsigmoid(-logits)) / (1.0 - 2.0 * eps)
    return LossOutput(loss, pair_metrics(chosen, rejected))


@PREFERENCE_LOSSES.register("nca", paper="Noise Contrastive Alignment of Language Models with Explicit Rewards",
                            arxiv="2402.05369", needs=("reference",),
                            summary="NCA on pairs: absolute likelihood of the chosen response, not only the gap")
def nca(inp: PrefInputs, *, beta: float = 0.01) -> LossOutput:
    """NCA for pairwise preferences: classify each response as from pi* or from pi_ref on its own.

        l = -log sigmoid(r_w) - 1/2 log sigmoid(-r_w) - 1/2 log sigmoid(-r_l)

    The chosen response is pushed up in absolute terms (its optimum is r_w = log 2 when r_l is
    fixed), which prevents DPO's falling chosen likelihood. At pi = pi_ref, l = 2 log 2. Default
    beta = 0.01 from the authors' training scripts (TRL's loss_type "nca_pair" uses DPO's 0.1).
    """
    chosen, rejected = _rewards(inp, "nca", beta)
    loss = -F.logsigmoid(chosen) - 0.5 * F.logsigmoid(-chosen) - 0.5 * F.logsigmoid(-rejected)
    return LossOutput(loss, pair_metrics(chosen, rejected))


_APO = "Anchored Preference Optimization and Contrastive Revisions: Addressing Underspecification in Alignment"


@PREFERENCE_LOSSES.register("apo_zero", paper=_APO, arxiv="2408.06266", needs=("reference",),
                            summary="anchored: raise the chosen and lower the rejected likelihood separately")
def apo_zero(inp: PrefInputs, *, beta: float = 0.1) -> LossOutput:
    """APO-zero (eq. 7): anchors each response to the reference; for chosen outputs better than the model's.

        l = (1 - sigmoid(r_w)) + sigmoid(r_l)

    The chosen likelihood always goes up and the rejected one down, each with weight
    beta * sigmoid'(r). At pi = pi_ref, l = 1/2 + 1/2 = 1; l lies in (0, 2).
    """
    chosen, rejected = _rewards(inp, "apo_zero", beta)
    return LossOutput(1.0 - torch.sigmoid(chosen) + torch.sigmoid(rejected), pair_metrics(chosen, rejected))


@PREFERENCE_LOSSES.register("apo_down", paper=_APO, arxiv="2408.06266", needs=("reference",),
                            summary="anchored: lower both likelihoods, the rejected one more")
def apo_down(inp: PrefInputs, *, beta: float = 0.1) -> LossOutput:
    """APO-down (eq. 8): for chosen outputs worse than the model's; lower both, the rejected more.

        l = sigmoid(r_w) + (1 - sigmoid(r_w - r_l))

    At pi = pi_ref, l = 1/2 + 1/2 = 1; l lies in (0, 2).
    """
    chosen, rejected = _rewards(inp, "apo_down", beta)
    loss = torch.sigmoid(chosen) + 1.0 - torch.sigmoid(chosen - rejected)
    return LossOutput(loss, pair_metrics(chosen, rejected))


@PREFERENCE_LOSSES.register("bco", paper="Binary Classifier Optimization for Large Language Model Alignment",
                            arxiv="2404.04656", needs=("reference",),
                            summary="binary classifier on implicit rewards (chosen 1, rejected 0), shifted by delta")
def bco(inp: PrefInputs, *, beta: float = 0.1, delta: float | None = None) -> LossOutput:
    """BCO on pairs: a logistic classifier whose logit is the implicit reward minus a shift delta.

        l = -log sigmoid(r_w - delta) - log sigmoid(-(r_l - delta))

    The paper's delta is a running mean of the implicit rewards over training (TRL: a
    RunningMoments over steps). A loss here holds no state, so `delta=None` uses the mean of the
    2B rewards of the batch it is given (detached): a deviation whose value depends on the
    micro-batch; pass a float to fix delta. The paper's density-ratio matching for unpaired data is
    not part of this entry. At pi = pi_ref, r = delta = 0 and l = 2 log 2.
    """
    chosen, rejected = _rewards(inp, "bco", beta)
    if delta is None:
        shift = torch.cat([chosen, rejected]).detach().mean()
    else:
        shift = torch.as_tensor(delta, dtype=chosen.dtype, device=chosen.device)
    loss = -F.logsigmoid(chosen - shift) - F.logsigmoid(-(rejected - shift))
    metrics = pair_metrics(chosen, rejected)
    metrics["bco/delta"] = shift.detach()
    return LossOutput(loss, metrics)
