"""Policy losses: one test per clipping regime with the arithmetic spelled out."""

import math

import torch

from postrl.algorithms import POLICY_LOSSES
from postrl.algorithms.policy_losses import LossInputs


def _inputs(logp, old, adv):
    logp = torch.tensor([logp], requires_grad=True)
    return LossInputs(logp, torch.tensor([old]), torch.tensor([adv]), torch.ones(1, len(adv)))


def test_ppo_clip_regimes():
    e = math.exp
    # ratios e^0.5 = 1.6487 (above 1.2) and e^-0.5 = 0.6065 (below 0.8), with A = +1 and -1
    inp = _inputs([0.5, -0.5, 0.5, -0.5], [0.0] * 4, [1.0, 1.0, -1.0, -1.0])
    out = POLICY_LOSSES["ppo_clip"](inp, clip_low=0.2, clip_high=0.2)
    expected = [-1.2,          # A>0, ratio high: clipped at 1+eps -> -1.2
                -e(-0.5),      # A>0, ratio low: unclipped term is the min -> -0.6065
                e(0.5),        # A<0, ratio high: unclipped -1.6487 is the min -> +1.6487
                0.8]           # A<0, ratio low: clipped at 1-eps -> -(-0.8)
    assert torch.allclose(out.loss[0], torch.tensor(expected), atol=1e-5)
    assert math.isclose(float(out.metrics["clip_frac"]), 0.5)
    assert math.isclose(float(out.metrics["clip_frac_high"]), 0.25)
    assert math.isclose(float(out.metrics["clip_frac_low"]), 0.25)


def test_ppo_clip_higher_uses_separate_upper_bound():
    inp = _inputs([0.2], [0.0], [1.0])  # ratio e^0.2 = 1.2214
    assert math.isclose(float(POLICY_LOSSES["ppo_clip"](inp, clip_low=0.2, clip_high=0.2).loss.detach()), -1.2, rel_tol=1e-6)
    assert math.isclose(float(POLICY_LOSSES["ppo_clip"](inp, clip_low=0.2, clip_high=0.28).loss.detach()),
                        -math.exp(0.2), rel_tol=1e-6)


def test_clipped_tokens_get_no_gradient():
    inp = _inputs([0.5], [0.0], [1.0])
    POLICY_LOSSES["ppo_clip"](inp).loss.sum().backward()
    assert inp.logprobs.grad.abs().sum() == 0


def test_ppo_clip_gradient_equals_reinforce_on_policy():
    g = torch.Generator().manual_seed(0)
    logp = torch.randn(3, 5, generator=g)
    adv = torch.randn(3, 5, generator=g)
    grads = []
    for name in ("ppo_clip", "reinforce"):
        x = logp.clone().requires_grad_(True)
        inp = LossInputs(x, logp.clone(), adv, torch.ones(3, 5))
        POLICY_LOSSES[name](inp).loss.sum().backward()
        grads.append(x.grad)
    assert torch.allclose(grads[0], grads[1])
    assert torch.allclose(grads[1], -adv)


def test_reinforce_is_minus_advantage_times_logprob():
    out = POLICY_LOSSES["reinforce"](_inputs([-0.5, -2.0], [0.0, 0.0], [2.0, -1.0]))
    assert torch.allclose(out.loss, torch.tensor([[1.0, -2.0]]))
