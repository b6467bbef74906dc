"""KTO: hand values with the KL reference point, the weights, and no gradient through z0."""

import math

import pytest
import torch

from postrl.algorithms.preference import PrefInputs
from postrl.algorithms.preference_unpaired import kto

from algorithms.pref_cases import close, sigmoid, t


def _unpaired(logps, ref, labels, kl, kl_ref, kl_grad=False):
    return PrefInputs(t(logps, grad=True), t([1.0] * len(logps)), chosen_ref_logps=t(ref), labels=t(labels),
                      kl_logps=t(kl, grad=kl_grad), kl_ref_logps=t(kl_ref))


def test_kto_by_hand():
    # r = [-1 - -2, -3 - -1] = [1, -2]; z0 = mean([-1 - -1.5, -2 - -2.5]) = 0.5
    inp = _unpaired([-1.0, -3.0], [-2.0, -1.0], [1.0, 0.0], [-1.0, -2.0], [-1.5, -2.5], kl_grad=True)
    out = kto(inp, beta=1.0, desirable_weight=2.0, undesirable_weight=1.0)
    # desirable: 2 * (1 - sigmoid(1 - 0.5)) = 2 * 0.377541; undesirable: 1 - sigmoid(0.5 + 2) = 0.075858
    close(out.loss, [2 * (1 - sigmoid(0.5)), 1 - sigmoid(2.5)])
    close(out.metrics["kto/kl"], 0.5)
    out.loss.sum().backward()
    # desirable raised, undesirable lowered: -2 s'(0.5), +s'(2.5) with s' = sigmoid (1 - sigmoid)
    close(inp.chosen_logps.grad, [-2 * sigmoid(0.5) * (1 - sigmoid(0.5)), sigmoid(2.5) * (1 - sigmoid(2.5))])
    assert inp.kl_logps.grad is None  # z0 is detached: no gradient through the reference point


def test_kto_reference_point_is_clamped_at_zero():
    # the KL estimate mean([-1 - 0, -2 - -2]) = -0.5 < 0 -> z0 = 0: 1 - sigmoid(1) = 0.268941
    inp = _unpaired([-1.0, -1.0], [-2.0, -2.0], [1.0, 1.0], [-1.0, -2.0], [0.0, -2.0])
    out = kto(inp, beta=1.0)
    close(out.loss, [1 - sigmoid(1.0)] * 2)
    close(out.metrics["kto/kl"], 0.0)


@pytest.mark.parametrize("wd,wu", [(1.0, 1.0), (1.33, 0.7)])
def test_kto_at_the_reference_is_half_the_class_weight(wd, wu):
    inp = _unpaired([-1.0, -4.0, -0.3], [-1.0, -4.0, -0.3], [1.0, 0.0, 0.0], [-2.0, -1.0, -3.0], [-2.0, -1.0, -3.0])
    close(kto(inp, desirable_weight=wd, undesirable_weight=wu).loss, [wd / 2, wu / 2, wu / 2])


def test_kto_needs_labels_and_the_reference_point():
    inp = PrefInputs(t([-1.0]), t([1.0]), chosen_ref_logps=t([-1.0]), labels=t([1.0]))
    with pytest.raises(ValueError, match="kl_logps"):
        kto(inp)
    with pytest.raises(ValueError, match="labels"):
        kto(PrefInputs(t([-1.0]), t([1.0]), chosen_ref_logps=t([-1.0]), kl_logps=t([0.0]), kl_ref_logps=t([0.0])))
    assert math.isclose(kto(_unpaired([-1.0], [-1.0], [0.0], [0.0], [0.0])).loss.item(), 0.5)
