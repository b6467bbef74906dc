"""P3O, CoPG and RiskPO: hand-computed values, on-policy gradients and reward-shift invariance."""

import math

import pytest
import torch

from postrl.algorithms import aggregate
from postrl.algorithms.losses_sequence import copg, p3o, riskpo

from algorithms.loss_cases import group_inputs as _inp


def _total_grad(fn, inp, **kw):
    """Backward through the sum over completions (seq_mean_token_mean times B)."""
    out = fn(inp, **kw)
    (aggregate(out.loss, inp.mask, "seq_mean_token_mean") * out.loss.shape[0]).backward()
    return out, inp.logprobs.grad.clone()


REWARDS = [1.0, 0.0, 0.5, 2.0, 3.0]
GROUPS = [0, 0, 0, 1, 1]
# RLOO advantages r_i - mean_{j != i} r_j: group 0 -> [1 - .25, 0 - .75, .5 - .5]; group 1 -> [-1, 1]
RLOO = torch.tensor([0.75, -0.75, 0.0, -1.0, 1.0])


def _logp():
    return [[-1.0, -2.0], [-0.5, -1.5], [-3.0, -0.2], [-1.0, -1.0], [-2.0, -0.7]]


# ---------------------------------------------------------------------------------------- P3O
def test_p3o_on_policy_gradient_is_reinforce_with_rloo_advantages():
    out, grad = _total_grad(p3o, _inp(_logp(), rewards=REWARDS, groups=GROUPS))
    assert torch.allclose(grad, -RLOO[:, None].expand(5, 2), atol=1e-6)
    assert out.loss.abs().sum() == 0  # x_ij = 0 on-policy


def test_p3o_hand_values_joint_clipping():
    # pair of one-token completions, rewards [1, 0]
    # unclipped: log rho = [0.1, 0]: x = 0.1, w = e^{0.1}; L = -(1)(e^{0.1})(0.1)/2 for both rows;
    #   d/dlogp_1 of L_12 + L_21 = -w, d/dlogp_2 = +w
    inp = _inp([[0.1], [0.0]], [[0.0], [0.0]], rewards=[1, 0], groups=[0, 0])
    out, grad = _total_grad(p3o, inp)
    w = math.exp(0.1)
    assert torch.allclose(out.loss, torch.full((2, 1), -w * 0.1 / 2), atol=1e-6)
    assert torch.allclose(grad, torch.tensor([[-w], [w]]), atol=1e-6)
    # clipped: log rho = [0.3, -0.1]: x = 0.4 > 0.2, w = e^{0.2}; L = -(e^{0.2})(0.2)/2, no gradient
    inp = _inp([[0.3], [-0.1]], [[0.0], [0.0]], rewards=[1, 0], groups=[0, 0])
    out, grad = _total_grad(p3o, inp)
    assert torch.allclose(out.loss, torch.full((2, 1), -math.exp(0.2) * 0.2 / 2), atol=1e-6)
    assert grad.abs().sum() == 0 and float(out.metrics["clip_frac"]) == 1.0


def test_p3o_importance_weight_is_capped():
    # log rho = [2, 2] (rho_1 rho_2 = e^4 > 10) but x = 0: a pure check of the cap on the gradient
    inp = _inp([[2.0], [2.0]], [[0.0], [0.0]], rewards=[1, 0], groups=[0, 0])
    _, grad = _total_grad(p3o, inp, is_cap=10.0)
    assert torch.allclose(grad, torch.tensor([[-10.0], [10.0]]))


@pytest.mark.parametrize("fn", [p3o, copg])
def test_pairwise_losses_are_invariant_to_a_reward_shift_within_a_group(fn):
    logp, old, ref = _logp(), [[-1.2, -1.8], [-0.4, -1.6], [-2.7, -0.4], [-1.1, -0.8], [-2.2, -0.9]], [[-1.0] * 2] * 5
    a_out, a_grad = _total_grad(fn, _inp(logp, old, rewards=REWARDS, groups=GROUPS, ref=ref))
    shifted = [r + (7.0 if g == 0 else -3.0) for r, g in zip(REWARDS, GROUPS)]
    b_out, b_grad = _total_grad(fn, _inp(logp, old, rewards=shifted, groups=GROUPS, ref=ref))
    assert torch.allclose(a_out.loss, b_out.loss, atol=1e-5) and torch.allclose(a_grad, b_grad, atol=1e-5)


# --------------------------------------------------------------------------------------- CoPG
@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_copg_at_the_reference_is_reinforce_with_rloo_advantages(beta):
    logp = _logp()
    _, grad = _total_grad(copg, _inp(logp, rewards=REWARDS, groups=GROUPS, ref=logp), beta=beta)
    assert torch.allclose(grad, -RLOO[:, None].expand(5, 2), atol=1e-5)


