"""pass_rate_curriculum: the EMA pass-rate estimate, the band weights, and the draws they give."""

from postrl.samplers import SAMPLERS

FAIL, PASS, HALF = [0.0] * 4, [1.0] * 4, [1.0, 1.0, 0.0, 0.0]


def test_estimate_is_an_ema_of_group_pass_rates():
    s = SAMPLERS["pass_rate_curriculum"](5, 0, ema=0.5)
    s.update([0, 1], [HALF, [1.0, 0.4, 0.0, 0.0]])     # first visits: 2/4, 1/4
    assert s.rate == {0: 0.5, 1: 0.25}
    s.update([0], [PASS])                               # 0.5 * 0.5 + 0.5 * 1 = 0.75
    s.update([0], [FAIL])                               # 0.5 * 0.75 + 0.5 * 0 = 0.375
    assert s.rate == {0: 0.375, 1: 0.25}
    t = SAMPLERS["pass_rate_curriculum"](5, 0, threshold=0.4)
    t.update([1], [[1.0, 0.4, 0.0, 0.0]])               # 0.4 passes at threshold 0.4: 2/4
    assert t.rate == {1: 0.5}


def test_weights_prefer_the_band_and_explore_unseen_prompts():
    # p = 0 (too hard), 1 (too easy), 0.5 (in band), 0.95 (above high = 0.9); row 4 never visited
    s = SAMPLERS["pass_rate_curriculum"](5, 0)
    s.update([0, 1, 2], [FAIL, PASS, HALF])
    s.rate[3] = 0.95
    assert [s.weight(i) for i in range(5)] == [0.05, 0.05, 1.0, 0.05, 1.0]
    # P(first) = w / 2.15: row 2 and row 4 0.4651 each, rows 0, 1, 3 0.0233 each; 6000 draws: sd <= 0.0065
    counts = [0] * 5
    for _ in range(6000):
        counts[s.next(1)[0]] += 1
    for i, want in enumerate([0.05 / 2.15, 0.05 / 2.15, 1 / 2.15, 0.05 / 2.15, 1 / 2.15]):
        assert abs(counts[i] / 6000 - want) < 0.02, (i, counts)
    assert min(counts) > 0  # out-of-band prompts are revisited, so their estimate can change


def test_a_revisited_prompt_moves_back_into_the_band():
    s = SAMPLERS["pass_rate_curriculum"](3, 0)
    s.update([0], [FAIL])
    assert s.weight(0) == 0.05
    s.update([0], [PASS])                               # 0.5 * 0 + 0.5 * 1 = 0.5: in the band again
    assert s.rate[0] == 0.5 and s.weight(0) == 1.0


def test_batches_concentrate_on_the_band_once_it_is_known():
    # 20 rows: rows 0..9 too hard, 10..17 too easy, 18 and 19 at pass rate 1/2. Weights 1, 1 and
    # 18 x 0.05: P(first in band) = 2/2.9 = 0.690, P(second in band) = 0.690 * 1/1.9 + 0.310 * 2/2.85
    # = 0.580, so 0.635 of the picks are in the band (uniform: 0.1); 1000 picks: sd ~0.015
    s = SAMPLERS["pass_rate_curriculum"](20, 1)
    s.update(list(range(20)), [FAIL] * 10 + [PASS] * 8 + [HALF] * 2)
    picked = [i for _ in range(500) for i in s.next(2)]
    assert abs(sum(i >= 18 for i in picked) / len(picked) - 0.635) < 0.05
