"""Preference objectives: the inputs every preference loss reads, and DPO, the reference entry.

A preference loss sees sequence-level log-probabilities (sums over response tokens) of the
chosen and rejected responses under the policy and, when its entry needs "reference", under the
frozen reference model; per-token values only when it needs "token_logps". It returns a
per-example loss [B]; the trainer averages it (micro-batches are normalised by the whole batch).
Unpaired data (KTO) uses `chosen_*` with `labels`; listwise data (LiPO) uses `list_*` [B, K].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from postrl.algorithms.policy_losses import LossOutput
from postrl.algorithms.registries import PREFERENCE_LOSSES


@dataclass
class PrefInputs:
    """Per-example tensors [B] (log-probs summed over response tokens) and optional extras."""

    chosen_logps: torch.Tensor  # log pi_theta(y_w | x), with gradient
    chosen_lengths: torch.Tensor  # |y_w| in tokens (float)
    rejected_logps: torch.Tensor | None = None  # log pi_theta(y_l | x); None for unpaired data
    rejected_lengths: torch.Tensor | None = None
    chosen_ref_logps: torch.Tensor | None = None  # log pi_ref(y_w | x), no gradient (needs "reference")
    rejected_ref_logps: torch.Tensor | None = None
    # needs "token_logps": [B, T] per-token log-probs and response masks
    chosen_token_logps: torch.Tensor | None = None
    chosen_token_mask: torch.Tensor | None = None
    rejected_token_logps: torch.Tensor | None = None
    rejected_token_mask: torch.Tensor | None = None
    chosen_token_ref_logps: torch.Tensor | None = None
    rejected_token_ref_logps: torch.Tensor | None = None
    labels: torch.Tensor | None = None  # [B] 1 desirable / 0 undesirable (unpaired, KTO)
    kl_logps: torch.Tensor | None = None  # needs "kto_kl": policy log-probs of mismatched pairs [B];
    # needs "online_kl" (HyPO): of one response sampled from the current policy, with gradient
    kl_ref_logps: torch.Tensor | None = None  # reference log-probs of the same responses [B]
    list_logps: torch.Tensor | None = None  # [B, K] listwise responses (LiPO); -inf where absent
    list_ref_logps: torch.Tensor | None = None  # [B, K]
    list_lengths: torch.Tensor | None = None  # [B, K]
    scores: torch.Tensor | None = None  # [B, K] labels of the listwise responses
    margins: torch.Tensor | None = None  # needs "margins" (MODPO): r(x, y_w) - r(x, y_l) of another objective [B]
    rationale_logps: torch.Tensor | None = None  # needs "rationales": log pi_theta(r | x, y_w, y_l), with gradient [B]
    # online / self-play losses (preference_online.py), all [B] and without gradient unless said
    chosen_win_prob: torch.Tensor | None = None  # needs "win_prob": judge P(chosen beats rejected | x)
    chosen_win_rate: torch.Tensor | None = None  # needs "win_rates": P^(y_w beats pi_t), mean over its group
    rejected_win_rate: torch.Tensor | None = None  # the same for y_l
    ref_sample_logps: torch.Tensor | None = None  # needs "reference_sample": log pi_theta of a pi_ref sample, with gradient
    chosen_prev_logps: torch.Tensor | None = None  # needs "previous_iterate"/"prox_opponent": log pi_t(y_w | x)
    rejected_prev_logps: torch.Tensor | None = None  # log pi_t(y_l | x)


def require(inp: PrefInputs, loss: str, *names: str) -> None:
    """A clear error when a field the loss reads is missing (names the field and the fix)."""
    missing = [n for n in names if getattr(inp, n) is None]
    if missing:
        raise ValueError(f"preference loss {loss!r} needs {', '.join(missing)}: pairwise losses need "
                         "rejected responses, reference-based losses a reference model (declare "
                         "needs=('reference',)), listwise losses ranked responses")


def implicit_rewards(inp: PrefInputs, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO's implicit rewards beta * log(pi / pi_ref) of the chosen and rejected responses."""
    return (beta * (inp.chosen_logps - inp.chosen_ref_logps),
            beta * (inp.rejected_logps - inp.rejected_ref_logps))


def pair_metrics(chosen_reward: torch.Tensor, rejected_reward: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        margin = chosen_reward - rejected_reward
        return {"rewards/chosen": chosen_reward.mean(), "rewards/rejected": rejected_reward.mean(),
                "rewards/margin": margin.mean(), "rewards/accuracy": (margin > 0).float().mean()}


@PREFERENCE_LOSSES.register("dpo", paper="Direct Preference Optimization: Your Language Model is Secretly a "
                            "Reward Model", arxiv="2305.18290", needs=("reference",),
                            summary="sigmoid loss on the difference of implicit rewards")
def dpo(inp: PrefInputs, *, beta: float = 0.1) -> LossOutput:
    """DPO (eq. 7), the Bradley-Terry likelihood of the implicit reward margin.

        h = beta * [ (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)) ]
        l = -log sigmoid(h)

    At pi = pi_ref the loss is log 2 and the gradient is -beta/2 * grad(log pi(y_w) - log pi(y_l)).
    """
    require(inp, "dpo", "rejected_logps", "chosen_ref_logps", "rejected_ref_logps")
    chosen, rejected = implicit_rewards(inp, beta)
    return LossOutput(-F.logsigmoid(chosen - rejected), pair_metrics(chosen, rejected))
