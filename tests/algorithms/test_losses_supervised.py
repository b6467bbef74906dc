"""NFT, PACS and Reg-GRPO: hand-computed values, on-policy gradients, invariants, edge cases."""

import math

import pytest
import torch

from postrl.algorithms import aggregate
from postrl.algorithms.losses_supervised import nft, pacs, reg_grpo

from algorithms.loss_cases import group_inputs as _inp


def _seq_total(loss, mask):
    """Sum over completions of the per-sequence loss (what seq_mean_token_mean averages)."""
    return aggregate(loss, mask, "seq_mean_token_mean") * loss.shape[0]


# ---------------------------------------------------------------------------------------- NFT
def test_nft_on_policy_gradient_is_minus_reward_minus_group_accuracy():
    # labels [1, 0, 0, 0]: r_q = 0.25, R = 1 everywhere, so both log terms are 0 (loss 0).
    # positive: d/dlogp (1 - r_q)(-log R) = -0.75
    # negative: (1 - r_q) * -(1/1) * d/dlogp (1 - r_q R)/(1 - r_q) = 0.75 * (0.25/0.75) = +0.25
    # i.e. -(r - r_q): Dr. GRPO's advantage with the opposite sign of a loss gradient
    inp = _inp([[-1.0], [-2.0], [-0.5], [-3.0]], rewards=[1, 0, 0, 0], groups=[0, 0, 0, 0])
    out = nft(inp)
    out.loss.sum().backward()
    assert torch.allclose(out.loss, torch.zeros(4, 1), atol=1e-7)
    assert torch.allclose(inp.logprobs.grad.flatten(), torch.tensor([-0.75, 0.25, 0.25, 0.25]), atol=1e-6)


def test_nft_off_policy_hand_values_and_negative_floor():
    # group [pos R=2, neg R=0.5, neg R=2], r_q = 1/3, weight 1 - r_q = 2/3
    ln2 = math.log(2.0)
    inp = _inp([[ln2], [-ln2], [ln2]], [[0.0], [0.0], [0.0]], rewards=[1, 0, 0], groups=[7, 7, 7])
    out = nft(inp)
    out.loss.sum().backward()
    # pos: (2/3)(-log 2);  neg R=.5: proxy (1 - 1/6)/(2/3) = 1.25 -> (2/3)(-log 1.25)
    # neg R=2: proxy (1 - 2/3)/(2/3) = 0.5, floored at eps = 1 in value -> loss 0
    expected = torch.tensor([[-(2 / 3) * ln2], [-(2 / 3) * math.log(1.25)], [0.0]])
    assert torch.allclose(out.loss, expected, atol=1e-6)
    # grads: pos -(2/3);  neg R=.5: (2/3)(-1/1.25)(-(1/3)(.5)/(2/3)) = 2/15
    # neg R=2: straight-through, value 1: (2/3)(-1)(-(1/3)(2)/(2/3)) = 2/3
    assert torch.allclose(inp.logprobs.grad.flatten(), torch.tensor([-2 / 3, 2 / 15, 2 / 3]), atol=1e-6)


def test_nft_groups_without_contrast_give_zero_and_neg_weight_zero_is_rft():
    inp = _inp([[-1.0], [-2.0], [-1.0]], [[-1.2], [-1.5], [-0.7]], rewards=[1, 1, 0], groups=[0, 0, 1])
    out = nft(inp)  # group 0 all correct, group 1 a single completion
    out.loss.sum().backward()
    assert out.loss.abs().sum() == 0 and inp.logprobs.grad.abs().sum() == 0
    inp = _inp([[-1.0], [-2.0]], rewards=[1, 0], groups=[0, 0])
    nft(inp, neg_weight=0.0).loss.sum().backward()
    assert inp.logprobs.grad[1] == 0 and inp.logprobs.grad[0] < 0  # only the positive is trained


def test_nft_rejects_non_unit_rewards_and_missing_rewards():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        nft(_inp([[-1.0], [-1.0]], rewards=[2.0, 0.0], groups=[0, 0]))
    inp = _inp([[-1.0]], rewards=[1.0], groups=[0])
    inp.rewards = None
    with pytest.raises(ValueError, match="inputs.rewards"):
        nft(inp)


