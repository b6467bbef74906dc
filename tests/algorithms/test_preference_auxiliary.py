"""DPO with an auxiliary input (rationales, token guidance, margins, online KL): by hand and invariants."""

import pytest
import torch

from postrl.algorithms.preference import PrefInputs, dpo
from postrl.algorithms.preference_auxiliary import dpo_rationale, hypo, modpo, tgdpo

from algorithms.pref_cases import LOG2, at_reference, close, pair, sigmoid, softplus, t, two_pairs


# -------------------------------------------------------------------------------- dpo_rationale
def test_dpo_rationale_adds_the_rationale_nll():
    inp = two_pairs(rationale_logps=t([-4.0, -1.0], grad=True))
    out = dpo_rationale(inp, beta=1.0, gamma=0.1)
    # DPO: sp(-2) = 0.126928, sp(1) = 1.313262; plus -gamma log pi(r) = 0.4, 0.1
    close(out.loss, [softplus(-2) + 0.4, softplus(1) + 0.1])
    out.loss.sum().backward()
    close(inp.rationale_logps.grad, [-0.1, -0.1])  # the rationale's likelihood is raised with weight gamma


def test_dpo_rationale_with_gamma_zero_is_dpo_and_needs_the_rationale():
    inp = two_pairs(rationale_logps=t([-4.0, -1.0]))
    close(dpo_rationale(inp, beta=0.3, gamma=0.0).loss, dpo(inp, beta=0.3).loss.tolist())
    with pytest.raises(ValueError, match="rationale_logps"):
        dpo_rationale(two_pairs())


# ---------------------------------------------------------------------------------------- TGDPO
def _tg_inputs(ctok, cref, cmask, rtok, rref, rmask):
    ctok, rtok = t([ctok], grad=True), t([rtok], grad=True)
    return PrefInputs(ctok.sum(-1).detach(), t([sum(cmask)]), rtok.sum(-1).detach(), t([sum(rmask)]),
                      chosen_token_logps=ctok, chosen_token_mask=t([cmask]), chosen_token_ref_logps=t([cref]),
                      rejected_token_logps=rtok, rejected_token_mask=t([rmask]), rejected_token_ref_logps=t([rref]))


def _tg_case():
    # chosen: u_w = [-0.5 - -1, -1 - -1, (pad)] = [0.5, 0, 0]; rejected: u_l = [0, -2 - -1, 0] = [0, -1, 0]
    return _tg_inputs([-0.5, -1.0, 99.0], [-1.0, -1.0, 0.0], [1.0, 1.0, 0.0],
                      [-1.0, -2.0, -1.0], [-1.0, -1.0, -1.0], [1.0, 1.0, 1.0])


def test_tgdpo_by_hand_weights_each_token_by_its_guidance_reward():
    inp = _tg_case()
    out = tgdpo(inp, beta=1.0, alpha=0.5)
    # token rewards r_t = beta u_t; chosen weight 1 + 0.5 * 0.5 = 1.25 on t0 -> 1.25 * 0.5 = 0.625
    # rejected weight 1 - 0.5 * (-1) = 1.5 on t1 -> 1.5 * (-1) = -1.5; h = 0.625 + 1.5 = 2.125
    close(out.loss, [softplus(-2.125)])  # 0.112822
    out.loss.sum().backward()
    g = sigmoid(-2.125)  # the weights are detached: grad = -sigmoid(-h) * weight_t
    close(inp.chosen_token_logps.grad, [[-1.25 * g, -1.0 * g, 0.0]])  # the padded token gets nothing
    close(inp.rejected_token_logps.grad, [[1.0 * g, 1.5 * g, 1.0 * g]])


def test_tgdpo_without_guidance_is_dpo_on_the_token_sums():
    inp = _tg_case()
    # alpha = 0: h = 0.5 - (-1) = 1.5 = the DPO margin of the token sums
    close(tgdpo(inp, beta=1.0, alpha=0.0).loss, [softplus(-1.5)])


