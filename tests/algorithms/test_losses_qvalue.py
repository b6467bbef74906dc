"""ROVER: the Q-regression loss on hand-sized logits, its stop-gradient target, and its inputs."""

import math

import pytest
import torch

from postrl.algorithms import POLICY_LOSSES
from postrl.algorithms.losses_qvalue import rover
from postrl.algorithms.policy_losses import LossInputs
from postrl.learner.logprobs import token_logprobs

# Two completion tokens, vocabulary of 3. Logits are log-probabilities, so log-softmax returns them.
#   current policy: s_0 -> [1/2, 1/4, 1/4] (token 0 sampled), s_1 -> [1/4, 1/2, 1/4] (token 1 sampled)
#   old policy:     uniform [1/3, 1/3, 1/3] at both states
CURRENT = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]]]))
OLD = torch.log(torch.full((1, 2, 3), 1 / 3))
TOKENS = torch.tensor([[0, 1]])


def _inputs(advantage: float, mask=(1.0, 1.0), logits=CURRENT):
    logits = logits.clone().requires_grad_(True)
    logp, _, vocab_mean = token_logprobs(logits, TOKENS, with_vocab_mean=True)
    old_logp, _, old_vocab_mean = token_logprobs(OLD, TOKENS, with_vocab_mean=True)
    mask = torch.tensor([mask])
    inp = LossInputs(logp, old_logp, torch.full((1, 2), advantage) * mask, mask, vocab_mean=vocab_mean,
                     old_vocab_mean=old_vocab_mean)
    return inp, logits


def test_vocab_mean_is_the_mean_log_probability_over_the_vocabulary():
    _, _, vm = token_logprobs(CURRENT, TOKENS, with_vocab_mean=True)
    # s_0: (ln 1/2 + 2 ln 1/4) / 3 = (-0.693147 - 2.772589) / 3 = -1.155245, and s_1 the same set of probabilities
    torch.testing.assert_close(vm, torch.full((1, 2), (math.log(0.5) + 2 * math.log(0.25)) / 3))
    torch.testing.assert_close(vm, torch.log_softmax(CURRENT, -1).mean(-1))


def test_rover_loss_matches_the_hand_computed_td_errors():
    inp, _ = _inputs(advantage=1.0)
    out = rover(inp)
    # Q(a_t|s_t) = ln(pi / pi_old): both tokens have pi = 1/2 against 1/3, so Q_0 = Q_1 = ln 1.5 = 0.405465
    q = math.log(1.5)
    # Q'_0 = mean_v ln(pi(v|s_1) / (1/3)) = (ln 0.75 + ln 1.5 + ln 0.75) / 3 = -0.056633; Q'_1 = 0 (last token)
    next_q = (2 * math.log(0.75) + math.log(1.5)) / 3
    # target_0 = 1 + Q'_0 = 0.943367, target_1 = 1; loss = (Q - target)^2 = 0.289338, 0.353472
    expected = torch.tensor([[(q - (1.0 + next_q)) ** 2, (q - 1.0) ** 2]])
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.metrics["next_q_mean"], torch.tensor(next_q / 2))


def test_rho_scales_q_and_next_q_and_next_q_coef_scales_the_bootstrap():
    inp, _ = _inputs(advantage=1.0)
    q, next_q = math.log(1.5), (2 * math.log(0.75) + math.log(1.5)) / 3
    # rho = 2: Q_0 = 0.810930, Q'_0 = -0.113266, target_0 = 0.886734, loss_0 = 0.005746
    out = rover(inp, rho=2.0)
    torch.testing.assert_close(out.loss[0, 0], torch.tensor((2 * q - (1.0 + 2 * next_q)) ** 2))
    # next_q_coef = 0: no bootstrap, every token regresses onto the centred reward alone
    out = rover(inp, next_q_coef=0.0)
    torch.testing.assert_close(out.loss, torch.full((1, 2), (q - 1.0) ** 2))


def test_the_target_is_stop_gradient_so_only_the_sampled_log_prob_moves():
    inp, logits = _inputs(advantage=1.0)
    rover(inp).loss.sum().backward()
    # d/dlogits of (Q_t - target_t)^2 = 2 (Q_t - target_t) d log pi(a_t|s_t)/dlogits: the vocabulary mean's
    # gradient (1/V - softmax on every logit) does not enter, so each row's gradient is (onehot - softmax) * 2 delta
    q, next_q = math.log(1.5), (2 * math.log(0.75) + math.log(1.5)) / 3
    deltas = [q - (1.0 + next_q), q - 1.0]
    for t, delta in enumerate(deltas):
        expected = 2 * delta * (torch.nn.functional.one_hot(TOKENS[0, t], 3).float() - CURRENT[0, t].exp())
        torch.testing.assert_close(logits.grad[0, t], expected)


def test_on_the_first_update_q_is_zero_and_the_gradient_is_reinforce():
    logits = CURRENT.clone().requires_grad_(True)
    logp, _, vm = token_logprobs(logits, TOKENS, with_vocab_mean=True)
    adv, mask = torch.tensor([[0.5, 0.5]]), torch.ones(1, 2)
    inp = LossInputs(logp, logp.detach(), adv, mask, vocab_mean=vm, old_vocab_mean=vm.detach())
    out = rover(inp)
    torch.testing.assert_close(out.loss, adv ** 2)  # Q = Q' = 0: (0 - r~)^2
    out.loss.sum().backward()
    reinforce = logits.grad.clone()
    logits.grad = None
    logp2, _, _ = token_logprobs(logits, TOKENS, with_vocab_mean=True)
    (-2 * adv * logp2).sum().backward()  # gradient of (Q - r~)^2 at Q = 0 is -2 r~ grad log pi
    torch.testing.assert_close(reinforce, logits.grad)


def test_masked_next_state_contributes_no_bootstrap():
    inp, _ = _inputs(advantage=1.0, mask=(1.0, 0.0))
    out = rover(inp)
    torch.testing.assert_close(out.loss[0, 0], torch.tensor((math.log(1.5) - 1.0) ** 2))  # Q'_0 = 0: s_1 not trained


def test_rover_declares_vocab_mean_and_refuses_inputs_without_it():
    assert "vocab_mean" in POLICY_LOSSES.get("rover").needs
    inp, _ = _inputs(advantage=1.0)
    inp.old_vocab_mean = None
    with pytest.raises(ValueError, match="vocab_mean"):
        rover(inp)