def test_copg_hand_values():
    # beta 0.5, rewards [1, 0], log pi/pi_ref = [0.5, -0.5]
    # R_beta = [1 - 0.25, 0 + 0.25] = [0.75, 0.25], diff 0.5 -> L = 0.25 / (4 * 0.5) = 0.125 per row
    # total = diff^2 / (2 beta): d/dlogp_1 = -diff = -0.5, d/dlogp_2 = +0.5
    # off-policy old log-probs do not enter (no importance sampling)
    inp = _inp([[0.5], [-0.5]], [[3.0], [-4.0]], rewards=[1, 0], groups=[0, 0], ref=[[0.0], [0.0]])
    out, grad = _total_grad(copg, inp, beta=0.5)
    assert torch.allclose(out.loss, torch.tensor([[0.125], [0.125]]))
    assert torch.allclose(grad, torch.tensor([[-0.5], [0.5]]))


def test_copg_needs_reference_and_positive_beta():
    with pytest.raises(ValueError, match="ref_logprobs"):
        copg(_inp([[-1.0], [-1.0]], rewards=[1, 0], groups=[0, 0]))
    with pytest.raises(ValueError, match="beta"):
        copg(_inp([[-1.0], [-1.0]], rewards=[1, 0], groups=[0, 0], ref=[[0.0], [0.0]]), beta=0.0)


@pytest.mark.parametrize("fn", [p3o, copg])
def test_pairwise_losses_give_zero_for_a_group_of_one(fn):
    out, grad = _total_grad(fn, _inp([[-1.0], [-2.0]], [[-0.5], [-1.0]], rewards=[1, 0], groups=[0, 1],
                                     ref=[[0.0], [0.0]]))
    assert out.loss.abs().sum() == 0 and grad.abs().sum() == 0


# ------------------------------------------------------------------------------------- RiskPO
def test_riskpo_hand_values_continuous_rewards():
    # rewards 0..4: q_0.2 = 0.8, q_0.9 = 3.6 (linear interpolation at positions 0.8 and 3.6)
    # A_RVaR = (clip(r, .8, 3.6) - 3.6) / 0.7 = [-4, -26/7, -16/7, -6/7, 0]
    # A_CVaR = -relu(0.8 - r) / 0.2 = [-4, 0, 0, 0, 0]
    # A = (1.5 A_CVaR + A_RVaR) / 2.5 = [-4, -52/35, -32/35, -12/35, 0]; on-policy l = -A
    inp = _inp([[-1.0]] * 5, rewards=[0, 1, 2, 3, 4], groups=[0] * 5)
    out = riskpo(inp, scale_by_std=False)
    out.loss.sum().backward()
    want = torch.tensor([4.0, 52 / 35, 32 / 35, 12 / 35, 0.0])
    assert torch.allclose(out.loss.flatten(), want, atol=1e-4)
    assert torch.allclose(inp.logprobs.grad.flatten(), want, atol=1e-4)


def test_riskpo_binary_rewards_scaled_by_group_std():
    # rewards [0, 0, 1, 1, 1]: q_0.2 = 0, q_0.9 = 1; A_RVaR = [-1/0.7, -1/0.7, 0, 0, 0], A_CVaR = 0
    # A = A_RVaR / 2.5 = -0.571429, divided by the unbiased std sqrt(0.3)
    inp = _inp([[-1.0]] * 5, rewards=[0, 0, 1, 1, 1], groups=[0] * 5)
    out = riskpo(inp)
    a = -1 / 0.7 / 2.5 / math.sqrt(0.3)
    assert torch.allclose(out.loss.flatten(), torch.tensor([-a, -a, 0, 0, 0]), atol=1e-4)


def test_riskpo_is_shift_invariant_and_zero_without_contrast():
    logp, old = [[-1.0]] * 4, [[-1.1], [-0.9], [-1.0], [-1.3]]
    a = riskpo(_inp(logp, old, rewards=[0.0, 1.0, 0.3, 0.7], groups=[0] * 4)).loss
    b = riskpo(_inp(logp, old, rewards=[5.0, 6.0, 5.3, 5.7], groups=[0] * 4)).loss
    assert torch.allclose(a, b, atol=1e-5)
    out = riskpo(_inp(logp, old, rewards=[1.0, 1.0, 1.0, 0.0], groups=[0, 0, 0, 1]))
    assert out.loss.abs().sum() == 0


# ------------------------------------------------------------------------------ shared checks
@pytest.mark.parametrize("fn", [p3o, copg, riskpo])
def test_masked_tokens_get_zero_loss_and_gradient(fn):
    mask = [[1, 1, 0], [1, 0, 0], [1, 1, 1]]
    inp = _inp([[-0.5, -1.0, 30.0], [-2.0, -40.0, 50.0], [-1.0, -0.3, -0.2]],
               [[-0.7, -0.9, -1.0], [-1.5, -1.0, -1.0], [-1.2, -0.5, -0.1]],
               rewards=[1, 0, 0.5], groups=[0, 0, 0], mask=mask, ref=[[-1.0] * 3] * 3, adv=[[1.0] * 3] * 3)
    out, grad = _total_grad(fn, inp)
    off = inp.mask == 0
    assert torch.isfinite(out.loss).all() and torch.isfinite(grad).all()
    assert (out.loss[off] == 0).all() and (grad[off] == 0).all() and grad[~off].abs().sum() > 0
    assert all(v.dim() == 0 for v in out.metrics.values())
