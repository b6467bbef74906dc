"""Online / self-play preference losses (XPO, Nash-MD, Nash-MP, INPO, SPPO): by hand, gradient signs,
invariants and missing-field errors (the registry contract: test_preference_contract.py)."""

import pytest
import torch

from postrl.algorithms import preference_online  # noqa: F401  (registers the entries)
from postrl.algorithms.preference import dpo
from postrl.algorithms.preference_online import inpo, nash_md, nash_mp, sppo, xpo
from postrl.algorithms.preference_pairwise import ipo
from postrl.algorithms.registries import PREFERENCE_LOSSES

from algorithms.pref_cases import LOG2, close, pair, sigmoid, softplus, t, two_pairs


# ------------------------------------------------------------------------------------------ XPO
def test_xpo_is_dpo_plus_alpha_times_the_reference_sample_logp():
    # two_pairs: margins h = 2, -1; beta = 0.5 -> beta h = 1, -0.5
    inp = two_pairs(ref_sample_logps=t([-2.0, -4.0], grad=True))
    out = xpo(inp, beta=0.5, alpha=0.1)
    # sp(-1) = 0.313262 - 0.2 = 0.113262;  sp(0.5) = 0.974077 - 0.4 = 0.574077
    close(out.loss, [softplus(-1.0) - 0.2, softplus(0.5) - 0.4])
    out.loss.sum().backward()
    close(inp.ref_sample_logps.grad, [0.1, 0.1])  # +alpha: gradient descent LOWERS log pi(y~), exploration
    close(inp.chosen_logps.grad, [-0.5 * sigmoid(-1.0), -0.5 * sigmoid(0.5)])  # the DPO part raises y_w


def test_xpo_with_alpha_zero_is_dpo_and_at_the_reference_is_log2_plus_the_bonus():
    inp = two_pairs(ref_sample_logps=t([-2.0, -4.0]))
    close(xpo(inp, beta=0.3, alpha=0.0).loss, dpo(inp, beta=0.3).loss.tolist())
    at_ref = pair([-1.0, -2.0], [-3.0, -1.0], [-1.0, -2.0], [-3.0, -1.0], ref_sample_logps=t([-5.0, -1.0]))
    close(xpo(at_ref, alpha=0.01).loss, [LOG2 - 0.05, LOG2 - 0.01])


def test_xpo_needs_the_reference_sample():
    with pytest.raises(ValueError, match="ref_sample_logps"):
        xpo(two_pairs())


# -------------------------------------------------------------------------------------- Nash-MD
def _own_sample(prev=None, win=(0.9, 0.2)):
    """chosen = the policy's own samples: log pi = -1, -2; log pi_ref = -2, -1 -> u = +1, -1."""
    extra = {} if prev is None else {"chosen_prev_logps": t(prev)}
    return pair([-1.0, -2.0], [-3.0, -1.0], [-2.0, -1.0], [-2.0, -1.0], chosen_win_prob=t(list(win)), **extra)


def test_nash_md_by_hand():
    inp = _own_sample()
    out = nash_md(inp, beta=0.1)
    # A = -(p - 1/2) + beta u = [-0.4 + 0.1, 0.3 - 0.1] = [-0.3, 0.2]: the value, and the gradient on log pi(y)
    close(out.loss, [-0.3, 0.2])
    out.loss.sum().backward()
    close(inp.chosen_logps.grad, [-0.3, 0.2])
    assert inp.rejected_logps.grad is None  # the opponent's sample is not trained on


def test_nash_md_gradient_signs_win_raises_loss_lowers_and_the_kl_pulls_back():
    inp = pair([-1.0, -1.0], [-1.0, -1.0], [-1.0, -1.0], [-1.0, -1.0], chosen_win_prob=t([0.8, 0.3]))
    nash_md(inp, beta=0.1).loss.sum().backward()
    assert inp.chosen_logps.grad[0] < 0 < inp.chosen_logps.grad[1]  # at pi = pi_ref only the preference acts
    drift = _own_sample(win=(0.5, 0.5))  # a tie: only the KL term, sign of u = +1, -1
    nash_md(drift, beta=0.1).loss.sum().backward()
    close(drift.chosen_logps.grad, [0.1, -0.1])


