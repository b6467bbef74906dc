"""Multi-turn EPO (algorithms/losses_entropy.epo with inputs.turn_ids), by hand."""

import pytest
import torch

from postrl.algorithms.losses_entropy import epo
from postrl.algorithms.policy_losses import LossInputs


def _inp(turn_ids):
    # one row: turn 0 = tokens 0, 1 (+ observation token 2, loss_mask 0), turn 1 = tokens 3, 4
    logp = torch.tensor([[-1.0, -1.0, -5.0, -2.0, -2.0]], requires_grad=True)
    ent = torch.tensor([[0.2, 0.4, 9.0, 1.0, 2.0]], requires_grad=True)
    return LossInputs(logp, logp.detach().clone(), torch.ones(1, 5), torch.tensor([[1.0, 1.0, 0.0, 1.0, 1.0]]),
                      entropy=ent, turn_ids=None if turn_ids is None else torch.tensor([turn_ids]))


def test_epo_per_turn_hand_computed():
    inp = _inp([0, 0, 0, 1, 1])
    out = epo(inp, entropy_coef=0.1, smooth_coef=1.0)
    # turn means of -log pi_old: 1, 2 -> H_ref = 1.5, corridor [0.75, 2.25]
    # H_0 = (0.2 + 0.4)/2 = 0.3 (P = 0.45), H_1 = 1.5 (P = 0); ppo term -1 (A = 1, on-policy)
    # l = -1 - 0.1 (0.3 - 0.45) = -0.985 on turn 0, -1 - 0.1 * 1.5 = -1.15 on turn 1, 0 on the observation
    assert torch.allclose(out.loss, torch.tensor([[-0.985, -0.985, 0.0, -1.15, -1.15]]), atol=1e-6)
    assert float(out.metrics["epo_reference_entropy"]) == pytest.approx(1.5)
    out.loss.sum().backward()
    # dl/dH_0 = -0.1 (1 + 1) per token, 2 tokens, dH_0/dH_t = 1/2 -> -0.2; turn 1: -0.1 * 2 / 2 = -0.1
    assert torch.allclose(inp.entropy.grad, torch.tensor([[-0.2, -0.2, 0.0, -0.1, -0.1]]), atol=1e-6)


def test_epo_without_turns_or_per_turn_false_is_token_wise():
    a = epo(_inp(None), entropy_coef=0.1, smooth_coef=1.0)
    b = epo(_inp([0, 0, 0, 1, 1]), entropy_coef=0.1, smooth_coef=1.0, per_turn=False)
    # token-wise: H_ref = (1 + 1 + 2 + 2)/4 = 1.5; token 0: H 0.2, P 0.55 -> -1 - 0.1 (0.2 - 0.55) = -0.965
    assert torch.allclose(a.loss, b.loss) and float(a.loss.detach()[0, 0]) == pytest.approx(-0.965, abs=1e-6)
