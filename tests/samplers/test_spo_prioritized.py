"""spo_prioritized: the rho-decayed tracker by hand, the weights sqrt(v(1-v)) + eps, and the draws."""

import math

from postrl.samplers import SAMPLERS


def test_tracker_decays_by_rho_per_visit_then_adds_the_group():
    s = SAMPLERS["spo_prioritized"](3, 0)                  # rho 0.96, prior 0.5 / 0.5
    s.update([0], [[1.0, 1.0, 0.0, 0.0]])                  # 0.96*0.5 + 2 = 2.48 (both)
    assert (s.table.alpha[0], s.table.beta[0]) == (2.48, 2.48) and s.table.mean(0) == 0.5
    s.update([0], [[1.0] * 4])                             # 0.96*2.48 + 4 = 6.3808, 0.96*2.48 = 2.3808
    assert math.isclose(s.table.alpha[0], 6.3808) and math.isclose(s.table.beta[0], 2.3808)
    assert math.isclose(s.table.mean(0), 6.3808 / 8.7616)
    assert (s.table.alpha[1], s.table.beta[1]) == (0.5, 0.5)  # unvisited rows do not decay


def test_weights_are_the_reward_sd_plus_the_floor():
    s = SAMPLERS["spo_prioritized"](3, 0)
    s.update([1, 2], [[0.0] * 8, [1.0] * 8])
    # row 0 unseen: v = 0.5, w = 0.5 + 0.05 = 0.55; row 1: alpha 0.48, beta 8.48, v = 0.48/8.96 = 0.053571,
    # w = sqrt(0.053571 * 0.946429) + 0.05 = 0.275171; row 2 mirrors row 1
    v = 0.48 / 8.96
    assert math.isclose(s.weight(0), 0.55)
    assert math.isclose(s.weight(1), math.sqrt(v * (1 - v)) + 0.05)
    assert math.isclose(s.weight(1), 0.275171, rel_tol=1e-5)
    assert math.isclose(s.weight(2), s.weight(1))
    assert SAMPLERS["spo_prioritized"](3, 0, eps=0.0).weight(0) == 0.5


def test_first_pick_frequency_follows_the_weights():
    s = SAMPLERS["spo_prioritized"](3, 0)
    s.update([1, 2], [[0.0] * 8, [1.0] * 8])
    total = 0.55 + 2 * 0.275171                            # P(first) = 0.4998, 0.2501, 0.2501
    counts = [0, 0, 0]
    for _ in range(6000):                                  # sd of a frequency <= 0.0065
        counts[s.next(1)[0]] += 1
    for i, w in enumerate([0.55, 0.275171, 0.275171]):
        assert abs(counts[i] / 6000 - w / total) < 0.025, counts


def test_without_a_floor_solved_prompts_are_drawn_only_after_the_rest():
    # eps = 0 and rho = 0: a prompt that passed (or failed) everything has v = 1 (0) and weight 0
    s = SAMPLERS["spo_prioritized"](4, 0, eps=0.0, rho=0.0)
    s.update([0, 1], [[1.0] * 4, [0.0] * 4])
    assert (s.weight(0), s.weight(1)) == (0.0, 0.0)
    for _ in range(50):
        assert set(s.next(2)) == {2, 3} and set(s.next(4)) == {0, 1, 2, 3}
