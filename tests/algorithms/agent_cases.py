"""Hand-built agent batches (issue-6 layouts) shared by the agent credit-assignment tests.

Concat row layout, 3 turns of 2 action tokens with one observation token between turns:

    position   0  1  2  3  4  5  6  7
    turn_ids   0  0  0  1  1  1  2  2
    loss_mask  1  1  0  1  1  0  1  1      (position 2 and 5: observation tokens)
"""

import torch

from postrl.rollout.batch import RolloutBatch

TURN_IDS = [0, 0, 0, 1, 1, 1, 2, 2]
LOSS = [1, 1, 0, 1, 1, 0, 1, 1]
ACTION_POS = [(0, 1), (3, 4), (6, 7)]


def concat_batch(actions, step_rewards, returns, states, groups, values=None):
    """actions[b][k] = the 2 token ids of turn k of episode b."""
    B = len(actions)
    ids = torch.zeros(B, 8, dtype=torch.long)
    for b, turns in enumerate(actions):
        for (i, j), a in zip(ACTION_POS, turns):
            ids[b, i], ids[b, j] = a[0], a[1]
        ids[b, 2], ids[b, 5] = 90, 91
    mask = torch.ones(B, 8, dtype=torch.long)
    return RolloutBatch(
        prompt_ids=torch.ones(B, 2, dtype=torch.long), prompt_mask=torch.ones(B, 2, dtype=torch.long),
        completion_ids=ids, completion_mask=mask, loss_mask=torch.tensor([LOSS] * B, dtype=torch.float32),
        behavior_logprobs=torch.zeros(B, 8), group_ids=torch.tensor(groups),
        rewards=torch.tensor(returns, dtype=torch.float32), step_rewards=step_rewards,
        turn_ids=torch.tensor([TURN_IDS] * B), values=values,
        metadata={"episode_id": list(range(B)), "turn_state_keys": states, "num_turns": [3] * B,
                  "turn_ends": [[1, 4, 7]] * B})


def per_turn_batch(actions, step_rewards, returns, states, groups):
    """The same episodes, one row per (episode, turn): prompt = context, completion = the action."""
    rows = [(b, k) for b in range(len(actions)) for k in range(3)]
    B = len(rows)
    return RolloutBatch(
        prompt_ids=torch.ones(B, 2, dtype=torch.long), prompt_mask=torch.ones(B, 2, dtype=torch.long),
        completion_ids=torch.tensor([list(actions[b][k]) for b, k in rows]),
        completion_mask=torch.ones(B, 2, dtype=torch.long), loss_mask=torch.ones(B, 2),
        behavior_logprobs=torch.zeros(B, 2), group_ids=torch.tensor([groups[b] for b, _ in rows]),
        rewards=torch.tensor([returns[b] for b, _ in rows], dtype=torch.float32),
        step_rewards=[step_rewards[b] for b, _ in rows], step_ids=torch.tensor([k for _, k in rows]),
        state_keys=[states[b][k] for b, k in rows],
        metadata={"episode_id": [b for b, _ in rows], "episode_return": [returns[b] for b, _ in rows]})


def per_turn_values(adv, b):
    """The advantage on each of the 3 turns of concat row b (checks both action tokens agree)."""
    out = []
    for i, j in ACTION_POS:
        assert abs(float(adv[b, i]) - float(adv[b, j])) < 1e-6
        out.append(float(adv[b, i]))
    return out


# 2 prompts x 2 episodes x 3 turns. Episode 0 succeeds on its last turn, 1 fails; 2 succeeds, 3 fails.
ACTIONS = [[(5, 6), (7, 8), (9, 10)], [(5, 6), (7, 9), (9, 11)],
           [(5, 6), (12, 13), (14, 15)], [(5, 6), (16, 17), (14, 15)]]
STEP_REWARDS = [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
RETURNS = [1.0, 0.0, 1.0, 0.0]
STATES = [["s0", "sA", "sB"], ["s0", "sA", "sC"], ["t0", "tA", "tC"], ["t0", "tB", "tC"]]
GROUPS = [0, 0, 1, 1]
