"""The preference-loss interface and DPO, by hand."""

import math

import pytest
import torch

from postrl.algorithms import PREFERENCE_LOSSES
from postrl.algorithms.preference import PrefInputs


def _pair(cw, cl, rw, rl):
    chosen = torch.tensor(cw, requires_grad=True)
    rejected = torch.tensor(rw, requires_grad=True)
    return PrefInputs(chosen, torch.tensor([3.0] * len(cw)), rejected, torch.tensor([3.0] * len(rw)),
                      chosen_ref_logps=torch.tensor(cl), rejected_ref_logps=torch.tensor(rl))


def test_dpo_by_hand():
    # h = 0.1 * ((-1 - -2) - (-3 - -2.5)) = 0.1 * (1 + 0.5) = 0.15; loss = -log sigmoid(0.15)
    out = PREFERENCE_LOSSES["dpo"](_pair([-1.0], [-2.0], [-3.0], [-2.5]), beta=0.1)
    assert math.isclose(float(out.loss[0]), -math.log(1 / (1 + math.exp(-0.15))), rel_tol=1e-6)
    assert math.isclose(float(out.metrics["rewards/margin"]), 0.15, rel_tol=1e-5)
    assert float(out.metrics["rewards/accuracy"]) == 1.0


def test_dpo_at_the_reference_is_log_two_with_gradient_minus_beta_half():
    inp = _pair([-1.0, -4.0], [-1.0, -4.0], [-2.0, -0.5], [-2.0, -0.5])
    out = PREFERENCE_LOSSES["dpo"](inp, beta=0.5)
    assert torch.allclose(out.loss, torch.full((2,), math.log(2.0)))
    out.loss.sum().backward()
    assert torch.allclose(inp.chosen_logps.grad, torch.full((2,), -0.25))  # -beta * sigmoid(0) = -beta/2
    assert torch.allclose(inp.rejected_logps.grad, torch.full((2,), 0.25))


def test_dpo_without_reference_log_probs_names_the_missing_input():
    inp = PrefInputs(torch.tensor([-1.0]), torch.tensor([1.0]), torch.tensor([-2.0]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="chosen_ref_logps"):
        PREFERENCE_LOSSES["dpo"](inp)
    assert PREFERENCE_LOSSES.get("dpo").needs == ("reference",)
