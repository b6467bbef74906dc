"""ASPO: the clipped early-tool-call bias on top of GRPO, by hand."""

import pytest
import torch

from postrl.algorithms import ADVANTAGES

from algorithms.agent_cases import ACTIONS, STATES, STEP_REWARDS, concat_batch, per_turn_values


def _batch(calls):
    # one prompt, three episodes: returns 1, 1, 0; 8 completion tokens each (turn_ends 1, 4, 7)
    b = concat_batch(ACTIONS[:3], STEP_REWARDS[:3], [1.0, 1.0, 0.0], STATES[:3], [0, 0, 0])
    b.metadata["tool_calls_per_turn"] = calls
    return b


CALLS = [[1, 0, 0], [0, 1, 0], [1, 0, 0]]


def test_aspo_hand_computed():
    adv = ADVANTAGES["aspo"](_batch(CALLS))
    # grpo: mean 2/3, unbiased std 0.57735 -> A = 0.57735, 0.57735, -1.1547
    # correct rows with a tool call: 0 (first call ends at 1), 1 (at 4); mean p 2.5, mean L 8
    # bias = -2 (p - 2.5) / 8 = +0.375, -0.375; |bias| < 0.7 * 0.57735 = 0.404145: not clipped
    assert per_turn_values(adv, 0) == pytest.approx([0.952350] * 3, abs=1e-5)
    assert per_turn_values(adv, 1) == pytest.approx([0.202350] * 3, abs=1e-5)
    assert per_turn_values(adv, 2) == pytest.approx([-1.154700] * 3, abs=1e-5)  # wrong: no bias
    assert torch.all(adv[:, [2, 5]] == 0)


def test_aspo_clip_and_tool_turns():
    adv = ADVANTAGES["aspo"](_batch(CALLS), k=0.5)
    # limit 0.5 * 0.57735 = 0.288675 -> A' = 0.866025, 0.288675
    assert per_turn_values(adv, 0) == pytest.approx([0.866025] * 3, abs=1e-5)
    assert per_turn_values(adv, 1) == pytest.approx([0.288675] * 3, abs=1e-5)
    adv = ADVANTAGES["aspo"](_batch(CALLS), apply_to="tool_turns")
    assert per_turn_values(adv, 0) == pytest.approx([0.952350, 0.577350, 0.577350], abs=1e-5)
    assert per_turn_values(adv, 1) == pytest.approx([0.577350, 0.202350, 0.577350], abs=1e-5)


def test_aspo_without_two_tool_users_is_the_base():
    b = _batch([[1, 0, 0], [0, 0, 0], [1, 0, 0]])  # one correct tool user only
    assert torch.allclose(ADVANTAGES["aspo"](b), ADVANTAGES["grpo"](b))
    del b.metadata["tool_calls_per_turn"]
    with pytest.raises(ValueError, match="tool_calls_per_turn"):
        ADVANTAGES["aspo"](b)
