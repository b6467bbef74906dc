"""ArCHer: a turn-level critic whose advantage drives a token-level policy gradient (needs "values").

The critic is `learner/critic.py`'s value model, read at turn boundaries through the estimator
contract of `advantages_value.py`: `batch.values[b, t]` is V of the state before completion token
t. For a turn k with action tokens f_k..l_k (first..last policy token of the turn):

    V(s_k)      = values[b, f_k]   the state before the action: task + history + observations
    Q(s_k, a_k) = values[b, l_k]   the state with the action written (all but its last token)

so one value model provides ArCHer's utterance-level Q and V heads at two positions. The
estimator broadcasts one advantage per turn (from the ONLINE critic, as the paper's actor) to the
turn's tokens. The entry needs "critic_replay": the trainer trains the critic off-policy with
`learner/critic_replay.py` (replay buffer of turn transitions, TD targets from a soft-updated
target critic), at the same positions and with the same `gamma` / `mode` rule as below; the
on-policy targets this function leaves in `batch.returns` / `batch.value_mask` (1 only at those
positions) are then unused by the trainer.
"""

from __future__ import annotations

import torch

from postrl.algorithms.agent_steps import Steps, agent_steps, scatter
from postrl.algorithms.registries import ADVANTAGES
from postrl.rollout.batch import RolloutBatch


def turn_bounds(steps: Steps) -> tuple[list[int], list[int]]:
    """First and last action-token index of every step."""
    first, last = [], []
    for m in steps.mask:
        idx = (m > 0).nonzero().flatten()
        first.append(int(idx[0])), last.append(int(idx[-1]))
    return first, last


def next_step(steps: Steps) -> list[int | None]:
    """Index of the step that follows each step in its episode (None: the episode ends)."""
    at = {(e, k): s for s, (e, k) in enumerate(zip(steps.episode, steps.turn))}
    return [at.get((e, k + 1)) for e, k in zip(steps.episode, steps.turn)]


@ADVANTAGES.register("archer", paper="ArCHer: Training Language Model Agents via Hierarchical Multi-Turn RL",
                     arxiv="2402.19446", needs=("values", "turns", "critic_replay"),
                     summary="utterance-level critic (Q and V read from the value model at turn boundaries, "
                     "TD targets) whose per-turn advantage Q - V drives a token-level policy gradient")
def archer(batch: RolloutBatch, *, gamma: float = 0.95, mode: str = "qv") -> torch.Tensor:
    """ArCHer's practical instantiation (sec. 4, Alg. 1): TD learning at the utterance level, policy
    gradient at the token level with the utterance advantage as the reward of the whole turn.

        r_k     = the turn's reward (step_rewards; an outcome reward counts on the last turn)
        V'_k    = V(s_{k+1}) = values at the next turn's first action token; 0 after the last turn
        mode "qv" (default, the paper's two critics):
            Q target:  Q(s_k, a_k) <- r_k + gamma * V'_k          (at l_k; the paper's target V)
            V target:  V(s_k)      <- Q(s_k, a_k)                 (at f_k; a_k ~ pi, on-policy)
            A_k      = Q(s_k, a_k) - V(s_k)
        mode "td" (one critic): V(s_k) <- r_k + gamma * V'_k,  A_k = r_k + gamma * V'_k - V(s_k)
        every token of turn k gets A_k (the token-level actor is REINFORCE / PPO on A_k)

    A one-token action has f_k = l_k, where Q and V cannot be told apart: that turn uses the "td"
    rule. The targets written here use the online values (a target synced every step); the
    trainer's critic (`learner/critic_replay.py`) recomputes them with the target critic
    (theta-bar, soft update tau = `critic.target_tau` = 0.1) on this batch's turns plus a uniform
    sample of a FIFO replay buffer (`critic.replay_capacity` = 10k transitions), as the paper's
    off-policy critic. Defaults (official repo, scripts/config/default.yaml): gamma = 0.95 (its
    trainer's fallback is 0.9), tau = 0.1, capacity = 10000, 20 critic-only warm-up iterations
    (the preset's `critic.policy_freeze_steps: 20`), plain MSE critic loss (the preset's
    `critic.vf_clip: None`).

    Deviations (documented, not hidden): (1) the official critic is two Q and two V heads with a
    min taken in the actor's advantage (double Q); here one value model: its head starts at zero,
    so two copies trained on the same data would stay identical and the min would do nothing, and
    a second value model doubles the critic's memory; (2) the V target is Q-bar at the STORED
    action, not at a fresh action sampled from the current policy for each replayed state (that
    would need generation inside the critic update); (3) the critic takes `train.epochs` x
    `train.mini_batches` optimizer steps per RL step (the official runs 5-20 critic epochs of
    one step over 256 sampled transitions each), the target soft-updated after each epoch; (4) the
    actor trains on the current batch's actions, not on replayed states with fresh actions.
    Single-turn batches: each completion is one turn, terminal.
    """
    if mode not in ("qv", "td"):
        raise ValueError(f"archer: mode must be 'qv' (Q and V critics) or 'td' (one V critic), got {mode!r}")
    if batch.values is None:
        raise ValueError("advantage estimator 'archer' needs critic values on the batch (batch.values); the "
                         "trainer provides them for estimators registered with needs=('values',)")
    steps = agent_steps(batch, "archer")
    values = batch.values.float() * batch.loss_mask
    returns = torch.zeros_like(values)
    value_mask = torch.zeros_like(values)
    if not steps.size:
        batch.returns, batch.value_mask = returns, value_mask
        return scatter(batch, steps, torch.zeros(0))
    first, last = turn_bounds(steps)
    follow = next_step(steps)
    adv = []
    for s in range(steps.size):
        b, e, k = steps.row[s], steps.episode[s], steps.turn[s]
        r = steps.ep_rewards[e][k]
        n = follow[s]
        v_next = float(values[steps.row[n], first[n]]) if n is not None else 0.0
        target = r + gamma * v_next
        v = float(values[b, first[s]])
        if mode == "qv" and last[s] != first[s]:
            q = float(values[b, last[s]])
            returns[b, last[s]], returns[b, first[s]] = target, q
            value_mask[b, last[s]] = value_mask[b, first[s]] = 1.0
            adv.append(q - v)
        else:
            returns[b, first[s]] = target
            value_mask[b, first[s]] = 1.0
            adv.append(target - v)
    batch.returns, batch.value_mask = returns, value_mask
    return scatter(batch, steps, torch.tensor(adv, dtype=torch.float32))
