"""Self-play win-rate advantages: each completion scored by how often it beats its own group.

SPO (the minimaximalist approach to RLHF) needs no reward model calibrated across prompts: the
completions of one prompt play against each other, and a completion's reward is its win rate.
Here the comparison is the scalar reward of the configured reward functions (higher wins, ties
count 1/2), so the signal depends only on the reward ORDER within a group.
"""

from __future__ import annotations

import torch

from postrl.algorithms.advantages import broadcast, sequence_returns
from postrl.algorithms.registries import ADVANTAGES
from postrl.rollout.batch import RolloutBatch


def group_win_rates(values_B: torch.Tensor, group_ids_B: torch.Tensor) -> torch.Tensor:
    """[B] win rate of each row against the OTHER rows of its group: mean of 1[v_i > v_j] + 1/2 1[v_i = v_j].

    A row alone in its group has no opponent and gets 1/2. O(B^2) comparisons, masked to groups:
    fine for rollout batches (thousands of rows), and exact.
    """
    v = values_B.double()
    same = group_ids_B[:, None] == group_ids_B[None, :]
    same.fill_diagonal_(False)
    score = (v[:, None] > v[None, :]).double() + 0.5 * (v[:, None] == v[None, :]).double()
    opponents = same.sum(-1)
    wins = (score * same).sum(-1)
    rate = torch.where(opponents > 0, wins / opponents.clamp(min=1), torch.full_like(wins, 0.5))
    return rate.to(values_B.dtype)


def preference_win_rates(prefs_GKK: torch.Tensor) -> torch.Tensor:
    """[G, K] win rate of each of K responses against the other K - 1 of its prompt, from a judge.

    `prefs_GKK[g, i, j]` = P(y_i beats y_j) for i != j (the diagonal is ignored); a caller judges
    each pair i < j once and fills P(j beats i) = 1 - P(i beats j). This is SPPO's P^(y beats pi_t)
    (need "win_rates") over the other samples.
    """
    G, K, K2 = prefs_GKK.shape
    if K != K2 or K < 2:
        raise ValueError(f"win rates need a [G, K, K] preference matrix with K >= 2 samples per prompt, "
                         f"got shape {tuple(prefs_GKK.shape)}; sample at least 2 responses per prompt")
    off = ~torch.eye(K, dtype=torch.bool, device=prefs_GKK.device)
    return (prefs_GKK * off).sum(-1) / (K - 1)


def best_and_worst(rates_GK: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices [G] of the highest and the lowest win rate per prompt (ties: the lowest index)."""
    # torch's argmax/argmin return the first index of the extreme value
    return rates_GK.argmax(-1), rates_GK.argmin(-1)


@ADVANTAGES.register("self_play_win_rate", paper="A Minimaximalist Approach to Reinforcement Learning from "
                     "Human Feedback (SPO)", arxiv="2401.04056",
                     summary="SPO: win rate of each completion against its own group minus 1/2")
def self_play_win_rate(batch: RolloutBatch) -> torch.Tensor:
    """SPO's self-play reward (Algorithm 1), with the reward order as the preference.

        w_i = 1/(G-1) * sum_{j != i in the group} ( 1[r_i > r_j] + 1/2 * 1[r_i = r_j] )
        A_{i,t} = w_i - 1/2                                      for every token t of o_i

    w_i is the share of its group a completion beats: the Monte-Carlo estimate of P(o_i beats pi),
    whose maximiser over policies is the Minimax (von Neumann) winner. Since P(i beats j) +
    P(j beats i) = 1, the advantages of a group sum to 0; equal rewards give 0 everywhere; a lone
    completion gets 0; any strictly increasing transform of the reward leaves A unchanged.
    Deviations: SPO queries a preference model on each pair and hands w_i to PPO/SAC with their own
    critic; here the pair preference is 1[r_i > r_j] from the scalar reward and the centring by
    1/2 (the mean win rate of every group) is the baseline. The paper adds no other normalisation.
    """
    rate = group_win_rates(sequence_returns(batch), batch.group_ids)
    return broadcast(rate - 0.5, batch)