def test_nash_md_checks_its_inputs():
    with pytest.raises(ValueError, match="chosen_win_prob"):
        nash_md(pair([-1.0], [-2.0], [-1.0], [-2.0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        nash_md(_own_sample(win=(1.5, 0.2)))
    with pytest.raises(ValueError, match="mixture_coef"):
        nash_md(_own_sample(), mixture_coef=2.0)


# -------------------------------------------------------------------------------------- Nash-MP
def test_nash_mp_by_hand_adds_the_anchor_kl():
    inp = _own_sample(prev=[-1.5, -2.5])  # log pi - log pi_k = +0.5, +0.5
    out = nash_mp(inp, beta=0.1, eta=0.5)
    # A = nash_md's [-0.3, 0.2] + (beta / eta) * 0.5 = + 0.1 -> [-0.2, 0.3]
    close(out.loss, [-0.2, 0.3])
    out.loss.sum().backward()
    close(inp.chosen_logps.grad, [-0.2, 0.3])


def test_nash_mp_without_the_anchor_term_is_nash_md():
    at_anchor = _own_sample(prev=[-1.0, -2.0])  # pi_k = pi: the anchor KL sample is 0
    close(nash_mp(at_anchor, beta=0.2, eta=0.3).loss, nash_md(at_anchor, beta=0.2).loss.tolist())
    far = _own_sample(prev=[-9.0, 4.0])
    close(nash_mp(far, beta=0.2, eta=1e9).loss, nash_md(far, beta=0.2).loss.tolist())


def test_nash_mp_checks_its_inputs():
    with pytest.raises(ValueError, match="chosen_prev_logps"):
        nash_mp(_own_sample())
    with pytest.raises(ValueError, match="eta"):
        nash_mp(_own_sample(prev=[-1.0, -2.0]), eta=0.0)


# ----------------------------------------------------------------------------------------- INPO
def _inpo_pairs():
    # two_pairs: policy margins 2, -1; reference margins 0, 0; previous-iterate margins 1, 1
    return two_pairs(chosen_prev_logps=t([-1.5, -1.0]), rejected_prev_logps=t([-2.5, -2.0]))


def test_inpo_by_hand():
    inp = _inpo_pairs()
    out = inpo(inp, eta=0.25, tau=0.125)  # tau/eta = 1/2, target 1/(2 eta) = 2
    # h = margin - 1/2 * 0 - 1/2 * 1 = 1.5, -1.5 ; l = (h - 2)^2 = 0.25, 12.25
    close(out.loss, [0.25, 12.25])
    out.loss.sum().backward()
    close(inp.chosen_logps.grad, [-1.0, -7.0])  # 2 (h - 2): both margins are below target -> raised
    close(inp.rejected_logps.grad, [1.0, 7.0])


def test_inpo_invariants():
    inp = _inpo_pairs()
    # tau = eta anchors to pi_ref alone: IPO with beta = eta
    close(inpo(inp, eta=0.2, tau=0.2).loss, ipo(inp, beta=0.2).loss.tolist())
    # at pi = pi_t = pi_ref every log-ratio margin is 0: l = 1 / (4 eta^2)
    same = pair([-1.0, -2.0], [-3.0, -1.0], [-1.0, -2.0], [-3.0, -1.0],
                chosen_prev_logps=t([-1.0, -2.0]), rejected_prev_logps=t([-3.0, -1.0]))
    close(inpo(same).loss, [1 / (4 * 0.0075 ** 2)] * 2, tol=1e-2)


def test_inpo_checks_its_inputs():
    with pytest.raises(ValueError, match="chosen_prev_logps"):
        inpo(two_pairs())
    with pytest.raises(ValueError, match="tau"):
        inpo(_inpo_pairs(), eta=0.1, tau=0.2)


# ----------------------------------------------------------------------------------------- SPPO
def _sppo_pairs():
    # u_w = log pi(y_w) - log pi_t(y_w) = -1 - (-1.5) = 0.5, -2 - (-2.5) = 0.5
    # u_l = -3 - (-2) = -1, -1 - (-1.5) = 0.5 ; win rates 0.75 / 0.25 and 0.5 / 0.5
    return pair([-1.0, -2.0], [-3.0, -1.0], chosen_prev_logps=t([-1.5, -2.5]), rejected_prev_logps=t([-2.0, -1.5]),
                chosen_win_rate=t([0.75, 0.5]), rejected_win_rate=t([0.25, 0.5]))


def test_sppo_by_hand():
    inp = _sppo_pairs()
    out = sppo(inp, eta=2.0)
    # targets eta (P - 1/2): chosen 0.5, 0 ; rejected -0.5, 0
    # l = (0.5 - 0.5)^2 + (-1 + 0.5)^2 = 0.25 ;  (0.5 - 0)^2 + (0.5 - 0)^2 = 0.5
    close(out.loss, [0.25, 0.5])
    out.loss.sum().backward()
    close(inp.chosen_logps.grad, [0.0, 1.0])  # 2 (u - target)
    close(inp.rejected_logps.grad, [-1.0, 1.0])


def test_sppo_pushes_each_response_toward_its_own_target():
    # at pi = pi_t: a winner is raised, a loser lowered, a response with win rate 1/2 left alone
    inp = pair([-1.0, -2.0], [-3.0, -1.0], chosen_prev_logps=t([-1.0, -2.0]), rejected_prev_logps=t([-3.0, -1.0]),
               chosen_win_rate=t([0.9, 0.5]), rejected_win_rate=t([0.1, 0.5]))
    out = sppo(inp, eta=10.0)
    close(out.loss, [2 * 4.0 ** 2, 0.0])  # eta^2 ((P_w - 1/2)^2 + (P_l - 1/2)^2)
    out.loss.sum().backward()
    close(inp.chosen_logps.grad, [-8.0, 0.0])
    close(inp.rejected_logps.grad, [8.0, 0.0])


def test_sppo_reads_no_reference_and_checks_its_inputs():
    assert "reference" not in PREFERENCE_LOSSES.get("sppo").needs
    with pytest.raises(ValueError, match="chosen_win_rate"):
        sppo(pair([-1.0], [-2.0], chosen_prev_logps=t([-1.0]), rejected_prev_logps=t([-2.0])))
    bad = _sppo_pairs()
    bad.rejected_win_rate = t([-0.1, 0.5])
    with pytest.raises(ValueError, match="rejected_win_rate"):
        sppo(bad)
