"""mopps: the decayed Beta-Bernoulli update by hand, top-k nearest the target, the uniform candidate pool."""

from postrl.samplers import SAMPLERS


def ab(s, i):
    return s.table.alpha[i], s.table.beta[i]


def test_streaming_update_with_decay_toward_the_prior():
    s = SAMPLERS["mopps"](3, 0, decay=0.5)                        # prior Beta(1, 1)
    s.update([0], [[1, 1, 1, 1, 0, 0, 0, 0]])    # 0.5*1 + 0.5*1 + 4 = 5, likewise 5
    assert ab(s, 0) == (5.0, 5.0)
    s.update([0, 2], [[1.0] * 8, [0.0, 1.0]])    # row 0: 0.5*5 + 0.5 + 8 = 11, 0.5*5 + 0.5 + 0 = 3
    assert ab(s, 0) == (11.0, 3.0) and ab(s, 2) == (2.0, 2.0) and ab(s, 1) == (1.0, 1.0)
    t = SAMPLERS["mopps"](3, 0, decay=1.0, alpha0=2.0, beta0=3.0)  # no forgetting: plain counts
    t.update([1], [[1.0, 0.5, 0.0]])
    t.update([1], [[1.0, 1.0, 1.0]])
    assert ab(t, 1) == (2.0 + 1 + 3, 3.0 + 2 + 0)


def history(s):
    """rows 0, 1: 0 of 80 passed; row 2: 72 of 80 (0.9); row 3: 40 of 80 (0.5). No decay."""
    for _ in range(10):
        s.update([0, 1, 2, 3], [[0.0] * 8, [0.0] * 8, [1.0] * 7 + [0.0] if _ < 8 else [1.0] * 8,
                                [1.0] * 4 + [0.0] * 4])
    return s


def test_picks_the_candidate_whose_draw_is_nearest_the_target():
    # candidate_ratio 4 * k 1 >= 4 rows: every row is a candidate
    s = history(SAMPLERS["mopps"](4, 0, decay=1.0))
    assert [ab(s, i) for i in range(4)] == [(1.0, 81.0), (1.0, 81.0), (73.0, 9.0), (41.0, 41.0)]
    firsts = [s.next(1)[0] for _ in range(1000)]
    assert firsts.count(3) >= 990                                  # Beta(41, 41) vs draws near 0 and 0.9
    t = history(SAMPLERS["mopps"](4, 0, decay=1.0, target=0.9))
    firsts = [t.next(1)[0] for _ in range(1000)]
    # row 2 draws p~ ~ Beta(73, 9) (mean 0.890, sd 0.034); row 3 would need p~ > 0.7 (about 0.002 per draw)
    assert firsts.count(2) >= 990


def test_candidates_are_a_uniform_sample_of_the_dataset():
    # all rows at the prior: every row equally likely; 10 rows, k = 2, pool 2 * 2 = 4 candidates
    s = SAMPLERS["mopps"](10, 0, candidate_ratio=2)
    counts = [0] * 10
    for _ in range(3000):
        for i in s.next(2):
            counts[i] += 1
    assert all(abs(c / 6000 - 0.1) < 0.015 for c in counts), counts


def test_only_candidates_can_be_picked():
    # 100 rows: row 3 at pass rate 1/2, every other row failed 80 of 80. Scored over the whole dataset,
    # row 3 would win every step; it is a candidate (pool 4 * 1) with probability 4/100 and then wins,
    # so about 40 of 1000 steps pick it (binomial sd 6.2)
    s = SAMPLERS["mopps"](100, 0, decay=1.0)
    for _ in range(10):
        s.update(list(range(100)), [[1.0] * 4 + [0.0] * 4 if i == 3 else [0.0] * 8 for i in range(100)])
    assert 20 < sum(s.next(1)[0] == 3 for _ in range(1000)) < 60
