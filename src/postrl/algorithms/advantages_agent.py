"""Critic-free multi-turn credit assignment: outcome broadcast, anchor-state and graph step groups.

Same contract as `advantages.py` (`fn(batch, **hparams) -> [B, T]`, zero where loss_mask is 0),
on the agent layouts read by `agent_steps` (concat rows with `turn_ids`, per_turn rows with
`step_ids`, or plain single-turn rows, where each completion is one turn and every entry here
reduces to a GRPO-like outcome advantage). Each entry computes one number per step (an episode's
turn) and broadcasts it to the turn's action tokens. Entries need "turns" (registries.py).
"""

from __future__ import annotations

import torch

from postrl.algorithms.agent_steps import Steps, agent_steps, normalise, scatter
from postrl.algorithms.registries import ADVANTAGES
from postrl.rollout.batch import RolloutBatch


def episode_advantages(steps: Steps, *, fnorm: str, eps: float) -> torch.Tensor:
    """[E] (R_i - mean_G R) / F over the episodes of each prompt group (GRPO on episodes)."""
    return normalise(torch.tensor(steps.ep_return, dtype=torch.float64), steps.ep_group, fnorm=fnorm, eps=eps)


def discounted_returns(steps: Steps, gamma: float) -> torch.Tensor:
    """[S] R_t = sum_{k >= t} gamma^(k - t) r_k of each step's episode from its turn on."""
    out = []
    for e, k in zip(steps.episode, steps.turn):
        out.append(sum(gamma ** (j - k) * r for j, r in enumerate(steps.ep_rewards[e]) if j >= k))
    return torch.tensor(out, dtype=torch.float64)


@ADVANTAGES.register("flow_grpo", paper="In-the-Flow Agentic System Optimization for Effective Planning and "
                     "Tool Use", arxiv="2510.05592", needs=("turns",),
                     summary="the episode's group-normalised outcome broadcast to every turn (AgentFlow)")