def test_tgdpo_at_the_reference_is_log_two():
    inp = _tg_inputs([-0.5, -1.0, 0.0], [-0.5, -1.0, 0.0], [1.0, 1.0, 0.0],
                     [-2.0, -0.1, -3.0], [-2.0, -0.1, -3.0], [1.0, 1.0, 1.0])
    close(tgdpo(inp, beta=0.1, alpha=0.5).loss, [LOG2])


# ---------------------------------------------------------------------------------------- MODPO
def test_modpo_by_hand():
    inp = two_pairs(margins=t([1.0, -2.0]))
    # w = 0.5, beta = 1: logits = (h - 0.5 m) / 0.5: (2 - 0.5) / 0.5 = 3; (-1 + 1) / 0.5 = 0
    close(modpo(inp, beta=1.0, weight=0.5).loss, [softplus(-3.0), LOG2])  # 0.048587, log 2


def test_modpo_reduces_to_dpo():
    inp = two_pairs(margins=t([1.0, -2.0]))
    close(modpo(inp, beta=0.2, weight=1.0).loss, dpo(inp, beta=0.2).loss.tolist())  # w = 1 ignores m
    inp = two_pairs(margins=t([0.0, 0.0]))
    close(modpo(inp, beta=0.2, weight=0.5).loss, dpo(inp, beta=0.4).loss.tolist())  # m = 0: beta / w


def test_modpo_at_the_reference_is_the_margin_term_only():
    inp = at_reference(B=2)
    inp.margins = t([0.0, 3.0])
    # -log sigmoid(-(1 - w) m / w) with w = 0.75: m = 0 -> log 2; m = 3 -> sp(1)
    close(modpo(inp, weight=0.75).loss, [LOG2, softplus(1.0)])
    with pytest.raises(ValueError, match="weight"):
        modpo(inp, weight=0.0)


# ----------------------------------------------------------------------------------------- HyPO
def test_hypo_value_is_dpo_plus_lambda_kl_with_a_leave_one_out_reinforce_gradient():
    inp = pair([-1.0, -2.0, -1.0], [-3.0, -1.0, -1.0], [-2.0, -1.0, -1.0], [-2.0, -1.0, -1.0],
               kl_logps=t([-1.0, -2.0, -3.0], grad=True), kl_ref_logps=t([-2.0, -4.0, -9.0]))
    out = hypo(inp, beta=1.0, kl_coef=0.1)
    # k = [1, 2, 6]; DPO margins h = [2, -1, 0]
    close(out.loss, [softplus(-2) + 0.1, softplus(1) + 0.2, LOG2 + 0.6])
    close(out.metrics["hypo/kl"], 3.0)
    out.loss.sum().backward()
    # baselines b_i = mean of the others: [(2 + 6)/2, (1 + 6)/2, (1 + 2)/2] = [4, 3.5, 1.5]
    # grad log pi(y~_i) gets lambda (k_i - b_i) = 0.1 * [-3, -1.5, 4.5]
    close(inp.kl_logps.grad, [-0.3, -0.15, 0.45])


def test_hypo_single_example_has_no_baseline_and_is_log_two_at_the_reference():
    inp = pair([-1.0], [-3.0], [-1.0], [-3.0], kl_logps=t([-2.0], grad=True), kl_ref_logps=t([-2.5]))
    out = hypo(inp, beta=0.1, kl_coef=0.5)
    close(out.loss, [LOG2 + 0.25])  # k = 0.5
    out.loss.sum().backward()
    close(inp.kl_logps.grad, [0.25])  # lambda * k
    inp = pair([-1.0], [-3.0], [-1.0], [-3.0], kl_logps=t([-2.0]), kl_ref_logps=t([-2.0]))
    close(hypo(inp).loss, [LOG2])


def test_hypo_needs_the_online_samples():
    with pytest.raises(ValueError, match="kl_logps"):
        hypo(two_pairs())