# --------------------------------------------------------------------------------------- PACS
def test_pacs_first_update_is_reinforce_with_rloo_advantages_times_beta():
    # anchor=old at the first update: r_hat = 0, psi = 0, sigma = 1/2; labels [1, 0, 0]
    # RLOO advantages: [1 - 0, 0 - 1/2, 0 - 1/2]; dL/dlogp = -beta * A on every token
    mask = [[1, 1], [1, 0], [1, 1]]
    inp = _inp([[-1.0, -2.0], [-0.5, 0.0], [-3.0, -1.0]], rewards=[1, 0, 0], groups=[0, 0, 0], mask=mask)
    out = pacs(inp, beta=2.0, anchor="old", balance_classes=False)
    _seq_total(out.loss, inp.mask).backward()
    assert torch.allclose(out.loss[0, 0], torch.tensor(math.log(2.0)))
    expected = torch.tensor([[-2.0, -2.0], [1.0, 0.0], [1.0, 1.0]])
    assert torch.allclose(inp.logprobs.grad, expected, atol=1e-6)


def test_pacs_hand_values_with_reference_and_class_balance():
    # beta 1, log pi - log pi_ref per completion [0.5, -0.5, -0.5] -> r_hat the same
    # psi_0 = 0.5 - (-0.5) = 1;  psi_1 = psi_2 = -0.5 - (0.5 - 0.5)/2 = -0.5
    # balanced weights for labels [1, 0, 0]: 3/(2*1) = 1.5 and 3/(2*2) = 0.75
    inp = _inp([[0.5], [-0.5], [-0.5]], rewards=[1, 0, 0], groups=[0, 0, 0], ref=[[0.0], [0.0], [0.0]])
    out = pacs(inp)
    sp = lambda x: math.log1p(math.exp(x))  # BCE(logit z, y=1) = softplus(-z); y=0: softplus(z)
    expected = torch.tensor([[1.5 * sp(-1.0)], [0.75 * sp(-0.5)], [0.75 * sp(-0.5)]])
    assert torch.allclose(out.loss, expected, atol=1e-6)


def test_pacs_ignores_a_common_shift_of_the_implicit_rewards_and_scales_with_beta():
    # psi is RLOO-centred: adding c to every r_hat of a group (here via the reference) changes nothing
    logp, ref = [[0.3], [-0.2], [0.1]], [[0.0], [0.0], [0.0]]
    base = pacs(_inp(logp, rewards=[1, 0, 1], groups=[0, 0, 0], ref=ref)).loss
    moved = pacs(_inp(logp, rewards=[1, 0, 1], groups=[0, 0, 0], ref=[[-5.0]] * 3)).loss
    assert torch.allclose(base, moved, atol=1e-6)
    # beta multiplies psi: beta = 2 on log-ratios d equals beta = 1 on 2 d
    doubled = pacs(_inp([[2 * x[0]] for x in logp], rewards=[1, 0, 1], groups=[0, 0, 0], ref=ref)).loss
    assert torch.allclose(pacs(_inp(logp, rewards=[1, 0, 1], groups=[0, 0, 0], ref=ref), beta=2.0).loss, doubled)


def test_pacs_seq_mean_token_mean_reproduces_the_mean_over_completions():
    mask = [[1, 1, 1], [1, 0, 0]]
    inp = _inp([[0.1, 0.2, 0.3], [-0.4, 9.0, 9.0]], rewards=[1, 0], groups=[3, 3], mask=mask,
               ref=[[0.0] * 3, [0.0] * 3])
    out = pacs(inp, balance_classes=False)
    # r_hat = [0.6, -0.4], psi = [1, -1]; both BCE = softplus(-1); padding values never enter
    assert torch.isclose(aggregate(out.loss, inp.mask, "seq_mean_token_mean"), torch.tensor(math.log1p(math.exp(-1))))


