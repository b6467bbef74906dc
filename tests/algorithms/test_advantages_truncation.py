"""Truncation-aware advantages: Skywork-OR1's group masks by hand, and gae vs t_ppo at the cut."""

import pytest
import torch
from helpers import make_batch

from postrl.algorithms import ADVANTAGES

grpo_truncation = ADVANTAGES["grpo_truncation"]


def _batch(rewards, groups, finish):
    b = make_batch(rewards, groups)
    b.metadata["finish_reason"] = finish
    return b


def test_adv_mask_before_leaves_truncated_rows_out_of_the_statistics():
    # finished rewards 1, 0, 1: mean 2/3, unbiased std sqrt(((1/3)^2 + (2/3)^2 + (1/3)^2) / 2) = 0.57735
    # A = 0.57735, -1.1547, (truncated) 0, 0.57735
    b = _batch([1.0, 0.0, 0.5, 1.0], [0, 0, 0, 0], ["stop", "stop", "length", "stop"])
    adv = grpo_truncation(b, mode="before")
    assert torch.allclose(adv[:, 0], torch.tensor([0.57735, -1.1547, 0.0, 0.57735]), atol=1e-4)
    assert adv[2].eq(0).all()


def test_adv_mask_after_keeps_them_in_the_statistics():
    # all four: mean 0.625, std sqrt((0.375^2 + 0.625^2 + 0.125^2 + 0.375^2) / 3) = 0.478714
    # A = 0.783349, -1.305582, (truncated) 0, 0.783349
    b = _batch([1.0, 0.0, 0.5, 1.0], [0, 0, 0, 0], ["stop", "stop", "length", "stop"])
    adv = grpo_truncation(b, mode="after")
    assert torch.allclose(adv[:, 0], torch.tensor([0.783349, -1.305582, 0.0, 0.783349]), atol=1e-4)


def test_a_configured_advantage_for_truncated_rows_and_lone_finished_rows():
    # group 0: only one finished row -> 0 (no baseline); its truncated rows get -1
    # group 1: finished 0 and 1 -> mean 0.5, std 0.70711 -> -0.70711, 0.70711
    b = _batch([1.0, 0.0, 0.0, 0.0, 1.0], [0, 0, 0, 1, 1], ["stop", "length", "length", "stop", "stop"])
    adv = grpo_truncation(b, truncated_advantage=-1.0)
    assert torch.allclose(adv[:, 0], torch.tensor([0.0, -1.0, -1.0, -0.70711, 0.70711]), atol=1e-4)
    assert torch.allclose(grpo_truncation(b, truncated_advantage=-1.0, scale_by_std=False)[:, 0],
                          torch.tensor([0.0, -1.0, -1.0, -0.5, 0.5]))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mode", ["before", "after"])
def test_without_truncation_it_is_grpo(seed, mode):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.rand(12, generator=g).tolist()
    b = _batch(rewards, [i // 4 for i in range(12)], ["stop"] * 12)
    assert torch.allclose(grpo_truncation(b, mode=mode), ADVANTAGES["grpo"](b))


def test_finished_rows_of_a_group_sum_to_zero_and_masked_tokens_stay_zero():
    b = make_batch([1.0, 0.0, 3.0, 0.2, 0.7], [0, 0, 0, 0, 0], lengths=[3, 2, 1, 3, 2])
    b.metadata["finish_reason"] = ["stop", "length", "stop", "stop", "stop"]
    adv = grpo_truncation(b, scale_by_std=False)
    finished = torch.tensor([0, 2, 3, 4])
    assert adv[finished, 0].sum().abs() < 1e-6
    assert adv[b.loss_mask == 0].eq(0).all()


def test_missing_finish_reasons_and_bad_mode_are_explained():
    with pytest.raises(ValueError, match="finish_reason"):
        grpo_truncation(make_batch([1.0, 0.0], [0, 0]))
    with pytest.raises(ValueError, match="'before' or 'after'"):
        grpo_truncation(_batch([1.0, 0.0], [0, 0], ["stop", "stop"]), mode="during")


def test_gae_ends_the_episode_at_the_cut_and_t_ppo_bootstraps_from_it():
    # one row cut at the length limit: reward 5, V = [0.2, 0.3], V at the cut (last_values) 0.7, gamma = lambda = 1
    #   gae (cut = terminal):   delta_1 = 5 + 0 - 0.3 = 4.7, delta_0 = 0 + 0.3 - 0.2 = 0.1 -> A = [4.8, 4.7]
    #   t_ppo (bootstrap 0.7):  delta_1 = 0 + 0.7 - 0.3 = 0.4, delta_0 = 0.1              -> A = [0.5, 0.4]
    def cut_row():
        b = make_batch([5.0], [0], lengths=[2])
        b.values, b.last_values = torch.tensor([[0.2, 0.3]]), torch.tensor([0.7])
        b.metadata["finish_reason"] = ["length"]
        return b

    gae = ADVANTAGES["gae"](cut_row(), gamma=1.0, lam=1.0, whiten=False)
    t_ppo = ADVANTAGES["t_ppo"](cut_row(), gamma=1.0, lam=1.0, whiten=False)
    assert torch.allclose(gae, torch.tensor([[4.8, 4.7]])) and torch.allclose(t_ppo, torch.tensor([[0.5, 0.4]]))
