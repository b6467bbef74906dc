"""Step-level advantage estimators (algorithms/advantages_process.py), against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from helpers import make_batch
from postrl.algorithms import ADVANTAGES
from postrl.algorithms.advantages_process import prime, pure_min

ENDS = [[1, 3, 5]] * 4  # every completion: 6 tokens, 3 steps of 2 tokens ending at tokens 1, 3, 5


def step_batch(rewards, steps, token_rewards=None):
    """2 groups of 2 completions (A, B | C, D), 6 tokens each."""
    b = make_batch(rewards, [0, 0, 1, 1], lengths=[6] * 4, token_rewards=token_rewards)
    b.step_rewards = steps
    b.metadata["step_ends"] = [list(e) for e in ENDS]
    return b


def test_prime_hand_computed():
    b = step_batch([1.0, 0.0, 1.0, 1.0], [[0.9, 0.8, 0.7], [0.9, 0.2, 0.1], [0.5, 0.5, 0.5], [0.6, 0.6, 0.6]])
    # per-token process means m = sum / 6: A 2.4/6=0.4, B 1.2/6=0.2, C 1.5/6=0.25, D 1.8/6=0.3
    # leave-one-out baselines b: A 0.2, B 0.4, C 0.3, D 0.25; outcome RLOO: A 1, B -1, C 0, D 0
    # A: P - b = [-.2,.7,-.2,.6,-.2,.5] -> returns-to-go [1.2,1.4,.7,.9,.3,.5] -> +1
    # B: [-.4,.5,-.4,-.2,-.4,-.3] -> [-1.2,-.8,-1.3,-.9,-.7,-.3] -> -1
    # C: [-.3,.2,-.3,.2,-.3,.2] -> [-.3,0,-.2,.1,-.1,.2];  D: [-.25,.35,...] -> [.3,.55,.2,.45,.1,.35]
    expected = torch.tensor([[2.2, 2.4, 1.7, 1.9, 1.3, 1.5],
                             [-2.2, -1.8, -2.3, -1.9, -1.7, -1.3],
                             [-0.3, 0.0, -0.2, 0.1, -0.1, 0.2],
                             [0.3, 0.55, 0.2, 0.45, 0.1, 0.35]])
    assert torch.allclose(prime(b, whiten=False), expected, atol=1e-5)
    # whitened: the same numbers standardised over the 24 tokens
    w = prime(b)
    assert torch.allclose(w, (expected - expected.mean()) / (expected.std() + 1e-8), atol=1e-5)


def test_pure_min_hand_computed():
    b = step_batch([1.0, 0.0, 1.0, 1.0], [[0.5, 0.5, 0.5], [0.2, 0.2, 0.2], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    # softmin weights (temperature 1): equal steps -> 1/3 each, so PR' = A 1/6 x3 (sum .5), B .2/3 x3 (sum .2),
    # D 0; C: softmax([-1, 0, -1]) = [e^-1, 1, e^-1] / (1 + 2e^-1) = [.211942, .576117, .211942],
    # PR'_C = [.211942, 0, .211942] (sum .423884)
    # per-token baselines = others' sum / others' 6 tokens: A .2/6, B .5/6, C 0/6, D .423884/6 = .0706473
    # R at step ends = PR' - b * 2 tokens: A 1/6 - .0666667 = .1; B .0666667 - .1666667 = -.1;
    # C .211942, 0, .211942; D -.1412947; outcome RLOO at token 5: A +1, B -1, C 0, D 0
    expected = torch.tensor([[1.3, 1.3, 1.2, 1.2, 1.1, 1.1],
                             [-1.3, -1.3, -1.2, -1.2, -1.1, -1.1],
                             [0.423884, 0.423884, 0.211942, 0.211942, 0.211942, 0.211942],
                             [-0.4238841, -0.4238841, -0.2825894, -0.2825894, -0.1412947, -0.1412947]])
    assert torch.allclose(pure_min(b, temperature=1.0), expected, atol=1e-5)


def test_pure_min_weights_approach_the_min_as_temperature_falls():
    b = step_batch([0.0] * 4, [[0.9, 0.1, 0.8], [0.9, 0.1, 0.8], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]])
    b.group_ids = torch.tensor([0, 1, 2, 3])  # groups of one: no baseline, no outcome term
    a = pure_min(b, temperature=1e-3)
    assert a[0, 0].item() == pytest.approx(0.1, abs=1e-4)  # the return from the start is the worst step
    assert a[2, 0].item() == pytest.approx(0.5, abs=1e-4)


@pytest.mark.parametrize("estimator", ["prime", "pure_min"])
def test_zero_process_rewards_equal_rloo(estimator):
    kwargs = {"whiten": False} if estimator == "prime" else {}
    b = step_batch([1.0, 0.0, 0.5, 2.0], [[0.0] * 3] * 4)
    assert torch.allclose(ADVANTAGES[estimator](b, **kwargs), ADVANTAGES["rloo"](b), atol=1e-6)


@pytest.mark.parametrize("estimator", ["prime", "pure_min"])
def test_dense_token_rewards_enter_as_returns_to_go(estimator):
    kwargs = {"whiten": False} if estimator == "prime" else {}
    tr = [[0.0, 0.0, 0.0, 0.0, 0.0, -0.5]] * 4  # e.g. a KL penalty on the last token only
    with_kl = ADVANTAGES[estimator](step_batch([1.0, 0.0, 1.0, 1.0], [[0.0] * 3] * 4, token_rewards=tr), **kwargs)
    plain = ADVANTAGES[estimator](step_batch([1.0, 0.0, 1.0, 1.0], [[0.0] * 3] * 4), **kwargs)
    assert torch.allclose(with_kl - plain, torch.full((4, 6), -0.5))  # every token's return-to-go sees it


def test_masked_tokens_get_zero_and_missing_steps_are_an_error():
    b = step_batch([1.0, 0.0, 1.0, 1.0], [[0.3, 0.2, 0.1]] * 4)
    b.loss_mask[1, :2] = 0
    assert (prime(b)[1, :2] == 0).all() and (pure_min(b)[1, :2] == 0).all()
    b.step_rewards = None
    with pytest.raises(ValueError, match="needs step rewards"):
        prime(b)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        pure_min(step_batch([0.0] * 4, [[0.0]] * 4), temperature=0)
