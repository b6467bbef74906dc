"""Truncated importance-sampling weights between the behaviour and the old policy."""

import math

import pytest
import torch

from postrl.algorithms.importance import rollout_is_weights


def test_token_weights_are_the_ratio_capped_and_masked():
    old = torch.tensor([[math.log(0.5), math.log(0.9), 0.0]])
    behavior = torch.tensor([[math.log(0.25), math.log(0.3), 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    w, m = rollout_is_weights(old, behavior, mask, level="token", cap=2.0)
    # 0.5/0.25 = 2 (at the cap, not above it), 0.9/0.3 = 3 -> capped to 2, padding -> 0
    torch.testing.assert_close(w, torch.tensor([[2.0, 2.0, 0.0]]))
    assert float(m["rollout_is/truncated_frac"]) == pytest.approx(0.5)
    assert float(m["rollout_is/mean_weight"]) == pytest.approx(2.0)


def test_sequence_weight_is_the_capped_product_of_token_ratios():
    old = torch.log(torch.tensor([[0.5, 0.4], [0.9, 0.9]]))
    behavior = torch.log(torch.tensor([[0.5, 0.8], [0.3, 0.9]]))
    mask = torch.ones(2, 2)
    w, _ = rollout_is_weights(old, behavior, mask, level="sequence", cap=2.0)
    # row 0: 1 * 0.5 = 0.5 on every token; row 1: 3 * 1 = 3 -> capped to 2
    torch.testing.assert_close(w, torch.tensor([[0.5, 0.5], [2.0, 2.0]]))


def test_on_policy_weights_are_one_and_carry_no_gradient():
    logp = torch.randn(3, 4, requires_grad=True)
    w, m = rollout_is_weights(logp, logp.detach(), torch.ones(3, 4), level="token")
    assert torch.equal(w, torch.ones(3, 4)) and not w.requires_grad
    assert float(m["rollout_is/truncated_frac"]) == 0.0


def test_unknown_level_is_an_error():
    with pytest.raises(ValueError, match="'token' or 'sequence'"):
        rollout_is_weights(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), level="turn")
