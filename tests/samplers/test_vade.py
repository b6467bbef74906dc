"""vade: the two-scale decay and evidence updates by hand, and the Thompson draw toward p ~ 1/2."""

import math

from postrl.samplers import SAMPLERS


def ab(s, i):
    return s.table.alpha[i], s.table.beta[i]


def test_posterior_after_updates_with_both_decays():
    s = SAMPLERS["vade"](3, 0, step_decay=0.9, visit_decay=0.5)   # prior Beta(1, 1)
    s.update([0], [[1, 1, 1, 0]])
    # no visited prompt yet to decay per step; row 0: 0.5*1 + 0.5*1 + 3 = 4, 0.5*1 + 0.5*1 + 1 = 2
    assert ab(s, 0) == (4.0, 2.0)
    s.update([1], [[0, 0, 0, 0]])
    # per step, row 0: 0.9*4 + 0.1*1 = 3.7, 0.9*2 + 0.1*1 = 1.9; row 1: (1, 1) + (0, 4) = (1, 5)
    assert all(math.isclose(x, y) for x, y in zip(ab(s, 0) + ab(s, 1), (3.7, 1.9, 1.0, 5.0)))
    s.update([0], [[1, 0, 0, 0]])
    # per step: row 0 -> 0.9*3.7 + 0.1 = 3.43, 0.9*1.9 + 0.1 = 1.81; row 1 -> 1.0, 0.9*5 + 0.1 = 4.6
    # visit, row 0: 0.5*3.43 + 0.5 + 1 = 3.215, 0.5*1.81 + 0.5 + 3 = 4.405
    assert all(math.isclose(x, y) for x, y in zip(ab(s, 0) + ab(s, 1), (3.215, 4.405, 1.0, 4.6)))
    assert ab(s, 2) == (1.0, 1.0) and s.state_dict()["rows"] == [0, 1]


def test_statistics_of_an_unvisited_prompt_fade_back_to_the_prior():
    s = SAMPLERS["vade"](2, 0, step_decay=0.5, visit_decay=1.0)
    s.update([0], [[0.0] * 8])                                     # (1, 9)
    for _ in range(10):
        s.update([1], [[1.0, 0.0]])
    # deviation from the prior halves each step: beta = 1 + 8 * 0.5^10
    assert ab(s, 0) == (1.0, 1.0 + 8 * 0.5 ** 10)


def test_the_prompt_at_pass_rate_one_half_is_drawn_first():
    # no decay, so the counts are exact: rows 0, 1 failed 80 of 80, row 2 passed 80 of 80, row 3 40 of 80
    s = SAMPLERS["vade"](4, 0, step_decay=1.0, visit_decay=1.0)
    for _ in range(10):
        s.update([0, 1, 2, 3], [[0.0] * 8, [0.0] * 8, [1.0] * 8, [1.0] * 4 + [0.0] * 4])
    assert [ab(s, i) for i in range(4)] == [(1.0, 81.0), (1.0, 81.0), (81.0, 1.0), (41.0, 41.0)]
    # row 3 draws p~ ~ Beta(41, 41) (sd 0.055): score p~(1 - p~) ~ 0.25; the others draw p~ < 0.1 or > 0.9
    # with probability 1 - 0.9^81 ~ 0.9998, i.e. score < 0.09: row 3 wins practically every draw
    firsts = [s.next(1)[0] for _ in range(1000)]
    assert firsts.count(3) >= 995
    assert all(b[0] == 3 and len(set(b)) == 2 for b in (s.next(2) for _ in range(100)))


def test_an_unseen_prompt_competes_through_its_uniform_draw():
    # row 0 unseen: p~ ~ U(0, 1), score p~(1 - p~); row 1 known at 1/2 (Beta(41, 41)), score ~ 0.25 - 0.003.
    # Row 0 wins only if |p~ - 1/2| < |p~_1 - 1/2|, i.e. with probability E|p~_1 - 1/2| * 2 ~ 2 * 0.044 = 0.088
    s = SAMPLERS["vade"](2, 5, step_decay=1.0, visit_decay=1.0)
    for _ in range(10):
        s.update([1], [[1.0] * 4 + [0.0] * 4])
    share = sum(s.next(1)[0] == 0 for _ in range(4000)) / 4000
    assert 0.06 < share < 0.12
