"""Critic-based estimators (gae, t_ppo) against hand-computed values, plus their limiting cases."""

import pytest
import torch
from helpers import make_batch

from postrl.algorithms import ADVANTAGES
from postrl.algorithms.advantages_value import masked_whiten


def _with_values(batch, values, last=None, finish=None):
    batch.values = torch.tensor(values, dtype=torch.float32) * batch.loss_mask
    batch.last_values = torch.tensor(last if last is not None else [0.0] * batch.size)
    if finish is not None:
        batch.metadata["finish_reason"] = finish
    return batch


def test_both_estimators_are_registered_as_needing_values():
    assert ADVANTAGES.get("gae").needs == ("values",) and ADVANTAGES.get("t_ppo").needs == ("values",)


def test_gae_on_one_sequence_by_hand():
    # r = [0, 0, 1] (outcome reward on the last token), V = [0.5, 0.2, 0.4], gamma 1, lambda 0.5
    # delta_2 = 1 + 0 - 0.4 = 0.6;  delta_1 = 0 + 0.4 - 0.2 = 0.2;  delta_0 = 0 + 0.2 - 0.5 = -0.3
    # A_2 = 0.6;  A_1 = 0.2 + 0.5 * 0.6 = 0.5;  A_0 = -0.3 + 0.5 * 0.5 = -0.05
    # R = A + V = [0.45, 0.7, 1.0]
    batch = _with_values(make_batch([1.0], [0]), [[0.5, 0.2, 0.4]])
    adv = ADVANTAGES["gae"](batch, gamma=1.0, lam=0.5, whiten=False)
    assert torch.allclose(adv, torch.tensor([[-0.05, 0.5, 0.6]]), atol=1e-6)
    assert torch.allclose(batch.returns, torch.tensor([[0.45, 0.7, 1.0]]), atol=1e-6)
    assert batch.value_mask is None  # the critic trains on every policy token


def test_gae_with_discount_token_rewards_and_a_shorter_row_by_hand():
    # row 1: length 2, outcome 0, token rewards (a KL penalty) [-0.1, -0.2], V = [0.3, 0.1], gamma 0.9, lambda 1
    # delta_1 = -0.2 + 0.9 * 0 - 0.1 = -0.3;  delta_0 = -0.1 + 0.9 * 0.1 - 0.3 = -0.31
    # A_1 = -0.3;  A_0 = -0.31 + 0.9 * -0.3 = -0.58  (= G_0 - V_0 = (-0.1 + 0.9 * -0.2) - 0.3)
    # row 0: length 3, outcome 2, V = 0: A_t = 0.9^(2-t) * 2 = [1.62, 1.8, 2.0]
    batch = _with_values(make_batch([2.0, 0.0], [0, 0], lengths=[3, 2], token_rewards=[[0, 0, 0], [-0.1, -0.2, 0]]),
                         [[0, 0, 0], [0.3, 0.1, 0]])
    adv = ADVANTAGES["gae"](batch, gamma=0.9, lam=1.0, whiten=False)
    assert torch.allclose(adv, torch.tensor([[1.62, 1.8, 2.0], [-0.58, -0.3, 0.0]]), atol=1e-6)
    assert torch.allclose(batch.returns, torch.tensor([[1.62, 1.8, 2.0], [-0.28, -0.2, 0.0]]), atol=1e-6)


