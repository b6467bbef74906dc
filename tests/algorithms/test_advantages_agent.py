"""Agent credit assignment on hand-computed trajectories (tests/algorithms/agent_cases.py).

Two prompts x two episodes x three turns; episodes 0 and 2 earn reward 1 on their last turn.
"""

import math

import pytest
import torch

from postrl.algorithms import ADVANTAGES
from postrl.algorithms.advantages import grpo
from postrl.rollout.batch import RolloutBatch

from algorithms.agent_cases import (ACTIONS, GROUPS, RETURNS, STATES, STEP_REWARDS, concat_batch, per_turn_batch,
                                    per_turn_values)

H = 1 / math.sqrt(2)  # a two-episode group normalised by its unbiased std: +-0.5 / 0.7071


def _concat(**kw):
    args = dict(actions=ACTIONS, step_rewards=STEP_REWARDS, returns=RETURNS, states=STATES, groups=GROUPS)
    args.update(kw)
    return concat_batch(**args)


def _single_turn(rewards, groups):
    """Plain single-turn rows with distinct completions (no turn fields)."""
    b = RolloutBatch.from_token_lists([[1, 2]] * len(rewards), [[3, 4 + i, 5] for i in range(len(rewards))], 0,
                                      group_ids=groups)
    b.rewards = torch.tensor(rewards)
    return b


def test_flow_grpo_broadcasts_the_episode_advantage_to_every_turn():
    adv = ADVANTAGES["flow_grpo"](_concat())
    # group 0: R = (1, 0), mean 0.5, unbiased std 0.7071 -> +-0.7071 on every turn
    assert per_turn_values(adv, 0) == pytest.approx([H] * 3, abs=1e-5)
    assert per_turn_values(adv, 1) == pytest.approx([-H] * 3, abs=1e-5)
    assert torch.all(adv[:, [2, 5]] == 0)  # observation tokens get nothing


def test_flow_grpo_counts_an_episode_once_in_per_turn_layout():
    # 3 episodes of one prompt with returns 1, 0, 0 but 3 rows each: stats over episodes,
    # mean 1/3, unbiased std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = 0.57735 -> A = 1.1547, -0.57735
    b = per_turn_batch(ACTIONS[:3], STEP_REWARDS[:3], [1.0, 0.0, 0.0], STATES[:3], [0, 0, 0])
    adv = ADVANTAGES["flow_grpo"](b)
    expect = [1.1547] * 3 + [-0.57735] * 6
    assert adv[:, 0].tolist() == pytest.approx(expect, abs=1e-4)


def test_gigpo_anchor_groups_with_fnorm_none_hand_computed():
    adv = ADVANTAGES["gigpo"](_concat(), omega=1.0, gamma=0.95, fnorm="none")
    # A^E = +-0.5. Group 0 anchors: turn 0 "s0" (R_0 = 0.95^2 = 0.9025 vs 0 -> +-0.45125),
    # turn 1 "sA" (0.95 vs 0 -> +-0.475), turn 2 "sB"/"sC" are singletons (A^S = 0).
    assert per_turn_values(adv, 0) == pytest.approx([0.95125, 0.975, 0.5], abs=1e-6)
    assert per_turn_values(adv, 1) == pytest.approx([-0.95125, -0.975, -0.5], abs=1e-6)
    # Group 1: "t0" shared (+-0.45125), "tA"/"tB" singletons, "tC" shared (1 vs 0 -> +-0.5)
    assert per_turn_values(adv, 2) == pytest.approx([0.95125, 0.5, 1.0], abs=1e-6)
    assert per_turn_values(adv, 3) == pytest.approx([-0.95125, -0.5, -1.0], abs=1e-6)


def test_gigpo_std_normalisation_and_omega():
    adv = ADVANTAGES["gigpo"](_concat(), omega=0.5, fnorm="std")
    # two-member groups normalise to +-0.7071: A = A^E + 0.5 A^S
    assert per_turn_values(adv, 0) == pytest.approx([1.5 * H, 1.5 * H, H], abs=1e-5)


def test_gigpo_per_turn_layout_equals_concat_layout():
    concat = ADVANTAGES["gigpo"](_concat(), fnorm="none")
    rows = ADVANTAGES["gigpo"](per_turn_batch(ACTIONS, STEP_REWARDS, RETURNS, STATES, GROUPS), fnorm="none")
    for b in range(4):
        assert rows[3 * b:3 * b + 3, 0].tolist() == pytest.approx(per_turn_values(concat, b), abs=1e-6)


