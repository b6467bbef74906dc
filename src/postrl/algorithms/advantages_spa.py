"""SPA-RL: stepwise progress attribution by a small learned progress estimator.

Owns the estimator `spa_rl` (ADVANTAGES, needs "turns" and "state"). A linear progress model
predicts each turn's contribution c_t from features of the turn; it is trained online so that an
episode's contributions sum to its return, and the predicted contributions become the turn
rewards. Its weights live in the estimator state (checkpointed by the trainer), so a resumed run
continues with the same estimator.

Deviation, stated plainly: the paper's progress estimator is an LLM (the policy's backbone with a
value head) trained on the agent's exploration trajectories. Estimators here see the batch, not
the model's hidden states, so the features are what the batch carries per turn: the behaviour
policy's mean log-prob of the turn's action tokens, the turn's relative position (k+1)/T, and
whether the turn made a tool call (metadata "tool_calls_per_turn"; 0 when absent).
"""

from __future__ import annotations

import torch

from postrl.algorithms.agent_steps import Steps, agent_steps, normalise, scatter
from postrl.algorithms.registries import ADVANTAGES
from postrl.rollout.batch import RolloutBatch

FEATURES = ("mean_logp", "position", "tool_call")


def step_features(batch: RolloutBatch, steps: Steps) -> torch.Tensor:
    """[S, 3] features of each step (see FEATURES)."""
    calls = batch.metadata.get("tool_calls_per_turn")
    rows = []
    for s in range(steps.size):
        b, k, m = steps.row[s], steps.turn[s], steps.mask[s]
        mean_logp = float((batch.behavior_logprobs[b].float() * m).sum() / m.sum().clamp(min=1))
        T = len(steps.ep_rewards[steps.episode[s]])
        c = calls[b] if calls is not None else None
        tool = float(bool(c[k])) if c is not None and k < len(c) else 0.0
        rows.append([mean_logp, (k + 1) / max(T, 1), tool])
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, len(FEATURES))


def fit_step(w: torch.Tensor, bias: float, X: torch.Tensor, steps: Steps, lr: float) -> tuple[torch.Tensor, float, float]:
    """One gradient step on L = mean_e (sum_{t in e} c_t - R_e)^2 with c_t = w . x_t + bias.
    Returns (new w, new bias, L before the step)."""
    ep = torch.tensor(steps.episode, dtype=torch.long)
    E = len(steps.ep_return)
    c = X @ w + bias
    resid = torch.zeros(E, dtype=torch.float64).index_add_(0, ep, c) - torch.tensor(steps.ep_return, dtype=torch.float64)
    loss = float((resid ** 2).mean())
    g = 2 * resid[ep] / E  # dL/dc_t = 2 (sum_e c - R_e) / E
    return w - lr * (g[:, None] * X).sum(0), bias - lr * float(g.sum()), loss


@ADVANTAGES.register("spa_rl", paper="SPA-RL: Reinforcing LLM Agents via Stepwise Progress Attribution",
                     arxiv="2505.20732", needs=("turns", "state"),
                     summary="a learned progress estimator splits the episode return into per-turn "
                             "contributions (sum trained to match the return); contributions are the turn rewards")
def spa_rl(batch: RolloutBatch, state: dict, *, lr: float = 0.05, fit_steps: int = 1, gamma: float = 1.0,
           alpha: float = 1.0, fnorm: str = "std", eps: float = 1e-6) -> torch.Tensor:
    """SPA (sec. 3): progress attribution, then RL on the attributed turn rewards.

        c_t   = w . x_t + b                         predicted contribution of turn t (x_t: FEATURES)
        fit   : min_{w,b} mean_e (sum_{t in e} c_t - R_e)^2            (the progress estimator's loss)
        r_t   = alpha * c_t                                             (paper: + beta * grounding g_t)
        G_t   = sum_{k >= t} gamma^(k-t) r_k ;  A_t = (G_t - mean) / F over the prompt's steps

    Contributions are predicted with the weights BEFORE this batch's `fit_steps` gradient steps
    (learning rate `lr`), so a batch never grades itself; then the weights are updated and stored in
    `state` ({"w", "b", "updates", "loss"}, JSON-serialisable). The return R_e (env turn rewards
    plus any outcome reward) is what the estimator redistributes, so env rewards are not added a
    second time. Deviations: the paper trains its LLM progress estimator
    offline on exploration data and then optimises with PPO (a critic); here the estimator is linear
    on batch features and trained online (see the module docstring), and the advantage is critic-
    free (group-normalised discounted return of the attributed rewards, F = std or 1). The grounding
    signal (was the action executable in the env) is not available per turn in the batch and is
    left out. Defaults lr = 0.05, fit_steps = 1, gamma = 1 are mine (not from the paper).
    """
    steps = agent_steps(batch, "spa_rl")
    if not steps.size:
        return scatter(batch, steps, torch.zeros(0))
    w = torch.tensor(state.get("w", [0.0] * len(FEATURES)), dtype=torch.float64)
    if w.numel() != len(FEATURES):
        raise ValueError(f"spa_rl: the state holds {w.numel()} weights, the estimator has {len(FEATURES)} "
                         f"features {FEATURES}; the checkpoint is from another version")
    b0 = float(state.get("b", 0.0))
    X = step_features(batch, steps)
    c = X @ w + b0
    r = alpha * c
    by_ep: dict[int, dict[int, float]] = {}
    for s in range(steps.size):
        by_ep.setdefault(steps.episode[s], {})[steps.turn[s]] = float(r[s])
    G = torch.tensor([sum(gamma ** (j - steps.turn[s]) * v for j, v in by_ep[steps.episode[s]].items()
                          if j >= steps.turn[s]) for s in range(steps.size)], dtype=torch.float64)
    adv = normalise(G, steps.group(), fnorm=fnorm, eps=eps)
    loss = None
    for _ in range(fit_steps):
        w, b0, loss = fit_step(w, b0, X, steps, lr)
    state.update({"w": [float(x) for x in w], "b": b0, "updates": int(state.get("updates", 0)) + fit_steps,
                  "loss": loss})
    return scatter(batch, steps, adv)
