"""IPO, hinge, cDPO, rDPO, NCA, APO and BCO: hand-computed values and their invariants.

Hand values use the two pairs of `pref_cases.TWO_PAIRS`: margins h = 2 and h = -1, log-ratios
(u_w, u_l) = (1, -1) and (-1, 0). sp(x) = log(1 + e^x); sp(-2) = 0.126928, sp(2) = 2.126928,
sp(1) = 1.313262, sp(-1) = 0.313262, sp(0) = log 2.
"""

import math

import pytest
import torch

from postrl.algorithms import preference  # noqa: F401  (registers dpo)
from postrl.algorithms.preference_pairwise import apo_down, apo_zero, bco, cdpo, hinge, ipo, nca, rdpo
from postrl.algorithms.registries import PREFERENCE_LOSSES

from algorithms.pref_cases import LOG2, at_reference, close, pair, sigmoid, softplus, two_pairs


# ---------------------------------------------------------------------------------------- IPO
def test_ipo_by_hand_with_gradient():
    inp = two_pairs()
    out = ipo(inp, beta=0.1)
    # target 1/(2 tau) = 5: (2 - 5)^2 = 9, (-1 - 5)^2 = 36
    close(out.loss, [9.0, 36.0])
    out.loss.sum().backward()
    # dl/dlog pi(y_w) = 2 (h - 5) = -6, -12; the rejected side gets the opposite sign
    close(inp.chosen_logps.grad, [-6.0, -12.0])
    close(inp.rejected_logps.grad, [6.0, 12.0])


def test_ipo_average_logps_divides_each_log_ratio_by_its_length():
    inp = pair([-1.0], [-3.0], [-2.0], [-2.0], chosen_len=[2.0], rejected_len=[4.0])
    # h = 1/2 - (-1/4) = 0.75; (0.75 - 5)^2 = 18.0625; the summed version is (2 - 5)^2 = 9
    close(ipo(inp, beta=0.1, average_logps=True).loss, [18.0625])
    close(ipo(inp, beta=0.1).loss, [9.0])


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_ipo_at_the_reference_is_one_over_four_tau_squared(tau):
    close(ipo(at_reference(), beta=tau).loss, [1.0 / (4 * tau**2)] * 3, tol=1e-4)  # 25 and 1


# -------------------------------------------------------------------------------------- hinge
def test_hinge_by_hand_is_zero_beyond_the_margin():
    inp = two_pairs()
    out = hinge(inp, beta=1.0)
    # beta h = 2 >= 1: max(0, 1 - 2) = 0; beta h = -1: max(0, 1 + 1) = 2
    close(out.loss, [0.0, 2.0])
    out.loss.sum().backward()
    close(inp.chosen_logps.grad, [0.0, -1.0])  # no gradient beyond the margin, -beta below it
    close(inp.rejected_logps.grad, [0.0, 1.0])
    close(hinge(two_pairs(), beta=0.1).loss, [0.8, 1.1])  # 1 - 0.2, 1 + 0.1


# ------------------------------------------------------------------------------ cDPO and rDPO
def test_cdpo_by_hand():
    # eps = 0.1, beta = 1: 0.9 sp(-2) + 0.1 sp(2) = 0.114235 + 0.212693; 0.9 sp(1) + 0.1 sp(-1)
    close(cdpo(two_pairs(), beta=1.0, label_smoothing=0.1).loss, [0.326928, 1.213262])


def test_cdpo_without_label_smoothing_is_dpo():
    inp = pair([-1.3, -0.2, -4.0], [-2.0, -0.1, -3.5], [-1.0, -0.5, -3.0], [-2.2, -0.4, -3.9])
    close(cdpo(inp, beta=0.3, label_smoothing=0.0).loss, PREFERENCE_LOSSES["dpo"](inp, beta=0.3).loss.tolist())


def test_cdpo_is_minimal_at_the_finite_margin_log_odds_of_the_labels():
    eps, beta = 0.2, 0.5
    h = math.log((1 - eps) / eps) / beta  # beta h* = log(0.8 / 0.2) = log 4
    inp = pair([h], [0.0], [0.0], [0.0])
    cdpo(inp, beta=beta, label_smoothing=eps).loss.sum().backward()
    assert abs(float(inp.chosen_logps.grad)) < 1e-6


def test_rdpo_by_hand():
    # (0.9 sp(-2) - 0.1 sp(2)) / 0.8 = (0.114235 - 0.212693) / 0.8; (0.9 sp(1) - 0.1 sp(-1)) / 0.8
    close(rdpo(two_pairs(), beta=1.0, label_smoothing=0.1).loss, [-0.123072, 1.438262])


def test_rdpo_is_unbiased_for_the_dpo_loss_under_label_flips():
    # (1 - eps) l(h) + eps l(-h) = DPO(h): swapping chosen and rejected flips the label
    eps, beta = 0.3, 0.7
    c, r, cr, rr = [-1.0, -2.5], [-3.0, -0.5], [-1.5, -2.0], [-2.0, -1.0]
    clean = PREFERENCE_LOSSES["dpo"](pair(c, r, cr, rr), beta=beta).loss
    mix = (1 - eps) * rdpo(pair(c, r, cr, rr), beta=beta, label_smoothing=eps).loss \
        + eps * rdpo(pair(r, c, rr, cr), beta=beta, label_smoothing=eps).loss
    close(mix, clean.tolist())
    close(rdpo(pair(c, r, cr, rr), beta=beta, label_smoothing=0.0).loss, clean.tolist())


