"""ReMax and TempSamp advantages on hand-sized batches, arithmetic in comments."""

import math

import pytest
import torch
from helpers import make_batch

from postrl.algorithms import ADVANTAGES
from postrl.algorithms.advantages_loop import soft_reward


def _remax_batch(rewards, groups, greedy):
    batch = make_batch(rewards, groups)
    batch.metadata["greedy_reward"] = greedy
    return batch


def test_remax_subtracts_the_greedy_reward_of_each_rows_prompt():
    # prompt 0: samples 1.0, 0.0, greedy 0.5 -> +0.5, -0.5; prompt 1: sample 0.2, greedy 1.0 -> -0.8
    batch = _remax_batch([1.0, 0.0, 0.2], [0, 0, 1], greedy=[0.5, 0.5, 1.0])
    adv = ADVANTAGES["remax"](batch)
    assert torch.allclose(adv[:, 0], torch.tensor([0.5, -0.5, -0.8]))
    assert torch.allclose(adv, adv[:, :1] * batch.loss_mask)  # one value per sequence, on its tokens


def test_remax_works_with_groups_of_one_and_gives_zero_when_the_sample_matches_greedy():
    batch = _remax_batch([1.0, 0.0], [0, 1], greedy=[1.0, 0.0])
    assert torch.equal(ADVANTAGES["remax"](batch), torch.zeros(2, 3))


def test_remax_includes_dense_token_rewards_in_the_return():
    # a KL penalty in the reward: return = 1.0 + (-0.1 - 0.1 + 0.0) = 0.8; greedy 0.5 -> 0.3
    batch = make_batch([1.0], [0], token_rewards=[[-0.1, -0.1, 0.0]])
    batch.metadata["greedy_reward"] = [0.5]
    assert torch.allclose(ADVANTAGES["remax"](batch), torch.full((1, 3), 0.3))


def test_remax_without_greedy_rewards_says_what_fills_them():
    with pytest.raises(ValueError, match="greedy_reward"):
        ADVANTAGES["remax"](make_batch([1.0], [0]))


def test_remax_registry_entry_needs_greedy_rewards():
    assert ADVANTAGES.get("remax").needs == ("greedy_rewards",)


def test_soft_reward_compresses_above_tau_and_expands_below():
    # tau 0.5, alphas 0.5: f(1) = 0.5 + 0.5 ln(1 + 0.5/0.5) = 0.5 + 0.5 ln 2 = 0.84657
    #                      f(0) = 0.5 - 0.5 (e^(0.5/0.5) - 1) = 0.5 - 0.5 (e - 1) = -0.35914
    #                      f(0.5) = 0.5
    f = soft_reward(torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64), tau=0.5, alpha_high=0.5, alpha_low=0.5)
    assert torch.allclose(f, torch.tensor([0.5 + 0.5 * math.log(2), 0.5, 0.5 - 0.5 * (math.e - 1)],
                                          dtype=torch.float64))
    # slope 1 at tau from both sides, increasing and concave
    x = torch.linspace(-1, 2, 301, dtype=torch.float64)
    y = soft_reward(x, tau=0.5, alpha_high=0.5, alpha_low=0.5)
    dy = y.diff()
    assert (dy > 0).all() and (dy.diff() <= 1e-12).all()


def test_tempsamp_normalises_soft_rewards_within_the_group():
    # rewards 1.0 (injected reference), 0.5, 0.0 -> f = 0.84657, 0.5, -0.35914
    # mean = 0.32914, unbiased std = sqrt(((0.51743)^2 + (0.17086)^2 + (0.68829)^2) / 2) = 0.61789
    batch = make_batch([1.0, 0.5, 0.0], [0, 0, 0])
    f = torch.tensor([0.5 + 0.5 * math.log(2), 0.5, 0.5 - 0.5 * (math.e - 1)], dtype=torch.float64)
    expected = (f - f.mean()) / (f.std() + 1e-6)
    adv = ADVANTAGES["tempsamp"](batch)
    assert torch.allclose(adv[:, 0].double(), expected, atol=1e-6)
    # the reference's advantage shrinks relative to plain GRPO's: compression above tau
    grpo = ADVANTAGES["grpo"](batch)
    assert adv[0, 0] < grpo[0, 0] and adv[2, 0] < 0


def test_tempsamp_equal_rewards_and_singletons_give_zero_and_binary_rewards_equal_grpo():
    assert torch.equal(ADVANTAGES["tempsamp"](make_batch([0.3, 0.3, 0.7], [0, 0, 1])), torch.zeros(3, 3))
    binary = make_batch([1.0, 0.0, 0.0, 1.0, 1.0, 0.0], [0, 0, 0, 1, 1, 1])
    assert torch.allclose(ADVANTAGES["tempsamp"](binary), ADVANTAGES["grpo"](binary), atol=1e-5)


def test_tempsamp_rejects_non_positive_alphas():
    with pytest.raises(ValueError, match="alpha"):
        ADVANTAGES["tempsamp"](make_batch([1.0, 0.0], [0, 0]), alpha_high=0.0)


def test_loop_estimator_config_errors_name_the_setting_to_change():
    from postrl.config import ConfigError, RLConfig, resolve

    with pytest.raises(ConfigError, match="max_off_policy_steps is 1: set it to 0"):
        resolve(RLConfig, {"algorithm": {"preset": "remax"}, "distributed": {"max_off_policy_steps": 1}})
    with pytest.raises(ConfigError, match="inject_reference.*rollout.n >= 2"):
        resolve(RLConfig, {"algorithm": {"preset": "tempsamp"}, "rollout": {"n": 1}})
