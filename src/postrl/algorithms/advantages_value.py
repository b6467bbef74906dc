"""Critic-based advantage estimators: GAE, and T-PPO's extended GAE (registry needs `"values"`).

The trainer runs the value model (`learner/critic.py`) before calling these and puts its
predictions on the batch: `values` [B, T], V(s_t) of the state *before* completion token t (0 on
masked tokens), and `last_values` [B], V of the state after the last completion token. An
estimator returns per-token advantages like any other and leaves the critic's regression targets
in `batch.returns` [B, T]; `batch.value_mask` [B, T] restricts the tokens the critic trains on
(None: `loss_mask`). That is the whole contract between an estimator and the critic.

Token-level reward: r_t = token_rewards_t (a KL penalty in the reward, process rewards) on every
policy token, plus the outcome reward r(x, y) on the last policy token of a finished response.
Tokens with loss_mask 0 (tool/environment tokens, padding) are skipped by the recursion, which
carries V and the running advantage across them: a tool output between two assistant turns
neither bootstraps nor collects reward.
"""

from __future__ import annotations

import torch

from postrl.algorithms.registries import ADVANTAGES
from postrl.rollout.batch import RolloutBatch


def token_level_rewards(batch: RolloutBatch, outcome_B: torch.Tensor) -> torch.Tensor:
    """r_t [B, T]: dense token rewards on policy tokens, plus `batch.rewards` on the last policy
    token of the rows where `outcome_B` (bool [B]) is true."""
    if batch.rewards is None:
        raise ValueError("advantage estimation needs batch.rewards; score the batch first")
    mask = batch.loss_mask.float()
    B, T = mask.shape
    r = batch.token_rewards.float() * mask if batch.token_rewards is not None else torch.zeros(B, T, device=mask.device)
    last = T - 1 - mask.flip(-1).argmax(-1)  # index of each row's last policy token
    rows = ((mask.sum(-1) > 0) & outcome_B.to(mask.device)).nonzero().flatten()
    return r.index_put((rows, last[rows]), batch.rewards.float()[rows], accumulate=True)


def generalized_advantages(rewards_B_T: torch.Tensor, values_B_T: torch.Tensor, mask_B_T: torch.Tensor,
                           bootstrap_B: torch.Tensor, *, gamma: float, lam: float) -> torch.Tensor:
    """A_t = sum_l (gamma lam)^l delta_{t+l}, delta_t = r_t + gamma V(s_{t+1}) - V(s_t), over the
    policy tokens (mask > 0) of each row; V after the last one is `bootstrap_B` (0: terminal).

    One backward pass over T (a Python loop over columns, vectorised over rows; T is the response
    length, so this costs T small ops, negligible next to a forward pass).
    """
    B, T = rewards_B_T.shape
    r, v, m = rewards_B_T.float(), values_B_T.float(), mask_B_T > 0
    adv = torch.zeros(B, T, dtype=torch.float32, device=r.device)
    next_v = bootstrap_B.float().to(r.device)
    running = torch.zeros(B, dtype=torch.float32, device=r.device)
    for t in range(T - 1, -1, -1):
        a = r[:, t] + gamma * next_v - v[:, t] + gamma * lam * running
        running = torch.where(m[:, t], a, running)
        next_v = torch.where(m[:, t], v[:, t], next_v)
        adv[:, t] = torch.where(m[:, t], a, torch.zeros_like(a))
    return adv


