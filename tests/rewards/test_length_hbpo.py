"""HBPO's budget-aware reward against hand-computed values, plus the inter-budget ordering."""

import pytest
import torch

from postrl.rewards.length import LENGTH_SHAPERS, LengthInputs

hbpo = LENGTH_SHAPERS["hbpo"]


def _inputs(rewards, correct, lengths, budgets, max_tokens=100):
    B = len(rewards)
    return LengthInputs(rewards=torch.tensor(rewards, dtype=torch.float32), correct=torch.tensor(correct),
                        lengths=torch.tensor(lengths, dtype=torch.float32), truncated=torch.zeros(B, dtype=torch.bool),
                        prompt_index=torch.zeros(B, dtype=torch.long), group_ids=torch.zeros(B, dtype=torch.long),
                        max_tokens=max_tokens, budget=torch.tensor(budgets, dtype=torch.float32))


def test_piecewise_reward_by_hand():
    # L_max = 100, beta = 4, alpha = 1/100;  f2(50) = 4 cos(pi/4) = 2.828427
    #   n 60, b 50 (over budget):  f1 = 4 cos(0.3 pi) - 10/100 = 2.351141 - 0.1 = 2.251141 < f2 -> R = f1
    #   n 40, b 50 (within):       f1 = 4 cos(0.2 pi) - 0.1 = 3.136068 > f2                    -> R = f2
    #   n 2,  b 10:  f1 = 4 cos(0.01 pi) - 0.08 = 3.918026 < f2(10) = 4 cos(0.05 pi) = 3.950753 -> R = f1
    #   incorrect: R = 0, and r (0 here) is kept
    # r' = r + correct * (R - 1): with a 0/1 verifier r' = R for correct rows
    x = _inputs([1, 1, 1, 0], [True, True, True, False], [60, 40, 2, 40], [50, 50, 10, 50])
    new, metrics = hbpo(x, {})
    assert torch.allclose(new, torch.tensor([2.251141, 2.828427, 3.918026, 0.0]), atol=1e-5)
    assert metrics["hbpo/within_budget_frac"] == pytest.approx(3 / 4)


def test_other_reward_terms_are_kept_and_correct_reward_is_replaced():
    # r = 1.5 (correct 1 + a format bonus 0.5), n 40, b 50: r' = 1.5 + 2.828427 - 1 = 3.328427
    # an incorrect row keeps its partial credit 0.2
    new, _ = hbpo(_inputs([1.5, 0.2], [True, False], [40, 40], [50, 50]), {})
    assert torch.allclose(new, torch.tensor([3.328427, 0.2]), atol=1e-5)
    # a verifier that pays 2 for a correct answer: say so with correct_reward
    new, _ = hbpo(_inputs([2.0], [True], [40], [50]), {}, correct_reward=2.0)
    assert new.item() == pytest.approx(2.828427, abs=1e-5)


def test_a_correct_answer_longer_than_l_max_gets_zero():
    # max_length 50 < n = 60: R = 0 -> r' = 1 + (0 - 1) = 0
    new, _ = hbpo(_inputs([1], [True], [60], [50]), {}, max_length=50)
    assert new.item() == 0.0


def test_l_max_defaults_to_the_rollout_limit():
    a, _ = hbpo(_inputs([1], [True], [60], [50], max_tokens=100), {})
    b, _ = hbpo(_inputs([1], [True], [60], [50], max_tokens=7), {}, max_length=100, alpha=0.01)
    assert torch.allclose(a, b)


def test_short_answers_prefer_small_budgets_and_long_answers_large_ones():
    # budgets 20 / 40 / 80, L_max 100:  n = 10 -> R = 3.804, 3.236, 1.236 (f2 decreases with b)
    #                                   n = 90 -> R = -0.074, 0.126, 0.526 (smaller |n - b| penalty)
    budgets = [20, 40, 80]
    short, _ = hbpo(_inputs([1] * 3, [True] * 3, [10] * 3, budgets), {})
    long, _ = hbpo(_inputs([1] * 3, [True] * 3, [90] * 3, budgets), {})
    assert torch.allclose(short, torch.tensor([3.804226, 3.236068, 1.236068]), atol=1e-5)
    assert torch.allclose(long, torch.tensor([-0.074262, 0.125738, 0.525738]), atol=1e-5)
    assert short[0] > short[1] > short[2] and long[0] < long[1] < long[2]


@pytest.mark.parametrize("b", [10, 30, 60])
def test_reward_never_decreases_inside_the_budget(b):
    n = list(range(1, b + 1))
    new, _ = hbpo(_inputs([1] * b, [True] * b, n, [b] * b), {})
    assert (new[1:] - new[:-1] >= -1e-6).all()


def test_missing_budgets_and_bad_hyper_parameters_are_explained():
    x = _inputs([1], [True], [3], [5])
    x.budget = None
    with pytest.raises(ValueError, match="set rollout.budgets"):
        hbpo(x, {})
    with pytest.raises(ValueError, match="beta > 0"):
        hbpo(_inputs([1], [True], [3], [5]), {}, beta=0.0)