def _random_batch(seed, lengths, T=6):
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    batch = make_batch(torch.randn(B, generator=g).tolist(), list(range(B)), lengths=lengths, T=T,
                       token_rewards=(0.1 * torch.randn(B, T, generator=g)).tolist())
    batch.token_rewards = batch.token_rewards * batch.loss_mask
    return _with_values(batch, torch.randn(B, T, generator=g).tolist())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lambda_one_gives_monte_carlo_returns_minus_values(seed):
    batch = _random_batch(seed, [6, 4, 1])
    adv = ADVANTAGES["gae"](batch, gamma=0.9, lam=1.0, whiten=False)
    for i, L in enumerate([6, 4, 1]):
        r = batch.token_rewards[i, :L].clone()
        r[L - 1] += batch.rewards[i]
        for t in range(L):
            G = sum(0.9 ** k * float(r[t + k]) for k in range(L - t))  # the Monte-Carlo return
            assert abs(float(adv[i, t]) - (G - float(batch.values[i, t]))) < 1e-5
    assert torch.allclose(batch.returns[0], adv[0] + batch.values[0], atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_lambda_zero_gives_one_step_td_errors(seed):
    batch = _random_batch(seed, [6, 3])
    adv = ADVANTAGES["gae"](batch, gamma=0.8, lam=0.0, whiten=False)
    for i, L in enumerate([6, 3]):
        for t in range(L):
            r = float(batch.token_rewards[i, t]) + (float(batch.rewards[i]) if t == L - 1 else 0.0)
            v_next = float(batch.values[i, t + 1]) if t + 1 < L else 0.0  # terminal after the last token
            assert abs(float(adv[i, t]) - (r + 0.8 * v_next - float(batch.values[i, t]))) < 1e-5


def test_masked_tokens_get_zero_and_are_skipped_by_the_recursion():
    # a tool token in the middle (completion_mask 1, loss_mask 0) and a shorter padded row
    # row 0: V = [0.5, -, 0.4], reward 1 on token 2, gamma = lambda = 1:
    #   A_2 = 1 - 0.4 = 0.6;  A_0 = 0 + V_2 - V_0 + A_2 = 0.4 - 0.5 + 0.6 = 0.5  (the tool token is stepped over)
    batch = make_batch([1.0, 1.0], [0, 0], lengths=[3, 1])
    batch.loss_mask[0, 1] = 0
    batch = _with_values(batch, [[0.5, 9.0, 0.4], [0.25, 9.0, 9.0]])
    adv = ADVANTAGES["gae"](batch, gamma=1.0, lam=1.0, whiten=False)
    assert torch.allclose(adv, torch.tensor([[0.5, 0.0, 0.6], [0.75, 0.0, 0.0]]), atol=1e-6)
    assert batch.returns[0, 1] == 0 and batch.returns[1, 1:].abs().sum() == 0
    whitened = ADVANTAGES["gae"](batch)
    assert (whitened * (1 - batch.loss_mask)).abs().sum() == 0


def test_whitening_gives_zero_mean_unit_variance_over_policy_tokens():
    batch = _random_batch(3, [6, 4, 2])
    adv = ADVANTAGES["gae"](batch)
    valid = batch.loss_mask > 0
    assert abs(float(adv[valid].mean())) < 1e-5 and abs(float(adv[valid].std()) - 1) < 1e-4
    raw = ADVANTAGES["gae"](_random_batch(3, [6, 4, 2]), whiten=False)
    assert torch.allclose(adv, masked_whiten(raw, batch.loss_mask))  # returns stay unwhitened either way


def test_t_ppo_bootstraps_truncated_rows_from_the_value_at_the_cut():
    # row 0 truncated ("length"): its outcome reward 5 (a score of unfinished text) is dropped;
    # V = [0.2, 0.3], V(s_2) = 0.7 (last_values), gamma = lambda = 1:
    #   delta_1 = 0 + 0.7 - 0.3 = 0.4;  delta_0 = 0 + 0.3 - 0.2 = 0.1;  A = [0.5, 0.4]
    # row 1 finished: as gae, reward 1, V = [0.5, 0.5]: A = [0.5, 0.5]
    batch = _with_values(make_batch([5.0, 1.0], [0, 0], lengths=[2, 2]), [[0.2, 0.3], [0.5, 0.5]],
                         last=[0.7, 123.0], finish=["length", "stop"])
    adv = ADVANTAGES["t_ppo"](batch, lam=1.0, whiten=False)
    assert torch.allclose(adv, torch.tensor([[0.5, 0.4], [0.5, 0.5]]), atol=1e-6)
    # the critic trains on finished rows only (decoupled value update)
    assert torch.equal(batch.value_mask, torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    ADVANTAGES["t_ppo"](batch, whiten=False, value_on_truncated=True)
    assert batch.value_mask is None


def test_t_ppo_equals_gae_on_finished_rows():
    def fresh():
        b = _random_batch(4, [6, 4, 2])
        b.last_values = torch.randn(3)  # unused: nothing is truncated
        b.metadata["finish_reason"] = ["stop"] * 3
        return b

    g, t = fresh(), fresh()
    assert torch.allclose(ADVANTAGES["gae"](g, lam=0.9), ADVANTAGES["t_ppo"](t, lam=0.9, value_lam=0.9))
    assert torch.allclose(g.returns, t.returns)
    # default value_lam = 1: the critic's targets are Monte-Carlo returns, the policy's advantages unchanged
    mc, t1 = fresh(), fresh()
    ADVANTAGES["gae"](mc, lam=1.0)
    assert torch.allclose(ADVANTAGES["t_ppo"](t1, lam=0.9), ADVANTAGES["gae"](fresh(), lam=0.9))
    assert torch.allclose(t1.returns, mc.returns)


def test_missing_critic_outputs_and_finish_reasons_are_explained():
    with pytest.raises(ValueError, match="needs critic values"):
        ADVANTAGES["gae"](make_batch([1.0], [0]))
    batch = _with_values(make_batch([1.0], [0]), [[0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="finish_reason"):
        ADVANTAGES["t_ppo"](batch)
    batch.metadata["finish_reason"], batch.last_values = ["length"], None
    with pytest.raises(ValueError, match="last_values"):
        ADVANTAGES["t_ppo"](batch)