def masked_whiten(x_B_T: torch.Tensor, mask_B_T: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked entries (unbiased var); 0 elsewhere.
    With fewer than two entries there is no spread to divide by: x is returned (masked)."""
    valid = mask_B_T > 0
    if int(valid.sum()) < 2:
        return x_B_T * mask_B_T
    mean, var = x_B_T[valid].mean(), x_B_T[valid].var()
    return (x_B_T - mean) * torch.rsqrt(var + eps) * mask_B_T


def _critic_outputs(batch: RolloutBatch, name: str) -> torch.Tensor:
    if batch.values is None:
        raise ValueError(f"advantage estimator {name!r} needs critic values on the batch (batch.values); "
                         "the trainer provides them for estimators registered with needs=('values',)")
    return batch.values.float() * batch.loss_mask


@ADVANTAGES.register("gae", paper="High-Dimensional Continuous Control Using Generalized Advantage Estimation",
                     arxiv="1506.02438", needs=("values",),
                     summary="GAE(gamma, lambda) over token rewards with a learned critic (PPO's estimator)")
def gae(batch: RolloutBatch, *, gamma: float = 1.0, lam: float = 0.95, whiten: bool = True,
        eps: float = 1e-8) -> torch.Tensor:
    """Generalized Advantage Estimation (sec. 3, eq. 16) on the token-level MDP of a completion.

        r_t     = token_reward_t + 1[t = last policy token] * r(x, y)
        delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)          V after the last token = 0 (terminal)
        A_t     = sum_{l >= 0} (gamma * lambda)^l * delta_{t+l}                          (eq. 16)
        R_t     = A_t + V(s_t)                               -> batch.returns, the critic's target
        whiten:   A <- (A - mean) / sqrt(var + eps) over all policy tokens of the batch (R is not)

    lambda = 1 gives Monte-Carlo returns minus values, lambda = 0 one-step TD errors (eqs. 17-18).
    Defaults: gamma = 1 (no discount inside a response: verl, OpenRLHF, TRL); lambda = 0.95 as
    TRL's PPOConfig and the PPO paper's MuJoCo runs (verl and OpenRLHF default to lambda = 1, which
    keeps a sparse end reward from decaying over long responses: set `lam: 1.0` for those);
    whitening as verl and TRL do for GAE. Every response counts as finished, truncated ones
    included (their outcome reward ends the episode); `t_ppo` bootstraps those instead.
    """
    values = _critic_outputs(batch, "gae")
    mask = batch.loss_mask.float()
    r = token_level_rewards(batch, torch.ones(batch.size, dtype=torch.bool))
    adv = generalized_advantages(r, values, mask, torch.zeros(batch.size), gamma=gamma, lam=lam)
    batch.returns, batch.value_mask = (adv + values) * mask, None
    return masked_whiten(adv, mask, eps) if whiten else adv


@ADVANTAGES.register("t_ppo", paper="Truncated Proximal Policy Optimization", arxiv="2506.15050",
                     needs=("values",), summary="extended GAE: responses cut at the length limit bootstrap "
                     "from V at the cut; the critic trains on finished ones")
def t_ppo(batch: RolloutBatch, *, gamma: float = 1.0, lam: float = 0.95, value_lam: float = 1.0,
          whiten: bool = True, eps: float = 1e-8, value_on_truncated: bool = False) -> torch.Tensor:
    """T-PPO's Extended GAE (EGAE): advantages from incomplete responses, bootstrapped by the critic.

    A response cut at the length limit (finish_reason "length") has not ended, so its outcome
    reward (a score of unfinished text) is dropped and the value of the state at the cut stands in
    for the rest of the episode:

        finished row:   as `gae`                                   (V after the last token = 0)
        truncated row:  r_t = token_reward_t (no outcome reward)
                        delta_{l-1} = r_{l-1} + gamma * V(s_l) - V(s_{l-1})     s_l: the state at the cut
                        A_t = sum_{k=0}^{l-1-t} (gamma * lambda)^k * delta_{t+k}

    Decoupled value update: the critic trains only on finished rows (`value_on_truncated=False`),
    towards returns with their own lambda (`value_lam`, default 1: Monte-Carlo returns, unbiased for
    finished responses), while the policy uses `lam`. On a batch where nothing is truncated, with
    `value_lam == lam`, this is exactly `gae`.

    Implemented: EGAE and the finished-rows-only critic update. Not implemented: T-PPO's rollout
    side (generating in fixed-length windows and continuing the truncated responses in the next
    step); here a truncated response is never resumed, so EGAE treats the length limit as a time
    limit rather than as the end of the episode. The decoupled lambdas follow our reading of the
    paper and of VC-PPO/VAPO from the same group, not a released reference implementation.
    """
    values = _critic_outputs(batch, "t_ppo")
    reasons = batch.metadata.get("finish_reason")
    if reasons is None:
        raise ValueError("advantage estimator 't_ppo' needs batch.metadata['finish_reason'] (set by the "
                         "rollout engines) to tell truncated responses from finished ones")
    if batch.last_values is None:
        raise ValueError("advantage estimator 't_ppo' bootstraps truncated rows with batch.last_values "
                         "(set by the critic next to batch.values)")
    mask = batch.loss_mask.float()
    truncated = torch.tensor([f == "length" for f in reasons], dtype=torch.bool)
    bootstrap = torch.where(truncated, batch.last_values.float().cpu(), torch.zeros(batch.size)).to(mask.device)
    r = token_level_rewards(batch, ~truncated)
    adv = generalized_advantages(r, values, mask, bootstrap, gamma=gamma, lam=lam)
    adv_v = adv if value_lam == lam else generalized_advantages(r, values, mask, bootstrap, gamma=gamma, lam=value_lam)
    batch.returns = (adv_v + values) * mask
    batch.value_mask = None if value_on_truncated else mask * (~truncated).to(mask)[:, None]
    return masked_whiten(adv, mask, eps) if whiten else adv