@pytest.mark.parametrize("fn,eps", [(cdpo, 0.6), (rdpo, 0.5)])
def test_label_smoothing_out_of_range_is_an_error(fn, eps):
    with pytest.raises(ValueError, match="label_smoothing"):
        fn(two_pairs(), label_smoothing=eps)


# ---------------------------------------------------------------------------------------- NCA
def test_nca_by_hand():
    # beta = 1, (r_w, r_l) = (1, -1): sp(-1) + sp(1)/2 + sp(-1)/2 = 0.313262 + 0.656631 + 0.156631
    #           (r_w, r_l) = (-1, 0): sp(1) + sp(-1)/2 + sp(0)/2 = 1.313262 + 0.156631 + 0.346574
    close(nca(two_pairs(), beta=1.0).loss, [1.126523, 1.816466])


def test_nca_pushes_the_chosen_likelihood_up_to_its_absolute_optimum():
    # d/dr_w [sp(-r_w) + sp(r_w)/2] = -sigmoid(-r_w) + sigmoid(r_w)/2 = 0 at r_w = log 2
    inp = pair([math.log(2.0)], [-1.0], [0.0], [0.0])
    nca(inp, beta=1.0).loss.sum().backward()
    assert abs(float(inp.chosen_logps.grad)) < 1e-6
    inp = pair([-1.0], [-1.0], [-1.0], [-1.0])
    nca(inp, beta=1.0).loss.sum().backward()
    assert float(inp.chosen_logps.grad) < 0  # at the reference the chosen likelihood still goes up


# ---------------------------------------------------------------------------------------- APO
def test_apo_zero_by_hand():
    # (1 - sigmoid(r_w)) + sigmoid(r_l): 2 (1 - sigmoid(1)) = 0.537883; (1 - sigmoid(-1)) + 1/2 = 1.231059
    close(apo_zero(two_pairs(), beta=1.0).loss, [0.537883, 1.231059])


def test_apo_down_by_hand():
    # sigmoid(r_w) + 1 - sigmoid(r_w - r_l): sigmoid(1) + 1 - sigmoid(2) = 0.731059 + 0.119203;
    # sigmoid(-1) + 1 - sigmoid(-1) = 1
    close(apo_down(two_pairs(), beta=1.0).loss, [0.850261, 1.0])


def test_apo_zero_raises_chosen_and_lowers_rejected_apo_down_lowers_both():
    inp = at_reference(B=1)
    apo_zero(inp, beta=0.5).loss.sum().backward()
    # -beta sigmoid'(0) = -0.125 on the chosen, +0.125 on the rejected
    close(inp.chosen_logps.grad, [-0.125])
    close(inp.rejected_logps.grad, [0.125])
    inp = at_reference(B=1)
    apo_down(inp, beta=0.5).loss.sum().backward()
    # chosen: beta sigmoid'(0) - beta sigmoid'(0) = 0 at the reference (it goes down once r_l < r_w);
    # rejected: d/dr_l [1 - sigmoid(r_w - r_l)] = sigmoid'(0), times beta = +0.125: descent lowers it
    close(inp.chosen_logps.grad, [0.0])
    close(inp.rejected_logps.grad, [0.125])


# ---------------------------------------------------------------------------------------- BCO
def test_bco_by_hand_with_the_batch_mean_shift():
    inp = two_pairs()
    out = bco(inp, beta=1.0)
    # delta = mean(1, -1, -1, 0) = -0.25
    # ex 1: sp(-(1 + 0.25)) + sp(-1 + 0.25) = sp(-1.25) + sp(-0.75) = 0.251929 + 0.386871
    # ex 2: sp(-(-1 + 0.25)) + sp(0 + 0.25) = sp(0.75) + sp(0.25) = 1.136871 + 0.825939
    close(out.loss, [0.638800, 1.962810])
    close(out.metrics["bco/delta"], -0.25)
    out.loss.sum().backward()
    # delta is detached: d/dlog pi(y_w) = -sigmoid(-(r_w - delta)) only
    close(inp.chosen_logps.grad, [-sigmoid(-1.25), -sigmoid(0.75)])


def test_bco_with_a_fixed_delta():
    # delta = 0: sp(-1) + sp(-1) = 0.626523; sp(1) + sp(0) = 2.006409
    close(bco(two_pairs(), beta=1.0, delta=0.0).loss, [2 * softplus(-1), softplus(1) + LOG2])


# ------------------------------------------------------------------------ at the reference policy
AT_REFERENCE = [("dpo", {}, LOG2), ("ipo", {"beta": 0.1}, 25.0), ("hinge", {}, 1.0), ("cdpo", {}, LOG2),
                ("rdpo", {}, LOG2), ("nca", {}, 2 * LOG2), ("apo_zero", {}, 1.0), ("apo_down", {}, 1.0),
                ("bco", {}, 2 * LOG2)]


@pytest.mark.parametrize("name,kw,value", AT_REFERENCE)
def test_at_the_reference_each_loss_takes_its_zero_margin_value(name, kw, value):
    out = PREFERENCE_LOSSES[name](at_reference(seed=3), **kw)
    close(out.loss, [value] * 3, tol=1e-4)
