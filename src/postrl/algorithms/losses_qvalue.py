"""Losses that read the policy as a Q-function: ROVER.

ROVER regresses a Q-value parameterised by the policy's own log-probs onto a one-step target
built from the mean of the next state's Q-values over the vocabulary, so it needs the full
distribution at every completion position, not only the sampled token: its registry entry needs
"vocab_mean" and the learner passes `inputs.vocab_mean` (mean_v log pi_theta(v|s_t), with
gradient) and `inputs.old_vocab_mean` (the same under the old policy, computed once per batch
with the old log-probs). No critic, no reference model.
"""

from __future__ import annotations

import torch

from postrl.algorithms.policy_losses import LossInputs, LossOutput, masked_mean
from postrl.algorithms.registries import POLICY_LOSSES


@POLICY_LOSSES.register("rover", paper="Random Policy Valuation is Enough for LLM Reasoning with Verifiable "
                        "Rewards", arxiv="2509.24981", needs=("vocab_mean",),
                        summary="Q of the uniform random policy as rho*log(pi/pi_old), regressed onto the "
                                "centred reward plus the vocabulary mean of the next state's Q")
def rover(inp: LossInputs, *, rho: float = 1.0, next_q_coef: float = 1.0) -> LossOutput:
    """ROVER: regress the uniform random policy's Q, parameterised by the policy, onto a TD target (Alg. 1).

        Q(a_t|s_t) = rho * (log pi_theta(a_t|s_t) - log pi_old(a_t|s_t))                    (eq. 3)
        Q'_t       = 1/|V| sum_{a in V} Q(a|s_{t+1})
                   = rho * (mean_v log pi_theta(v|s_{t+1}) - mean_v log pi_old(v|s_{t+1}))
        Q_hat_t    = r~ + next_q_coef * Q'_t           (Q'_t = 0 after the last loss token)
        l_t        = (Q(a_t|s_t) - sg[Q_hat_t])^2

    r~ is `inputs.advantages`: the group-mean-centred outcome reward broadcast to every token
    (eq. 4; the `rover` preset uses the `dr_grpo` estimator). Q' is the uniform policy's mean
    operator over the next state's actions, evaluated with the relative parameterisation of
    eq. 3; it and the whole target are stop-gradient, as in the official code
    (yuxiaooye/ROVER, Math/verl/workers/actor/dp_actor.py, DataParallelROVERActor and
    core_algos.compute_rover_loss: MSE with `target.detach()`, token mean). On the first update
    of a batch pi_theta = pi_old, so Q = Q' = 0 and the gradient is -2 rho r~ grad log pi: a
    REINFORCE step; later updates (epochs, mini-batches) regress Q onto the bootstrapped target.

    Sampling: the paper samples from softmax(Q/rho); with Q = rho log pi_theta up to a state
    constant (its sec. 3.2) that is pi_theta itself, and the official code samples from the
    actor with the rollout engine at `rollout.temperature` (0.6 for math, 1.0 for Countdown).
    postrl does the same: the engine samples pi_theta, and the learner's log-probs and
    vocabulary means use the same temperature. `rho` is the code's `rover_t` (default 1.0, the
    paper's rho = 1), `next_q_coef` its `next_q_scale_factor` (beta in Fig. 15, default 1.0).
    The official code's optional `use_rover_clip` (off by default) is not implemented. The
    vocabulary mean runs over every logit the model emits (its padded vocabulary included), as
    the official `sum_log_softmax` does. (The repository's README links arXiv 2505.17618; the
    paper itself is 2509.24981.)
    """
    if inp.vocab_mean is None or inp.old_vocab_mean is None:
        raise ValueError("rover needs inputs.vocab_mean and inputs.old_vocab_mean; the learner fills them for "
                         "losses registered with needs=('vocab_mean',)")
    mask = inp.mask.to(inp.logprobs.dtype)
    q = rho * (inp.logprobs - inp.old_logprobs)
    with torch.no_grad():
        state_q = rho * (inp.vocab_mean - inp.old_vocab_mean) * mask  # mean_a Q(a|s_t) at every loss token
        next_q = torch.zeros_like(state_q)
        next_q[:, :-1] = state_q[:, 1:]  # Q'_t is the mean at s_{t+1}; 0 after the last token
        target = inp.advantages + next_q_coef * next_q
    loss = (q - target) ** 2
    with torch.no_grad():
        metrics = {"q_mean": masked_mean(q, inp.mask), "next_q_mean": masked_mean(next_q, inp.mask),
                   "target_mean": masked_mean(target, inp.mask),
                   "approx_kl_old": masked_mean(0.5 * (inp.logprobs - inp.old_logprobs) ** 2, inp.mask)}
    return LossOutput(loss, metrics)
