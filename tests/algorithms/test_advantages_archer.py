"""ArCHer's turn-level critic targets and advantages on one hand-computed 3-turn episode.

Values (V of the state before each token) on the concat row of agent_cases.py:

    position  0    1    2   3    4    5   6    7
    turn      0    0    .   1    1    .   2    2
    value     0.2  0.3  0   0.4  0.5  0   0.6  0.9

so V(s_k) = values at each turn's first token (0.2, 0.4, 0.6) and Q(s_k, a_k) at its last (0.3, 0.5, 0.9).
"""

import pytest
import torch

from postrl.algorithms import ADVANTAGES
from postrl.rollout.batch import RolloutBatch

from algorithms.agent_cases import concat_batch, per_turn_values

VALUES = torch.tensor([[0.2, 0.3, 0.0, 0.4, 0.5, 0.0, 0.6, 0.9]])


def _episode():
    return concat_batch([[(5, 6), (7, 8), (9, 10)]], [[0.0, 0.0, 1.0]], [1.0], [["a", "b", "c"]], [0],
                        values=VALUES.clone())


def test_archer_qv_targets_and_advantages():
    b = _episode()
    adv = ADVANTAGES["archer"](b, gamma=0.5, mode="qv")
    # A_k = Q_k - V_k = 0.3 - 0.2, 0.5 - 0.4, 0.9 - 0.6
    assert per_turn_values(adv, 0) == pytest.approx([0.1, 0.1, 0.3], abs=1e-6)
    # Q targets at last tokens: r + 0.5 V(s_next) = 0 + 0.5*0.4, 0 + 0.5*0.6, 1 (terminal);
    # V targets at first tokens: the Q values 0.3, 0.5, 0.9
    assert b.returns[0].tolist() == pytest.approx([0.3, 0.2, 0, 0.5, 0.3, 0, 0.9, 1.0], abs=1e-6)
    assert b.value_mask[0].tolist() == [1, 1, 0, 1, 1, 0, 1, 1]


def test_archer_td_mode_uses_one_critic():
    b = _episode()
    adv = ADVANTAGES["archer"](b, gamma=0.5, mode="td")
    # A_k = r_k + 0.5 V(s_{k+1}) - V(s_k): 0.2 - 0.2, 0.3 - 0.4, 1 - 0.6
    assert per_turn_values(adv, 0) == pytest.approx([0.0, -0.1, 0.4], abs=1e-6)
    assert b.returns[0].tolist() == pytest.approx([0.2, 0, 0, 0.3, 0, 0, 1.0, 0], abs=1e-6)
    assert b.value_mask[0].tolist() == [1, 0, 0, 1, 0, 0, 1, 0]


def test_archer_one_token_action_falls_back_to_td_and_single_turn_is_terminal():
    b = RolloutBatch.from_token_lists([[1]], [[7]], 0, group_ids=[0])
    b.rewards, b.values = torch.tensor([1.0]), torch.tensor([[0.25]])
    adv = ADVANTAGES["archer"](b, mode="qv")
    assert adv[0].tolist() == pytest.approx([0.75])  # 1 + gamma * 0 - 0.25
    assert b.returns[0].tolist() == pytest.approx([1.0]) and b.value_mask.tolist() == [[1.0]]


def test_archer_without_values_or_bad_mode_is_a_clear_error():
    b = _episode()
    with pytest.raises(ValueError, match="mode"):
        ADVANTAGES["archer"](b, mode="q")
    b.values = None
    with pytest.raises(ValueError, match="batch.values"):
        ADVANTAGES["archer"](b)
    assert set(ADVANTAGES.get("archer").needs) == {"values", "turns", "critic_replay"}  # off-policy critic
