"""Loss aggregation modes and KL estimators against hand-computed values."""

import math

import pytest
import torch

from postrl.algorithms import aggregate, kl_penalty
from postrl.algorithms.aggregation import agg_normalizer

LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])


def test_token_mean():
    assert float(aggregate(LOSS, MASK, "token_mean")) == 10 / 4  # (1+2+3+4) / 4 tokens


def test_seq_mean_token_mean():
    assert float(aggregate(LOSS, MASK, "seq_mean_token_mean")) == (2 + 4) / 2  # per-seq means 2 and 4


def test_seq_mean_token_sum_norm_uses_constant_length():
    assert math.isclose(float(aggregate(LOSS, MASK, "seq_mean_token_sum_norm", max_tokens=5)), 10 / (5 * 2))


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_micro_batches_with_the_batch_normalizer_add_up_to_the_full_batch(mode):
    full = aggregate(LOSS, MASK, mode, max_tokens=3)
    norm = agg_normalizer(MASK, mode)
    parts = sum(aggregate(LOSS[i:i + 1], MASK[i:i + 1], mode, max_tokens=3, normalizer=norm) for i in range(2))
    assert torch.isclose(full, parts)


def test_unknown_mode_names_the_valid_ones():
    with pytest.raises(ValueError, match="token_mean"):
        aggregate(LOSS, MASK, "sum")


def test_kl_estimators_by_hand():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    r = math.log(0.5)  # log(ref / p)
    assert math.isclose(float(kl_penalty(logp, ref, "k1")), -r, rel_tol=1e-6)          # 0.6931
    assert math.isclose(float(kl_penalty(logp, ref, "k2")), 0.5 * r * r, rel_tol=1e-6)  # 0.2402
    assert math.isclose(float(kl_penalty(logp, ref, "k3")), 0.5 - r - 1, rel_tol=1e-5)  # 0.1931


def test_kl_is_zero_when_policy_equals_reference():
    x = torch.randn(4, 6)
    for kind in ("k1", "k2", "k3"):
        assert torch.equal(kl_penalty(x, x, kind), torch.zeros_like(x))


def test_k3_is_nonnegative_and_unbiased_for_kl():
    # sample from p, average k3: should approach KL(p || q) for two categorical distributions
    p, q = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.4, 0.4, 0.2])
    samples = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    k3 = kl_penalty(p.log()[samples], q.log()[samples], "k3")
    exact = float((p * (p / q).log()).sum())
    assert (k3 >= 0).all() and math.isclose(float(k3.mean()), exact, rel_tol=0.02)