def test_pacs_singleton_group_and_missing_reference():
    inp = _inp([[-1.0], [-1.0], [-2.0]], rewards=[1, 0, 1], groups=[0, 0, 1], ref=[[0.0], [0.0], [0.0]])
    assert pacs(inp).loss[2].abs().sum() == 0
    with pytest.raises(ValueError, match="ref_logprobs"):
        pacs(_inp([[-1.0], [-1.0]], rewards=[1, 0], groups=[0, 0]))
    with pytest.raises(ValueError, match="anchor"):
        pacs(_inp([[-1.0], [-1.0]], rewards=[1, 0], groups=[0, 0]), anchor="behavior")


# ----------------------------------------------------------------------------------- Reg-GRPO
def test_reg_grpo_hand_values():
    # rewards [1, 0, 0]: mean 1/3, unbiased std sqrt(1/3) -> A = [2/sqrt3, -1/sqrt3, -1/sqrt3]
    # rho (sequence log-ratio sums) = [0.4 + 0.6, 0, -1] -> mean 0, unbiased std 1 -> [1, 0, -1]
    mask = [[1, 1], [1, 0], [1, 0]]
    inp = _inp([[0.4, 0.6], [0.0, 5.0], [-1.0, 5.0]], [[0.0, 0.0]] * 3, rewards=[1, 0, 0],
               groups=[0, 0, 0], mask=mask)
    out = reg_grpo(inp, eps=1e-7)
    s3 = math.sqrt(3.0)
    expected = [(2 / s3 - 1) ** 2, (1 / s3) ** 2, (-1 / s3 + 1) ** 2]
    assert torch.allclose(out.loss[:, 0], torch.tensor(expected), atol=1e-5)
    assert out.loss[1, 1] == 0 and out.loss[2, 1] == 0


def test_reg_grpo_is_invariant_to_affine_reward_changes_and_log_ratio_shifts():
    # (eps tiny: the std guard is the only thing that is not scale-free)
    logp, old = [[0.3], [-0.2], [0.5], [0.1]], [[0.0]] * 4
    base = reg_grpo(_inp(logp, old, rewards=[1, 0, 0.5, 0.2], groups=[0] * 4), eps=1e-8).loss
    affine = reg_grpo(_inp(logp, old, rewards=[8, 5, 6.5, 5.6], groups=[0] * 4), eps=1e-8).loss  # 3 r + 5
    shifted = reg_grpo(_inp([[x[0] + 2.0] for x in logp], old, rewards=[1, 0, 0.5, 0.2], groups=[0] * 4),
                       eps=1e-8).loss
    assert torch.allclose(base, affine, atol=1e-5) and torch.allclose(base, shifted, atol=1e-5)


def test_reg_grpo_first_update_gradient_is_finite_and_favours_the_better_completion():
    inp = _inp([[-1.0], [-1.0], [-1.0]], rewards=[1, 0, 0], groups=[0, 0, 0])  # on-policy: rho = 0
    out = reg_grpo(inp)
    out.loss.sum().backward()
    g = inp.logprobs.grad.flatten()
    assert torch.isfinite(g).all() and g[0] < 0 < g[1]
    single = _inp([[-1.0]], [[-2.0]], rewards=[1.0], groups=[0])
    assert reg_grpo(single).loss.abs().sum() == 0


# ------------------------------------------------------------------------------ shared checks
@pytest.mark.parametrize("fn", [nft, pacs, reg_grpo])
def test_masked_tokens_get_zero_loss_and_gradient(fn):
    mask = [[1, 1, 0], [1, 0, 0], [1, 1, 1]]
    inp = _inp([[-0.5, -1.0, 30.0], [-2.0, -40.0, 50.0], [-1.0, -0.3, -0.2]],
               [[-0.7, -0.9, -1.0], [-1.5, -1.0, -1.0], [-1.2, -0.5, -0.1]],
               rewards=[1, 0, 0], groups=[0, 0, 0], mask=mask, ref=[[-1.0] * 3] * 3, adv=[[1.0] * 3] * 3)
    out = fn(inp)
    out.loss.sum().backward()
    off = inp.mask == 0
    assert torch.isfinite(out.loss).all() and torch.isfinite(inp.logprobs.grad).all()
    assert (out.loss[off] == 0).all() and (inp.logprobs.grad[off] == 0).all()
    assert inp.logprobs.grad[~off].abs().sum() > 0
    assert all(v.dim() == 0 for v in out.metrics.values())
