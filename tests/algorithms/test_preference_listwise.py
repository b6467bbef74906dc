"""LiPO-lambda and CPL: hand values, LiPO at K = 2 against DPO, CPL against DPO, padding."""

import math

import torch

from postrl.algorithms.preference import PrefInputs, dpo
from postrl.algorithms.preference_listwise import cpl, lipo

from algorithms.pref_cases import close, pair, softplus, t

INV_LOG2_3 = 1 / math.log2(3)  # 0.630930


def _ranked(logps, ref, scores):
    logps = t(logps, grad=True)
    return PrefInputs(logps[:, 0].detach(), t([1.0] * len(scores)), list_logps=logps, list_ref_logps=t(ref),
                      list_lengths=torch.ones_like(logps), scores=t(scores))


# ----------------------------------------------------------------------------------------- LiPO
def test_lipo_by_hand():
    # s = beta * (logp - ref) = [1, 0, -1] (beta = 1) ranks the responses 1, 2, 3; psi = [0, 2, 1]
    # gains G = 2^psi - 1 = [0, 3, 1]; 1/log2(1 + tau) = [1, 0.630930, 0.5]
    # pair (1, 0): 3 * |0.630930 - 1| = 1.107211 times sp(-(0 - 1)) = sp(1)
    # pair (1, 2): 2 * |0.630930 - 0.5| = 0.261860 times sp(-(0 + 1)) = sp(-1)
    # pair (2, 0): 1 * |0.5 - 1| = 0.5 times sp(-(-1 - 1)) = sp(2)
    inp = _ranked([[-1.0, -2.0, -3.0]], [[-2.0, -2.0, -2.0]], [[0.0, 2.0, 1.0]])
    out = lipo(inp, beta=1.0)
    expected = 3 * (1 - INV_LOG2_3) * softplus(1) + 2 * (INV_LOG2_3 - 0.5) * softplus(-1) + 0.5 * softplus(2)
    close(out.loss, [expected])  # 1.454066 + 0.082031 + 1.063464 = 2.599552
    close(out.metrics["rewards/accuracy"], 1 / 3)  # only (1, 2) is ordered right: s_1 = 0 > s_2 = -1
    close(out.metrics["lipo/pairs"], 3.0)


def test_lipo_with_two_responses_is_a_constant_multiple_of_dpo():
    # K = 2, psi = (1, 0): Delta = |2 - 1| * |1 - 1/log2(3)| = 0.369070 whichever response ranks first
    c, r, cr, rr = [-1.0, -3.0, -2.0], [-3.0, -1.0, -2.5], [-2.0, -2.0, -1.0], [-2.5, -2.0, -3.0]
    inp = _ranked([[a, b] for a, b in zip(c, r)], [[a, b] for a, b in zip(cr, rr)], [[1.0, 0.0]] * 3)
    out = lipo(inp, beta=0.3)
    close(out.loss, ((1 - INV_LOG2_3) * dpo(pair(c, r, cr, rr), beta=0.3).loss).tolist())
    out.loss.sum().backward()
    d = pair(c, r, cr, rr)
    ((1 - INV_LOG2_3) * dpo(d, beta=0.3).loss).sum().backward()
    close(inp.list_logps.grad[:, 0], d.chosen_logps.grad.tolist())  # Delta carries no gradient
    close(inp.list_logps.grad[:, 1], d.rejected_logps.grad.tolist())


def test_lipo_ignores_absent_responses_and_ties():
    full = _ranked([[-1.0, -2.0]], [[-2.0, -1.5]], [[1.0, 0.0]])
    padded = _ranked([[-1.0, -2.0, float("-inf")]], [[-2.0, -1.5, float("-inf")]], [[1.0, 0.0, float("-inf")]])
    out = lipo(padded, beta=0.5)
    close(out.loss, lipo(full, beta=0.5).loss.tolist())
    out.loss.sum().backward()
    assert torch.isfinite(padded.list_logps.grad).all() and padded.list_logps.grad[0, 2] == 0
    tied = _ranked([[-1.0, -2.0, -3.0]], [[-2.0, -1.5, -1.0]], [[0.5, 0.5, 0.5]])
    close(lipo(tied).loss, [0.0])  # no ordered pair


def test_lipo_at_the_reference_is_weighted_log_two():
    # s = 0 for all: ranks by position, Delta(1, 2) = (2^1 - 1) * (1 - 0.630930); each pair costs log 2
    inp = _ranked([[-1.0, -4.0]], [[-1.0, -4.0]], [[1.0, 0.0]])
    close(lipo(inp).loss, [(1 - INV_LOG2_3) * math.log(2.0)])


# ------------------------------------------------------------------------------------------ CPL
def _tokens(ctok, cmask, rtok, rmask):
    ctok, rtok = t([ctok], grad=True), t([rtok], grad=True)
    return PrefInputs(ctok.sum(-1).detach(), t([sum(cmask)]), rtok.sum(-1).detach(), t([sum(rmask)]),
                      chosen_token_logps=ctok, chosen_token_mask=t([cmask]),
                      rejected_token_logps=rtok, rejected_token_mask=t([rmask]))


def test_cpl_by_hand_with_discount_and_bias():
    inp = _tokens([-1.0, -2.0, 0.0], [1.0, 1.0, 0.0], [-0.5, -3.0, -1.0], [1.0, 1.0, 0.0])
    out = cpl(inp, alpha=1.0, bias=0.5, gamma=0.5)
    # A_w = -1 + 0.5 * -2 = -2; A_l = -0.5 + 0.5 * -3 = -2 (third token masked)
    # l = -log sigmoid(A_w - 0.5 A_l) = -log sigmoid(-1) = sp(1) = 1.313262
    close(out.loss, [softplus(1.0)])
    out.loss.sum().backward()
    s = 1 / (1 + math.exp(-1.0))  # sigmoid(1) = sigmoid(-(A_w - 0.5 A_l))
    close(inp.chosen_token_logps.grad, [[-s, -0.5 * s, 0.0]])  # -sigmoid(-z) * alpha gamma^t
    close(inp.rejected_token_logps.grad, [[0.5 * s, 0.25 * s, 0.0]])  # +bias * sigmoid(-z) * alpha gamma^t


def test_cpl_without_bias_or_discount_is_dpo_against_a_uniform_reference():
    inp = _tokens([-1.0, -2.0, -0.5], [1.0, 1.0, 1.0], [-0.5, -3.0, -1.0], [1.0, 1.0, 0.0])
    # token sums -3.5 and -3.5: DPO with log pi_ref = 0 and beta = alpha
    expected = dpo(pair([-3.5], [-3.5], [0.0], [0.0]), beta=0.1).loss
    close(cpl(inp, alpha=0.1, bias=1.0, gamma=1.0).loss, expected.tolist())


def test_cpl_discount_starts_at_the_first_response_token():
    left_padded = _tokens([9.0, -1.0, -2.0], [0.0, 1.0, 1.0], [-0.5, -3.0, 7.0], [1.0, 1.0, 0.0])
    packed = _tokens([-1.0, -2.0, 0.0], [1.0, 1.0, 0.0], [-0.5, -3.0, 0.0], [1.0, 1.0, 0.0])
    close(cpl(left_padded, gamma=0.9).loss, cpl(packed, gamma=0.9).loss.tolist())
