"""PC-GRPO (samplers/pc_grpo.py): group accuracies and weights by hand, advantages scaled per group."""

import pytest
import torch
from helpers import make_batch

from postrl.samplers.pc_grpo import PCGRPO, group_accuracy, medium_weight


def test_group_accuracy_is_the_mean_clipped_credit_of_the_group():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.5, 2.0, -1.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2])
    # group 0: 1/4; group 1: 1; group 2: (0.5 + 1 (2 clipped) + 0 (-1 clipped)) / 3 = 0.5
    assert group_accuracy(rewards, groups, 1.0).tolist() == [0.25] * 4 + [1.0] * 2 + [0.5] * 3
    # max_reward 2: group 2 = (0.25 + 1 + 0) / 3
    assert group_accuracy(rewards, groups, 2.0)[6].item() == pytest.approx(1.25 / 3)


def test_medium_weight_peaks_at_half_and_is_symmetric():
    mu = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    assert medium_weight(mu).tolist() == [0.0, 0.75, 1.0, 0.75, 0.0]  # 4 mu (1 - mu)
    assert medium_weight(mu, floor=0.2).tolist() == pytest.approx([0.2, 0.8, 1.0, 0.8, 0.2])  # 0.2 + 0.8 * w
    grid = torch.linspace(0, 1, 101, dtype=torch.float64)
    w = medium_weight(grid, 0.1)
    assert torch.allclose(w, w.flip(0)) and int(w.argmax()) == 50 and float(w.min()) == pytest.approx(0.1)


def test_select_scales_each_groups_advantages_by_its_weight():
    # group 0: 1 of 4 solved (mu 0.25, w 0.75); group 1: 2 of 4 (w 1); group 2: all solved (w 0)
    batch = make_batch([1, 0, 0, 0, 1, 1, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    adv = torch.tensor([1.5, -0.5, -0.5, -0.5, 0.87, 0.87, -0.87, -0.87, 0.0, 0.0])[:, None] * batch.loss_mask
    out, a, metrics = PCGRPO(10, 0).select(batch, adv, progress=0.3)
    assert out is batch
    expected = torch.tensor([1.125, -0.375, -0.375, -0.375, 0.87, 0.87, -0.87, -0.87, 0.0, 0.0])
    assert torch.allclose(a[:, 0], expected)
    assert metrics["pc_grpo/weight_mean"] == pytest.approx((0.75 + 1.0 + 0.0) / 3)
    assert metrics["pc_grpo/accuracy_mean"] == pytest.approx((0.25 + 0.5 + 1.0) / 3)


def test_bad_hyper_parameters_are_refused_by_key():
    with pytest.raises(ValueError, match="sampler.kwargs.max_reward"):
        PCGRPO(10, 0, max_reward=0.0)
    with pytest.raises(ValueError, match="sampler.kwargs.floor"):
        PCGRPO(10, 0, floor=1.5)
