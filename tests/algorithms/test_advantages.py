"""Advantage estimators against hand-computed values, plus their invariants."""

import math

import pytest
import torch
from helpers import make_batch

from postrl.algorithms import ADVANTAGES
from postrl.algorithms.advantages import group_stats


def test_grpo_advantages_of_1_0_0_1_in_one_group():
    # mean 0.5; unbiased std = sqrt((4 * 0.25) / 3) = 0.57735; A = +-0.5 / 0.57735 = +-0.866025
    adv = ADVANTAGES["grpo"](make_batch([1, 0, 0, 1], [0, 0, 0, 0]))
    expected = torch.tensor([0.866025, -0.866025, -0.866025, 0.866025])
    assert torch.allclose(adv[:, 0], expected, atol=1e-5)
    assert torch.allclose(adv, expected[:, None].expand(4, 3), atol=1e-5)  # broadcast to every token


def test_grpo_equal_rewards_and_singleton_groups_give_zero():
    adv = ADVANTAGES["grpo"](make_batch([1, 1, 0.3, 0.3, 0.7], [0, 0, 1, 1, 2]))
    assert torch.equal(adv, torch.zeros_like(adv))


def test_grpo_groups_are_independent_and_sum_to_zero():
    batch = make_batch([1, 0, 3, 1, 2, 0], [5, 5, 9, 9, 9, 9])
    adv = ADVANTAGES["grpo"](batch)[:, 0]
    assert torch.allclose(adv[:2], torch.tensor([0.707106, -0.707106]), atol=1e-5)  # std sqrt(0.5)
    assert abs(float(adv[2:].sum())) < 1e-5


def test_advantages_are_zero_on_masked_tokens():
    adv = ADVANTAGES["grpo"](make_batch([1, 0], [0, 0], lengths=[3, 1]))
    assert adv[1, 1:].abs().sum() == 0 and adv[1, 0] != 0


def test_dr_grpo_is_mean_centred_without_std():
    adv = ADVANTAGES["dr_grpo"](make_batch([1, 0, 0, 1], [0, 0, 0, 0]))[:, 0]
    assert torch.allclose(adv, torch.tensor([0.5, -0.5, -0.5, 0.5]))


def test_rloo_leave_one_out_baseline():
    # r=1: others [0,0,1] mean 1/3 -> 2/3;  r=0: others [1,0,1] mean 2/3 -> -2/3
    adv = ADVANTAGES["rloo"](make_batch([1, 0, 0, 1], [0, 0, 0, 0]))[:, 0]
    assert torch.allclose(adv, torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3]), atol=1e-6)


def test_rloo_identical_rewards_and_singletons_are_zero():
    adv = ADVANTAGES["rloo"](make_batch([0.5, 0.5, 0.5, 2.0], [0, 0, 0, 1]))
    assert torch.equal(adv, torch.zeros_like(adv))


def test_rloo_matches_loop_reference_on_random_groups():
    g = torch.Generator().manual_seed(0)
    rewards = torch.rand(12, generator=g).tolist()
    groups = [0] * 3 + [1] * 4 + [2] * 5
    adv = ADVANTAGES["rloo"](make_batch(rewards, groups))[:, 0]
    for i, (r, gi) in enumerate(zip(rewards, groups)):
        others = [rj for j, (rj, gj) in enumerate(zip(rewards, groups)) if gj == gi and j != i]
        assert math.isclose(float(adv[i]), r - sum(others) / len(others), abs_tol=1e-5)


def test_kl_penalty_in_token_rewards_enters_the_sequence_return():
    # returns: [1 - 0.3, 0 - 0.1] -> group mean 0.3, A = [0.4, -0.4]
    batch = make_batch([1, 0], [0, 0], lengths=[2, 2], token_rewards=[[-0.1, -0.2], [-0.05, -0.05]])
    assert torch.allclose(ADVANTAGES["dr_grpo"](batch)[:, 0], torch.tensor([0.4, -0.4]), atol=1e-6)


def test_reinforce_pp_whitens_token_returns_over_the_batch():
    # returns per valid token: seq0 (len 2, r=1): [1, 1]; seq1 (len 1, r=0): [0]
    # mean 2/3, unbiased std sqrt(1/3): A = [0.57735, 0.57735], [-1.154701]
    adv = ADVANTAGES["reinforce_pp"](make_batch([1, 0], [0, 1], lengths=[2, 1]))
    assert torch.allclose(adv[0], torch.tensor([0.57735, 0.57735]), atol=1e-5)
    assert math.isclose(float(adv[1, 0]), -1.154701, abs_tol=1e-5) and adv[1, 1] == 0


def test_reinforce_pp_discounted_returns_include_token_rewards():
    # seq0: r_t = [-0.1, -0.2 + 1] -> G = [0.7, 0.8]; seq1: r_t = [0 + 0.5] -> G = [0.5]
    batch = make_batch([1, 0.5], [0, 1], lengths=[2, 1], token_rewards=[[-0.1, -0.2], [0.0, 0.0]])
    adv = ADVANTAGES["reinforce_pp"](batch)
    G = torch.tensor([0.7, 0.8, 0.5])
    expected = (G - G.mean()) / G.std()
    assert torch.allclose(torch.cat([adv[0], adv[1, :1]]), expected, atol=1e-5)


def test_group_stats_matches_per_group_torch_std():
    v = torch.tensor([1.0, 2.0, 4.0, 3.0, 3.0])
    mean, std, count = group_stats(v, torch.tensor([0, 0, 0, 7, 7]))
    assert torch.allclose(mean, torch.tensor([7 / 3] * 3 + [3.0] * 2))
    assert torch.allclose(std[:3], v[:3].std().expand(3)) and torch.equal(std[3:], torch.zeros(2))
    assert count.tolist() == [3, 3, 3, 2, 2]


def test_advantage_without_rewards_is_a_clear_error():
    batch = make_batch([1, 0], [0, 0])
    batch.rewards = None
    with pytest.raises(ValueError, match="score the batch"):
        ADVANTAGES["grpo"](batch)
