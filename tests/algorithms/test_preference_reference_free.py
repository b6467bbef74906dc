"""SimPO, ORPO and CPO: hand-computed values, length invariance and no reference model."""

import math

import pytest
import torch

from postrl.algorithms.preference import dpo
from postrl.algorithms.preference_reference_free import _log1mexp, cpo, orpo, simpo
from postrl.algorithms.registries import PREFERENCE_LOSSES

from algorithms.pref_cases import close, pair, softplus


@pytest.mark.parametrize("name", ["simpo", "orpo", "cpo"])
def test_reference_free_losses_do_not_need_a_reference_model(name):
    assert "reference" not in PREFERENCE_LOSSES.get(name).needs
    out = PREFERENCE_LOSSES[name](pair([-2.0], [-6.0], chosen_len=[4.0], rejected_len=[3.0]))  # no ref_logps
    assert torch.isfinite(out.loss).all()


# ---------------------------------------------------------------------------------------- SimPO
def test_simpo_by_hand():
    inp = pair([-2.0], [-6.0], chosen_len=[4.0], rejected_len=[3.0])
    out = simpo(inp, beta=2.0, gamma=0.5)
    # r_w = 2 * -2/4 = -1, r_l = 2 * -6/3 = -4; sp(-(3 - 0.5)) = sp(-2.5) = 0.078890
    close(out.loss, [softplus(-2.5)])
    out.loss.sum().backward()
    s = 1 / (1 + math.exp(2.5))  # sigmoid(-2.5)
    close(inp.chosen_logps.grad, [-s * 2.0 / 4.0])  # -sigmoid(-z) * beta / |y_w|
    close(inp.rejected_logps.grad, [s * 2.0 / 3.0])


def test_simpo_is_invariant_to_a_per_token_shift_but_not_to_a_sequence_shift():
    c, r, lc, lr, shift = [-2.0, -7.0], [-6.0, -1.0], [4.0, 5.0], [3.0, 2.0], -0.3
    base = simpo(pair(c, r, chosen_len=lc, rejected_len=lr)).loss
    per_token = pair([x + shift * n for x, n in zip(c, lc)], [x + shift * n for x, n in zip(r, lr)],
                     chosen_len=lc, rejected_len=lr)
    close(simpo(per_token).loss, base.tolist())
    per_sequence = pair([x + shift for x in c], [x + shift for x in r], chosen_len=lc, rejected_len=lr)
    assert not torch.allclose(simpo(per_sequence).loss, base)  # |y_w| != |y_l|: beta c (1/|y_w| - 1/|y_l|)


def test_simpo_with_equal_average_likelihoods_is_the_margin_term():
    # r_w = r_l: -log sigmoid(-gamma) = log(1 + e^gamma) = sp(0.5) = 0.974077
    close(simpo(pair([-4.0], [-2.0], chosen_len=[4.0], rejected_len=[2.0]), gamma=0.5).loss, [softplus(0.5)])


# ----------------------------------------------------------------------------------------- ORPO
def test_orpo_by_hand():
    # average likelihoods P_w = 0.5 (3 tokens), P_l = 0.2 (2 tokens): odds 1 and 0.25
    inp = pair([3 * math.log(0.5)], [2 * math.log(0.2)], chosen_len=[3.0], rejected_len=[2.0])
    out = orpo(inp, beta=0.1)
    # NLL -log 0.5 = 0.693147; -log sigmoid(log 4) = log(1.25) = 0.223144; 0.693147 + 0.1 * 0.223144
    close(out.loss, [0.715462])
    close(out.metrics["orpo/log_odds_ratio"], math.log(4.0))


def test_orpo_with_equal_likelihoods_is_nll_plus_lambda_log_two():
    inp = pair([2 * math.log(0.3)], [4 * math.log(0.3)], chosen_len=[2.0], rejected_len=[4.0])
    close(orpo(inp, beta=0.2).loss, [-math.log(0.3) + 0.2 * math.log(2.0)])


def test_log1mexp_is_accurate_on_both_branches_and_finite_at_probability_one():
    x = torch.tensor([-1e-4, -0.5, -0.7, -5.0, -40.0], dtype=torch.float64)
    expected = [math.log(-math.expm1(v)) for v in x.tolist()]
    assert torch.allclose(_log1mexp(x), torch.tensor(expected, dtype=torch.float64), rtol=1e-10)
    # float32 near 0: log1p(-exp(x)) loses ~1e-2 to cancellation at x = -1e-5, log(-expm1(x)) does not
    near = _log1mexp(torch.tensor([-1e-5, -3e-5]))
    assert torch.allclose(near, torch.tensor([math.log(-math.expm1(-1e-5)), math.log(-math.expm1(-3e-5))]), atol=1e-4)
    inp = pair([0.0], [-3.0], chosen_len=[2.0], rejected_len=[2.0])  # probability 1: clamped, no inf / nan
    out = orpo(inp)
    out.loss.sum().backward()
    assert torch.isfinite(out.loss).all() and torch.isfinite(inp.chosen_logps.grad).all()


# ------------------------------------------------------------------------------------------ CPO
def test_cpo_by_hand():
    inp = pair([-2.0], [-5.0], chosen_len=[4.0], rejected_len=[3.0])
    out = cpo(inp, beta=0.1, alpha=1.0)
    # -log sigmoid(0.1 * (-2 + 5)) = sp(-0.3) = 0.554355; NLL = 2 / 4 = 0.5
    close(out.loss, [softplus(-0.3) + 0.5])
    out.loss.sum().backward()
    s = 1 / (1 + math.exp(0.3))  # sigmoid(-0.3)
    close(inp.chosen_logps.grad, [-0.1 * s - 1.0 / 4.0])


def test_cpo_without_nll_is_dpo_against_a_uniform_reference():
    c, r = [-2.0, -0.5, -7.0], [-5.0, -0.4, -6.0]
    zero = [0.0, 0.0, 0.0]
    close(cpo(pair(c, r), beta=0.3, alpha=0.0).loss, dpo(pair(c, r, zero, zero), beta=0.3).loss.tolist())
