"""stratified_grpo stratified by the multi-turn rollout's tool-call count (metadata "tool_calls")."""

import pytest
import torch

from postrl.algorithms import ADVANTAGES

from algorithms.agent_cases import ACTIONS, STATES, STEP_REWARDS, concat_batch, per_turn_values


def test_strata_by_tool_calls_hand_computed():
    b = concat_batch(ACTIONS, STEP_REWARDS, [1.0, 0.0, 1.0, 1.0], STATES, [0, 0, 0, 0])
    b.metadata["tool_calls"] = [1, 1, 2, 2]
    adv = ADVANTAGES["stratified_grpo"](b, stratum_key="tool_calls", alpha=0.8)
    # strata {0, 1}: rewards 1, 0 -> +-1 (population std 0.5); {2, 3}: 1, 1 -> 0
    # whole group: mean 0.75, population std 0.433013 -> 0.57735, -1.73205, 0.57735, 0.57735
    # A = 0.8 A_SAN + 0.2 A_GN
    expect = [0.915470, -1.146410, 0.115470, 0.115470]
    for row, a in enumerate(expect):
        assert per_turn_values(adv, row) == pytest.approx([a] * 3, abs=1e-5)
    assert torch.all(adv[:, [2, 5]] == 0)  # observation tokens