def flow_grpo(batch: RolloutBatch, *, scale_by_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """Flow-GRPO: one verifiable trajectory outcome, normalised over the prompt's G episodes,
    becomes the advantage of every turn, turning the multi-turn problem into T single-turn updates.

        A_i     = (R(tau_i) - mean_{j in G} R(tau_j)) / (std_{j in G} R(tau_j) + eps)
        A_i,t,j = A_i                 for every token j of every turn t of episode i

    Statistics are over EPISODES, not rows: in the per_turn layout an episode's T rows share one
    A_i and count once in the mean and std (plain `grpo` on per_turn rows would weight an episode
    by its turn count). The paper's objective averages tokens within a turn, turns within a
    trajectory, trajectories within a group; in per_turn layout `loss_agg: seq_mean_token_mean`
    gives the first of those (rows are turns). Unbiased std as `grpo`; groups of one or equal
    returns give 0; on single-turn batches this is exactly `grpo`.
    """
    steps = agent_steps(batch, "flow_grpo")
    a_E = episode_advantages(steps, fnorm="std" if scale_by_std else "none", eps=eps)
    return scatter(batch, steps, a_E[torch.tensor(steps.episode, dtype=torch.long)] if steps.size else a_E)


@ADVANTAGES.register("gigpo", paper="Group-in-Group Policy Optimization for LLM Agent Training", arxiv="2505.10978",
                     needs=("turns",), summary="episode-level group advantage + omega x step-level advantage "
                     "within anchor-state groups (discounted step returns)")
def gigpo(batch: RolloutBatch, *, omega: float = 1.0, gamma: float = 0.95, fnorm: str = "std",
          eps: float = 1e-6) -> torch.Tensor:
    """GiGPO (sec. 4, eqs. 4-8): two nested group-relative advantages, no critic, no extra rollouts.

        episode:  A^E(tau_i) = (R(tau_i) - mean_{j in G} R(tau_j)) / F_norm           (eq. 4)
        anchor:   G^S(s~) = every step (i, t) of the prompt's episodes whose state before the
                  action is s~ (equal state keys), across episodes and turns           (eq. 5)
        return:   R_t^(i) = sum_{k >= t} gamma^(k - t) r_k^(i)                         (eq. 6)
        step:     A^S(a_t^(i)) = (R_t^(i) - mean_{G^S(s~)} R) / F_norm                 (eq. 7)
        combined: A = A^E(tau_i) + omega * A^S(a_t^(i)), on the turn's tokens          (eq. 8)

    F_norm = std (+ eps; "std", as GRPO) or 1 ("none", the leave-one-out-like form the paper finds
    better on its hardest tasks). An anchor group of one step gets A^S = 0. State keys: concat rows
    read metadata["turn_state_keys"], per_turn rows `state_keys`; an empty key means the env has
    no state key and that step joins no anchor group, EXCEPT at turn 0, where the state is the
    task prompt itself (the group's episodes start from the same reset), so turn-0 steps of a
    group always form one anchor group. On single-turn batches that makes A = (1 + omega) A^E.
    Defaults: omega = 1 (paper); gamma = 0.95 (verl-agent's and ROLL's GiGPO settings, not stated
    in the paper's text as far as I could confirm); fnorm = std (the paper reports both).
    """
    steps = agent_steps(batch, "gigpo")
    if not steps.size:
        return scatter(batch, steps, torch.zeros(0))
    a_E = episode_advantages(steps, fnorm=fnorm, eps=eps)[torch.tensor(steps.episode, dtype=torch.long)]
    anchors = []
    for s, (g, k, key) in enumerate(zip(steps.group(), steps.turn, steps.state)):
        if key:
            anchors.append((g, "state", key))
        elif k == 0:
            anchors.append((g, "reset", ""))
        else:
            anchors.append(("alone", s))  # unique id: a singleton group, A^S = 0
    a_S = normalise(discounted_returns(steps, gamma), anchors, fnorm=fnorm, eps=eps)
    return scatter(batch, steps, a_E + omega * a_S)


def _action_key(batch: RolloutBatch, steps: Steps, s: int) -> tuple:
    """The step's action: its token ids (identical text = identical action)."""
    ids = batch.completion_ids[steps.row[s]][steps.mask[s] > 0]
    return tuple(ids.tolist())


@ADVANTAGES.register("salt", paper="SALT: Step-level Advantage Assignment for Long-horizon Agents via "
                     "Trajectory Graph", arxiv="2510.20022", needs=("turns",),
                     summary="trajectory graph of the group's episodes: a step shared by several episodes "
                     "gets the mean of their outcome advantages")
def salt(batch: RolloutBatch, *, scale_by_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """SALT: merge the prompt's G trajectories into a graph and give each step (edge) the average
    outcome advantage of the trajectories that pass through it.

        A_i       = (R_i - mean_G R) / (std_G R + eps)              trajectory advantage (GRPO)
        node(i,t) = (prompt, state before step t, action a_t)       with a state key
                  = (prompt, a_1, ..., a_t)                         without one (the history tree)
        A_i,t     = mean { A_j : trajectory j contains node(i, t) } (each occurrence counts once)

    A step every trajectory shares (a neutral step) averages to 0 and stops receiving the
    conflicting credit of GRPO; a step only successful trajectories take keeps a positive
    advantage. Actions are compared by their token ids. My reading of the paper's construction
    (nodes merged on identical state and action, edge advantage = mean of the advantages through
    it); its exact merge rule and any extra weighting were not confirmed from the text. Equal
    returns give 0; on single-turn batches identical completions share their (equal) advantage,
    so this is `grpo`.
    """
    steps = agent_steps(batch, "salt")
    if not steps.size:
        return scatter(batch, steps, torch.zeros(0))
    a_E = episode_advantages(steps, fnorm="std" if scale_by_std else "none", eps=eps)
    order = sorted(range(steps.size), key=lambda s: (steps.episode[s], steps.turn[s]))
    history: dict[int, tuple] = {}
    nodes = [None] * steps.size
    for s in order:
        e, action = steps.episode[s], _action_key(batch, steps, s)
        history[e] = history.get(e, ()) + (action,)
        key = steps.state[s]
        nodes[s] = (steps.ep_group[e], "state", key, action) if key else (steps.ep_group[e], "path", history[e])
    total: dict = {}
    for s, node in enumerate(nodes):
        t, c = total.get(node, (0.0, 0))
        total[node] = (t + float(a_E[steps.episode[s]]), c + 1)
    values = torch.tensor([total[n][0] / total[n][1] for n in nodes], dtype=torch.float32)
    return scatter(batch, steps, values)


@ADVANTAGES.register("eapo", paper="IterResearch: Rethinking Long-Horizon Agents via Markovian State "
                     "Reconstruction", arxiv="2511.07327", needs=("turns",),
                     summary="Efficiency-Aware Policy Optimization: final reward discounted geometrically "
                     "to each round, group-normalised over all rounds")
def eapo(batch: RolloutBatch, *, gamma: float = 0.995, scale_by_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """EAPO's geometric reward discounting: every round t of an episode with T rounds and final
    reward R is a training sample with reward

        r_t = gamma^(T - t) * R                     (t = 1..T; the last round gets R)
        A_t = (r_t - mean(r)) / (std(r) + eps)      over all rounds of all episodes of the prompt

    so a correct answer reached in fewer rounds earns more on every round, which favours
    efficient exploration. R is the episode return (sequence return). Normalising over the
    rounds of the group is how the rounds enter the GRPO-style update as samples; EAPO's
    adaptive down-sampling of the rounds (to fit the distributed batch) is a data-parallel
    batching device and is not done here. gamma = 0.995 is not confirmed from the paper's text.
    Single-turn batches (T = 1) give `grpo`.
    """
    steps = agent_steps(batch, "eapo")
    if not steps.size:
        return scatter(batch, steps, torch.zeros(0))
    T = [len(steps.ep_rewards[e]) for e in steps.episode]
    r = torch.tensor([gamma ** (n - 1 - k) * steps.ep_return[e] for e, k, n in zip(steps.episode, steps.turn, T)],
                     dtype=torch.float64)
    return scatter(batch, steps, normalise(r, steps.group(), fnorm="std" if scale_by_std else "none", eps=eps))
