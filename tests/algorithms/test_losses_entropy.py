"""Clip-Cov, KL-Cov, GTPO and EPO: hand-computed values and the reduction to the PPO surrogate."""

import math

import pytest
import torch

from postrl.algorithms import POLICY_LOSSES
from postrl.algorithms.losses_entropy import clip_cov, epo, gtpo, kl_cov
from postrl.algorithms.policy_losses import LossInputs, ppo_clip


def _inp(logp, old=None, adv=None, *, mask=None, entropy=None, tokens=None, groups=None, rewards=None,
         entropy_grad=False):
    logp = torch.tensor(logp, dtype=torch.float32, requires_grad=True)
    old = logp.detach().clone() if old is None else torch.tensor(old, dtype=torch.float32)
    adv = torch.zeros_like(old) if adv is None else torch.tensor(adv, dtype=torch.float32)
    mask = torch.ones_like(old) if mask is None else torch.tensor(mask, dtype=torch.float32)
    ent = None if entropy is None else torch.tensor(entropy, dtype=torch.float32, requires_grad=entropy_grad)
    return LossInputs(logp, old, adv, mask, entropy=ent,
                      token_ids=None if tokens is None else torch.tensor(tokens),
                      rewards=None if rewards is None else torch.tensor(rewards, dtype=torch.float32),
                      group_ids=None if groups is None else torch.tensor(groups))


def _grad(fn, inp, **kw):
    out = fn(inp, **kw)
    out.loss.sum().backward()
    return out, inp.logprobs.grad.clone()


def _random_inp(seed, b=3, t=5):
    g = torch.Generator().manual_seed(seed)
    logp = (-torch.rand(b, t, generator=g) * 3).tolist()
    old = (torch.tensor(logp) + 0.3 * torch.randn(b, t, generator=g)).tolist()
    adv = torch.randn(b, t, generator=g).tolist()
    return logp, old, adv


# ------------------------------------------------------------------------------------ Clip-Cov
def test_clip_cov_detaches_the_single_high_covariance_token():
    # log pi = [-1, -3, -3, -3] (mean -2.5), A = [2, 0, 0, 0] (mean 0.5)
    # Cov = [1.5 * 1.5, (-0.5)(-0.5) x3] = [2.25, 0.25, 0.25, 0.25]: only token 0 lies in (1, 5)
    # max(floor(2e-4 * 4), 1) = 1 token is detached: value kept, gradient 0 instead of -A = -2
    inp = _inp([[-1.0, -3.0, -3.0, -3.0]], adv=[[2.0, 0.0, 0.0, 0.0]])
    out, grad = _grad(clip_cov, inp)
    assert torch.allclose(out.loss, torch.tensor([[-2.0, 0.0, 0.0, 0.0]]))
    assert torch.equal(grad, torch.zeros(1, 4))
    _, ppo_grad = _grad(ppo_clip, _inp([[-1.0, -3.0, -3.0, -3.0]], adv=[[2.0, 0.0, 0.0, 0.0]]))
    assert ppo_grad[0, 0] == -2.0
    assert math.isclose(float(out.metrics["cov_detach_frac"]), 0.25)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clip_cov_with_zero_ratio_or_no_candidate_equals_ppo_clip(seed):
    logp, old, adv = _random_inp(seed)
    _, want = _grad(ppo_clip, _inp(logp, old, adv))
    _, got = _grad(clip_cov, _inp(logp, old, adv), clip_ratio=0.0)
    _, none = _grad(clip_cov, _inp(logp, old, adv), cov_lb=1e6, cov_ub=2e6)
    assert torch.allclose(got, want) and torch.allclose(none, want)


def test_clip_cov_choice_is_reproducible_and_depends_on_the_seed():
    # 40 tokens, every Cov = 2 (in range): log pi -1 / -3 with A 3 / -1 (means -2 and 1)
    logp = [[-1.0] * 20 + [-3.0] * 20]
    adv = [[3.0] * 20 + [-1.0] * 20]
    tokens = [list(range(40))]

    def detached(seed):
        _, g = _grad(clip_cov, _inp(logp, adv=adv, tokens=tokens), clip_ratio=0.1, seed=seed)
        return g == 0

    first, again, other = detached(0), detached(0), detached(1)
    assert int(first.sum()) == 4  # floor(0.1 * 40)
    assert torch.equal(first, again) and not torch.equal(first, other)


