"""D3S (samplers/d3s.py): the max-variance subset against brute force, the token cut on |A| * H,
the schedule, and `select` on a hand-built batch with every number written out."""

import itertools
import random

import pytest
import torch
from helpers import make_batch

from postrl.samplers.d3s import D3S, keep_top_tokens, linear, max_variance_subset


def _var(x):
    m = sum(x) / len(x)
    return sum((v - m) ** 2 for v in x) / len(x)


@pytest.mark.parametrize("seed", range(40))
def test_max_variance_subset_matches_brute_force_over_all_subsets(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 7)
    values = [rng.choice([rng.gauss(0, 1), float(rng.randint(-2, 2))]) for _ in range(n)]  # ties too
    for m in range(1, n + 1):
        best = max(_var([values[i] for i in s]) for s in itertools.combinations(range(n), m))
        chosen = max_variance_subset(values, m)
        assert len(chosen) == m and len(set(chosen)) == m and chosen == sorted(chosen)
        assert _var([values[i] for i in chosen]) == pytest.approx(best, abs=1e-12)


def test_max_variance_subset_by_hand():
    values = [0.9, -0.1, 0.2, -1.3, 0.5]
    assert max_variance_subset(values, 2) == [0, 3]  # the two extremes 0.9 and -1.3
    # size 3, the splits of the sorted values (-1.3, -0.1, 0.2, 0.5, 0.9) into j largest + 3 - j smallest:
    # j=0 {-1.3,-0.1,0.2} var 0.42; j=1 {-1.3,-0.1,0.9} var 0.8089; j=2 {-1.3,0.5,0.9} var 0.9156;
    # j=3 {0.2,0.5,0.9} var 0.0822  ->  j=2: positions 3, 4, 0
    assert max_variance_subset(values, 3) == [0, 3, 4]
    assert max_variance_subset(values, 5) == [0, 1, 2, 3, 4]
    assert max_variance_subset([0.0, 0.0, 0.0], 2) == [0, 1]  # all equal: the earliest rows


def test_linear_schedule_relaxes_from_start_to_end():
    assert linear(0.5, 1.0, 0.0) == 0.5 and linear(0.5, 1.0, 0.5) == 0.75 and linear(0.5, 1.0, 1.0) == 1.0
    assert linear(0.5, 1.0, 1.7) == 1.0 and linear(0.25, 0.75, -1.0) == 0.25


def test_keep_top_tokens_keeps_the_largest_scores_among_masked_in_tokens():
    scores = torch.tensor([[0.9, 0.1, 5.0], [0.4, 0.8, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # 5.0 is padding: never kept
    # 5 tokens, half -> ceil(2.5) = 3: 0.9, 0.8, 0.4
    assert keep_top_tokens(scores, mask, 0.5).tolist() == [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
    assert keep_top_tokens(scores, mask, 1.0).tolist() == mask.tolist()


def _batch():
    # two groups of four; lengths set the loss tokens (17 in all)
    batch = make_batch([1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0], [0, 0, 0, 0, 1, 1, 1, 1],
                       lengths=[3, 2, 3, 1, 2, 3, 2, 1])
    batch.metadata["token_entropy"] = [[0.1, 0.4, 0.2], [1.0, 1.0], [1.0, 1.0, 1.0], [0.3],
                                       [1.0, 0.5], [1.0, 1.0, 1.0], [0.2, 0.9], [1.0]]
    row_adv = torch.tensor([1.5, -0.5, 0.5, -1.5, 0.2, 0.1, -0.3, 0.0])
    return batch, row_adv[:, None] * batch.loss_mask


def test_select_at_the_start_keeps_the_extreme_rows_and_the_top_abs_a_times_h_tokens():
    batch, adv = _batch()
    mask_before = batch.loss_mask.clone()
    out, a, metrics = D3S(10, 0).select(batch, adv, progress=0.0)
    # keep fractions 0.5 / 0.5. Rows: m = max(2, ceil(0.5 * 4)) = 2 per group, the max-variance pair:
    # group 0 {1.5, -1.5} = rows 0, 3; group 1 {0.2, -0.3} = rows 4, 6
    assert out.size == 4 and out.rewards.tolist() == [1.0, 0.0, 1.0, 0.0] and out.group_ids.tolist() == [0, 0, 1, 1]
    # |A| * H on the kept rows' 8 loss tokens: row 0: 0.15 0.6 0.3 | row 3: 0.45 | row 4: 0.2 0.1 | row 6: 0.06 0.27
    # keep ceil(0.5 * 8) = 4: 0.6, 0.45, 0.3, 0.27
    assert out.loss_mask.tolist() == [[0, 1, 1], [1, 0, 0], [0, 0, 0], [0, 1, 0]]
    assert torch.allclose(a, torch.tensor([[0.0, 1.5, 1.5], [-1.5, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, -0.3, 0.0]]))
    assert metrics["d3s/kept_rows"] == 0.5 and metrics["d3s/kept_tokens"] == pytest.approx(4 / 17)
    assert metrics["d3s/sample_keep"] == 0.5 and metrics["d3s/token_keep"] == 0.5
    assert torch.equal(batch.loss_mask, mask_before)  # the caller's batch is left as it was


def test_select_halfway_keeps_three_rows_per_group_and_at_the_end_everything():
    batch, adv = _batch()
    out, a, m = D3S(10, 0, token_keep_start=1.0).select(batch, adv, progress=0.5)
    # f_s = 0.75: 3 rows per group. Group 0 sorted (-1.5, -0.5, 0.5, 1.5): j=1 {-1.5,-0.5,1.5} and j=2
    # {-1.5,0.5,1.5} tie (var 1.5556): the smaller j -> rows 0, 1, 3. Group 1 sorted (-0.3, 0.0, 0.1, 0.2):
    # j=1 {-0.3,0.0,0.2} var 0.0422, j=2 {-0.3,0.1,0.2} var 0.0467 -> rows 4, 5, 6
    assert out.size == 6 and out.rewards.tolist() == [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    assert m["d3s/token_keep"] == 1.0 and torch.equal(out.loss_mask, batch.loss_mask[[0, 1, 3, 4, 5, 6]])
    same, a2, m2 = D3S(10, 0).select(batch, adv, progress=1.0)
    assert same is batch and a2 is adv and m2["d3s/kept_rows"] == 1.0 and m2["d3s/kept_tokens"] == 1.0


def test_select_without_token_entropies_is_refused_by_name():
    batch, adv = _batch()
    del batch.metadata["token_entropy"]
    with pytest.raises(RuntimeError, match="token_entropy"):
        D3S(10, 0).select(batch, adv, progress=0.0)


def test_keep_fractions_out_of_range_are_refused_by_key():
    with pytest.raises(ValueError, match="sampler.kwargs.token_keep_start"):
        D3S(10, 0, token_keep_start=0.0)
    with pytest.raises(ValueError, match="sampler.kwargs.sample_keep_end"):
        D3S(10, 0, sample_keep_end=1.5)


def test_state_round_trips_and_draws_continue_like_uniform():
    a = D3S(7, 3)
    a.next(5)
    b = D3S(7, 3)
    b.load_state_dict(a.state_dict())
    assert [a.next(4) for _ in range(3)] == [b.next(4) for _ in range(3)]
