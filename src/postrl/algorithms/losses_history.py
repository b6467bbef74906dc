"""History-aware policy losses: HCPO's dual-branch objective (full and compressed history).

The rollout (`rollout/history_hcpo.py`, history policy `hcpo`) gives every per_turn row a second prompt,
`metadata["alt_prompt_ids"]`: the same context with past observations replaced by a placeholder
and past actions kept. A loss that needs "alt_context" receives the sampled action's log-probs
under both prompts (`LossInputs.logprobs` full, `.alt_logprobs` compressed) from one extra
forward of the learner.
"""

from __future__ import annotations

import torch

from postrl.algorithms.kl import kl_penalty
from postrl.algorithms.policy_losses import LossInputs, LossOutput, masked_mean, ppo_clip
from postrl.algorithms.registries import POLICY_LOSSES


@POLICY_LOSSES.register("hcpo", paper="HiconAgent: History Context-aware Policy Optimization for GUI Agents",
                        arxiv="2512.01763", needs=("alt_context",),
                        summary="PPO on the full- and the compressed-history branch + KL alignment of the "
                                "compressed branch to the (detached) full one")
def hcpo(inp: LossInputs, *, clip_low: float = 0.2, clip_high: float = 0.2, align_coef: float = 0.1,
         align_estimator: str = "k3") -> LossOutput:
    """HCPO's anchor-guided history compression objective (HiconAgent Sec. 4.2, Fig. 4).

    Both branches share the sampled action y and its group advantage A_t:

        l_t = PPO_t(log pi(y_t | full),  A) + PPO_t(log pi(y_t | comp), A)
              + align_coef * k(log pi(y_t | comp), sg[log pi(y_t | full)])

    PPO_t is `ppo_clip` (each branch against its own old log-probs; the compressed branch's are
    recomputed once per batch, or the detached current ones on a single on-policy update, ratio 1).
    k is the KL estimator `align_estimator` (k3 = exp(r) - r - 1, r = log pi_full - log pi_comp,
    EasyR1's "low_var_kl") estimating KL(pi_comp || pi_full) on the sampled tokens: the
    history-enhanced alignment loss. sg (stop-gradient) makes the full branch the teacher: the
    alignment term moves only the compressed branch; both branches get policy gradients.

    Default align_coef = 0.1: HiconAgent's code weighs the alignment KL by 10 inside its KL loss,
    multiplied by kl_coef = 0.01 (EasyR1/verl/workers/actor/dp_actor.py, configs/rl/
    ui_tars_2b_grpo.yaml); the paper's text does not state the coefficient. Their code also
    penalises the compressed branch's KL to the reference; here `algorithm.kl_coef` applies to
    the full branch only. Edge cases: identical branches give alignment 0 and twice one PPO loss.
    """
    if inp.alt_logprobs is None:
        raise ValueError("algorithm.loss='hcpo' needs the compressed-history log-probs (LossInputs.alt_logprobs); "
                         "use env.layout: per_turn with env.history: hcpo so rows carry metadata['alt_prompt_ids']")
    full = ppo_clip(inp, clip_low=clip_low, clip_high=clip_high)
    old_alt = inp.old_alt_logprobs if inp.old_alt_logprobs is not None else inp.alt_logprobs.detach()
    comp_inp = LossInputs(inp.alt_logprobs, old_alt, inp.advantages, inp.mask)
    comp = ppo_clip(comp_inp, clip_low=clip_low, clip_high=clip_high)
    align = kl_penalty(inp.alt_logprobs, inp.logprobs.detach(), align_estimator)
    loss = full.loss + comp.loss + align_coef * align
    with torch.no_grad():
        metrics = {**full.metrics,
                   "hcpo_align_kl": masked_mean(align, inp.mask),
                   "hcpo_comp_clip_frac": comp.metrics["clip_frac"],
                   "hcpo_logp_gap": masked_mean(inp.logprobs - inp.alt_logprobs, inp.mask)}
    return LossOutput(loss, metrics)