def test_gigpo_on_single_turn_batch_is_one_plus_omega_grpo():
    b = _single_turn([1.0, 0.0, 0.0, 1.0], [0, 0, 1, 1])
    assert torch.allclose(ADVANTAGES["gigpo"](b, omega=1.0), 2 * grpo(b), atol=1e-5)


def test_gigpo_empty_state_keys_after_turn_zero_form_no_anchor_group():
    states = [["", "", ""]] * 4
    adv = ADVANTAGES["gigpo"](_concat(states=states), fnorm="none")
    # turn 0 groups on the reset (+-0.45125); later turns have no anchor: A = A^E = +-0.5
    assert per_turn_values(adv, 0) == pytest.approx([0.95125, 0.5, 0.5], abs=1e-6)


def test_outcome_without_step_rewards_lands_on_the_last_turn():
    adv = ADVANTAGES["gigpo"](_concat(step_rewards=None), fnorm="none")
    assert per_turn_values(adv, 0) == pytest.approx([0.95125, 0.975, 0.5], abs=1e-6)


def test_salt_shared_steps_average_the_trajectory_advantages():
    adv = ADVANTAGES["salt"](_concat())
    # group 0: turn 0 is the same action from "s0" in both episodes -> mean(+H, -H) = 0;
    # turn 1 actions differ ((7,8) vs (7,9)) -> own advantage; turn 2 states differ -> own
    assert per_turn_values(adv, 0) == pytest.approx([0.0, H, H], abs=1e-5)
    assert per_turn_values(adv, 1) == pytest.approx([0.0, -H, -H], abs=1e-5)
    # group 1: turn 2 is the same action (14, 15) from the same state "tC" -> shared, 0
    assert per_turn_values(adv, 2) == pytest.approx([0.0, H, 0.0], abs=1e-5)


def test_salt_without_state_keys_uses_the_action_history_tree():
    adv = ADVANTAGES["salt"](_concat(states=[["", "", ""]] * 4))
    # group 1 turn 2: same action but different histories -> separate nodes, own advantage
    assert per_turn_values(adv, 2) == pytest.approx([0.0, H, H], abs=1e-5)


def test_eapo_discounts_the_final_reward_to_each_round():
    adv = ADVANTAGES["eapo"](_concat(), gamma=0.5, scale_by_std=False)
    # episode 0: r = (0.25, 0.5, 1), episode 1: (0, 0, 0); group mean 1.75 / 6 = 0.291667
    assert per_turn_values(adv, 0) == pytest.approx([-0.041667, 0.208333, 0.708333], abs=1e-5)
    assert per_turn_values(adv, 1) == pytest.approx([-0.291667] * 3, abs=1e-5)


@pytest.mark.parametrize("name", ["flow_grpo", "gigpo", "salt", "eapo"])
def test_invariants_masked_zero_and_equal_returns_zero(name):
    # EAPO is the exception by design: equal final rewards still rank the rounds (later > earlier),
    # so only all-zero rewards give 0 there
    equal = 0.0 if name == "eapo" else 1.0
    adv = ADVANTAGES[name](_concat(returns=[equal] * 4, step_rewards=[[0.0, 0.0, equal]] * 4))
    assert torch.allclose(adv, torch.zeros_like(adv), atol=1e-6)
    adv = ADVANTAGES[name](_concat())
    assert torch.all(adv[_concat().loss_mask == 0] == 0)
    assert "turns" in ADVANTAGES.get(name).needs


@pytest.mark.parametrize("name", ["flow_grpo", "salt", "eapo"])
def test_single_turn_batches_reduce_to_grpo(name):
    b = _single_turn([1.0, 0.0, 0.0, 0.5, 0.25, 1.0], [0, 0, 0, 1, 1, 1])
    assert torch.allclose(ADVANTAGES[name](b), grpo(b), atol=1e-5)


def test_per_turn_batch_without_episode_ids_is_a_clear_error():
    b = per_turn_batch(ACTIONS, STEP_REWARDS, RETURNS, STATES, GROUPS)
    del b.metadata["episode_id"]
    with pytest.raises(ValueError, match="episode_id"):
        ADVANTAGES["gigpo"](b)


def test_stratified_grpo_strata_by_tool_call_count():
    # the existing estimator's stratum_key option reads the multi-turn rollout's metadata["tool_calls"]
    b = _single_turn([1.0, 0.0, 1.0, 0.0], [0, 0, 0, 0])
    b.metadata["tool_calls"] = [0, 0, 2, 2]
    adv = ADVANTAGES["stratified_grpo"](b, stratum_key="tool_calls", alpha=1.0)
    # each stratum {1, 0}: population std 0.5 -> +-1
    assert adv[:, 0].tolist() == pytest.approx([1.0, -1.0, 1.0, -1.0], abs=1e-4)