# ------------------------------------------------------------------------------------- KL-Cov
def test_kl_cov_hand_values():
    # Cov from the current log-probs as above -> token 0 is the top-1 (max(floor(2e-3 * 4), 1) = 1)
    # token 0: ratio e^{0.5}; l = -2 e^{0.5} + |0.5|; grad = -2 e^{0.5} + 1 (sign of log-ratio)
    inp = _inp([[-1.0, -3.0, -3.0, -3.0]], [[-1.5, -3.0, -3.0, -3.0]], [[2.0, 0.0, 0.0, 0.0]])
    out, grad = _grad(kl_cov, inp)
    e = math.exp(0.5)
    assert torch.allclose(out.loss, torch.tensor([[-2 * e + 0.5, 0.0, 0.0, 0.0]]), atol=1e-6)
    assert torch.allclose(grad, torch.tensor([[-2 * e + 1.0, 0.0, 0.0, 0.0]]), atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_kl_cov_with_top_k_zero_is_the_surrogate(seed):
    logp, old, adv = _random_inp(seed)
    out, grad = _grad(kl_cov, _inp(logp, old, adv), top_k_ratio=0.0)
    ratio = torch.exp(torch.tensor(logp) - torch.tensor(old))
    assert torch.allclose(out.loss, -ratio * torch.tensor(adv), atol=1e-6)  # eq. 14, unclipped
    _, want = _grad(ppo_clip, _inp(logp, old, adv))
    _, got = _grad(kl_cov, _inp(logp, old, adv), top_k_ratio=0.0, clip_low=0.2, clip_high=0.2)
    assert torch.allclose(got, want)


# --------------------------------------------------------------------------------------- GTPO
def test_gtpo_hand_values_conflict_tokens():
    # one group: tokens [5, 7, 9] (A = +1) and [5, 8, 9] (A = -1): positions 0 and 2 conflict
    # entropy 0.2 < 0.7 for both: A' = A - 0.1 * 0.2 -> 0.98 and -1.02; on-policy l = -w A'
    # positive row: w = [2, 1, 2]; negative row: w = [0, 1, 0] (negative update skipped)
    inp = _inp([[-1.0, -2.0, -0.5], [-1.0, -1.5, -0.5]], adv=[[1.0] * 3, [-1.0] * 3],
               entropy=[[0.2] * 3] * 2, tokens=[[5, 7, 9], [5, 8, 9]], groups=[4, 4])
    out, grad = _grad(gtpo, inp)
    expected = torch.tensor([[-1.96, -0.98, -1.96], [0.0, 1.02, 0.0]])
    assert torch.allclose(out.loss, expected, atol=1e-6) and torch.allclose(grad, expected, atol=1e-6)
    assert math.isclose(float(out.metrics["gtpo_conflict_frac"]), 4 / 6, rel_tol=1e-6)


def test_gtpo_conflicts_need_the_same_group_and_unmasked_tokens():
    # same tokens, opposite signs, but different groups -> no conflict
    inp = _inp([[-1.0, -1.0]] * 2, adv=[[1.0] * 2, [-1.0] * 2], entropy=[[0.1] * 2] * 2,
               tokens=[[3, 4], [3, 4]], groups=[0, 1])
    assert float(gtpo(inp).metrics["gtpo_conflict_frac"]) == 0
    # same group, but the negative row's matching token is masked -> no conflict there
    inp = _inp([[-1.0, -1.0]] * 2, adv=[[1.0] * 2, [-1.0] * 2], entropy=[[0.1] * 2] * 2,
               tokens=[[3, 4], [3, 4]], groups=[0, 0], mask=[[1, 1], [1, 0]])
    out = gtpo(inp, entropy_coef=0.0)
    assert torch.allclose(out.loss[0], torch.tensor([-2.0, -1.0]))  # only position 0 amplified


def test_gtpo_filters_high_entropy_completions():
    inp = _inp([[-1.0, -1.0]] * 2, adv=[[1.0] * 2, [1.0] * 2], entropy=[[0.5] * 2, [0.9] * 2],
               tokens=[[1, 2], [3, 4]], groups=[0, 0])
    out, grad = _grad(gtpo, inp, entropy_coef=0.0)
    assert grad[1].abs().sum() == 0 and grad[0].abs().sum() > 0  # mean entropy 0.9 > 0.7
    assert math.isclose(float(out.metrics["gtpo_filtered_frac"]), 0.5)


@pytest.mark.parametrize("seed", [0, 1])
def test_gtpo_without_conflicts_or_filtering_equals_ppo_clip(seed):
    logp, old, adv = _random_inp(seed)
    tokens = [[10 * i + t for t in range(5)] for i in range(3)]  # no shared token anywhere
    _, want = _grad(ppo_clip, _inp(logp, old, adv))
    _, got = _grad(gtpo, _inp(logp, old, adv, entropy=[[0.1] * 5] * 3, tokens=tokens, groups=[0, 0, 0]),
                   entropy_coef=0.0)
    assert torch.allclose(got, want)


def test_gtpo_needs_entropy_and_token_ids():
    with pytest.raises(ValueError, match="inputs.entropy"):
        gtpo(_inp([[-1.0]], tokens=[[1]], groups=[0]))
    with pytest.raises(ValueError, match="inputs.token_ids"):
        gtpo(_inp([[-1.0]], entropy=[[0.1]], groups=[0]))


# ---------------------------------------------------------------------------------------- EPO
def test_epo_hand_values_corridor_around_old_policy_entropy():
    # on-policy, log pi_old = -1 everywhere -> H_ref = 1, corridor [0.5, 1.5]
    # H = [0.3, 1.0, 2.0] -> outside = [0.2, 0, 0.5]; A = 1 -> ppo term -1
    # l = -1 - 0.1 (H - 1.0 * outside) = [-1.01, -1.1, -1.15]
    # dl/dH = -0.1 (1 - dP/dH): [-0.1 * 2, -0.1, 0]
    inp = _inp([[-1.0, -1.0, -1.0]], adv=[[1.0] * 3], entropy=[[0.3, 1.0, 2.0]], entropy_grad=True)
    out = epo(inp, entropy_coef=0.1, smooth_coef=1.0)
    out.loss.sum().backward()
    assert torch.allclose(out.loss, torch.tensor([[-1.01, -1.1, -1.15]]), atol=1e-6)
    assert torch.allclose(inp.entropy.grad, torch.tensor([[-0.2, -0.1, 0.0]]), atol=1e-6)
    assert math.isclose(float(out.metrics["epo_reference_entropy"]), 1.0)


def test_epo_fixed_reference_entropy_and_zero_coef_is_ppo_clip():
    inp = _inp([[-1.0, -1.0]], adv=[[1.0, 1.0]], entropy=[[0.3, 3.0]], entropy_grad=True)
    out = epo(inp, entropy_coef=0.1, smooth_coef=1.0, reference_entropy=2.0)  # corridor [1, 3]
    assert torch.allclose(out.loss, torch.tensor([[-1 - 0.1 * (0.3 - 0.7), -1 - 0.1 * 3.0]]), atol=1e-6)
    logp, old, adv = _random_inp(3)
    _, want = _grad(ppo_clip, _inp(logp, old, adv))
    _, got = _grad(epo, _inp(logp, old, adv, entropy=[[1.0] * 5] * 3, entropy_grad=True), entropy_coef=0.0)
    assert torch.allclose(got, want)


def test_epo_needs_entropy_with_gradient():
    with pytest.raises(ValueError, match="inputs.entropy"):
        epo(_inp([[-1.0]]))
    with pytest.raises(ValueError, match="entropy_grad"):
        epo(_inp([[-1.0]], entropy=[[0.5]]))
    assert "entropy_grad" in POLICY_LOSSES.get("epo").needs  # so the learner builds the entropy's graph


# ------------------------------------------------------------------------------ shared checks
@pytest.mark.parametrize("fn", [clip_cov, kl_cov, gtpo, epo])
def test_masked_tokens_get_zero_loss_and_gradient(fn):
    mask = [[1, 1, 0], [1, 0, 0]]
    inp = _inp([[-0.5, -1.0, 30.0], [-2.0, -40.0, 5.0]], [[-0.7, -0.9, -1.0], [-1.5, -1.0, -1.0]],
               [[1.0, -2.0, 3.0], [-1.0, 4.0, 5.0]], mask=mask, entropy=[[0.3, 0.4, 9.0], [0.2, 9.0, 9.0]],
               entropy_grad=True, tokens=[[1, 2, 3], [1, 5, 3]], groups=[0, 0], rewards=[1.0, 0.0])
    out, grad = _grad(fn, inp)
    off = inp.mask == 0
    assert torch.isfinite(out.loss).all() and torch.isfinite(grad).all()
    assert (out.loss[off] == 0).all() and (grad[off] == 0).all() and grad[~off].abs().sum() > 0
    assert all(v.dim() == 0 for v in out.metrics.values())
