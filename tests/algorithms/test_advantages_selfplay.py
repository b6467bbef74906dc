"""SPO's self-play win-rate advantage: by hand, against a loop reference, and its invariants."""

import pytest
import torch

from postrl.algorithms.advantages_selfplay import group_win_rates, self_play_win_rate
from postrl.algorithms.registries import ADVANTAGES

from helpers import make_batch


def test_win_rates_by_hand_with_ties_counting_one_half():
    # group 0 rewards 1, 0, 0, 2:
    #   r=1 beats both 0s, loses to 2         -> 2/3
    #   each r=0 loses to 1 and 2, ties the other 0 -> (0 + 1/2 + 0)/3 = 1/6
    #   r=2 beats all three                    -> 1
    # group 1 rewards 5, 5, 3: each 5 ties the other and beats 3 -> 3/4; r=3 -> 0
    # group 2: a lone completion has no opponent -> 1/2
    batch = make_batch([1.0, 0.0, 0.0, 2.0, 5.0, 5.0, 3.0, 7.0], [0, 0, 0, 0, 1, 1, 1, 2],
                       lengths=[3, 1, 2, 3, 3, 3, 3, 2])
    adv = self_play_win_rate(batch)
    per_row = [1 / 6, -1 / 3, -1 / 3, 1 / 2, 1 / 4, 1 / 4, -1 / 2, 0.0]
    assert torch.allclose(adv[:, 0], torch.tensor(per_row), atol=1e-6)
    assert torch.allclose(adv, torch.tensor(per_row)[:, None] * batch.loss_mask)  # zero after each response


def _loop_win_rates(values, groups):
    out = []
    for i, (v, g) in enumerate(zip(values, groups)):
        others = [w for j, (w, h) in enumerate(zip(values, groups)) if h == g and j != i]
        out.append(sum(1.0 if v > w else 0.5 if v == w else 0.0 for w in others) / len(others) if others else 0.5)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_win_rates_match_the_loop_and_groups_sum_to_zero(seed):
    g = torch.Generator().manual_seed(seed)
    groups = torch.randint(0, 4, (13,), generator=g)
    rewards = torch.randint(0, 3, (13,), generator=g).float()  # small range: many ties
    rates = group_win_rates(rewards, groups)
    assert torch.allclose(rates, torch.tensor(_loop_win_rates(rewards.tolist(), groups.tolist())), atol=1e-6)
    adv = self_play_win_rate(make_batch(rewards.tolist(), groups.tolist()))[:, 0]
    for gid in groups.unique():
        assert abs(float(adv[groups == gid].sum())) < 1e-6


def test_equal_rewards_give_zero_and_monotone_transforms_change_nothing():
    assert torch.equal(self_play_win_rate(make_batch([0.3] * 4, [0, 0, 1, 1])), torch.zeros(4, 3))
    r = [0.5, -2.0, 3.0, 0.5, 1.0, 4.0]
    groups = [0, 0, 0, 0, 1, 1]
    base = self_play_win_rate(make_batch(r, groups))
    for f in (lambda x: 3 * x + 7, lambda x: x ** 3, torch.exp):
        moved = self_play_win_rate(make_batch(f(torch.tensor(r)).tolist(), groups))
        assert torch.allclose(base, moved)


def test_registered_with_the_paper_and_needs_nothing_from_the_loop():
    entry = ADVANTAGES.get("self_play_win_rate")
    assert entry.arxiv == "2401.04056" and entry.needs == () and entry.defaults == {}


def test_preference_win_rates_and_the_sppo_pair_by_hand():
    from postrl.algorithms.advantages_selfplay import best_and_worst, preference_win_rates

    # K = 3: P(0 beats 1) = 0.8, P(0 beats 2) = 0.4, P(1 beats 2) = 0.5 (the rest by complement)
    # rates: y0 (0.8 + 0.4)/2 = 0.6, y1 (0.2 + 0.5)/2 = 0.35, y2 (0.6 + 0.5)/2 = 0.55; they average 1/2
    p = torch.tensor([[[0.5, 0.8, 0.4], [0.2, 0.5, 0.5], [0.6, 0.5, 0.5]],
                      [[9.0, 0.5, 0.5], [0.5, 9.0, 0.5], [0.5, 0.5, 9.0]]])  # the diagonal is ignored
    rates = preference_win_rates(p)
    assert torch.allclose(rates, torch.tensor([[0.6, 0.35, 0.55], [0.5, 0.5, 0.5]]))
    chosen, rejected = best_and_worst(rates)
    assert chosen.tolist() == [0, 0] and rejected.tolist() == [1, 0]  # ties: the lowest index
    with pytest.raises(ValueError, match="K >= 2"):
        preference_win_rates(torch.full((2, 1, 1), 0.5))
