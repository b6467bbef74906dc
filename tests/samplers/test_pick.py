"""Batch picking shared by the statistical samplers: seeded draws, top-k, weighted sampling without replacement."""

import pytest

from postrl.samplers.pick import check_batch, check_param, draw_rng, smallest, weighted_sample


def test_smallest_breaks_ties_by_position():
    assert smallest([0.3, 0.1, 0.1, 0.0], 3) == [3, 1, 2]


def test_draw_rng_is_a_pure_function_of_seed_and_counter():
    assert draw_rng(5, 2).random() == draw_rng(5, 2).random()
    assert draw_rng(5, 2).random() != draw_rng(5, 3).random() != draw_rng(6, 2).random()


def test_weighted_sample_first_pick_follows_the_weights():
    # weights 1 : 2 : 5 -> P(first) = 1/8, 2/8, 5/8; 8000 draws: sd of a frequency <= 0.0056
    weights, counts = [1.0, 2.0, 5.0], [0, 0, 0]
    for c in range(8000):
        counts[weighted_sample(weights, 1, draw_rng(0, c))[0]] += 1
    for got, want in zip(counts, [1 / 8, 2 / 8, 5 / 8]):
        assert abs(got / 8000 - want) < 0.02


def test_weighted_sample_never_repeats_and_puts_zero_weights_last():
    for c in range(200):
        out = weighted_sample([0.0, 1.0, 0.0, 3.0], 4, draw_rng(1, c))
        assert sorted(out) == [0, 1, 2, 3] and set(out[:2]) == {1, 3}


def test_batch_and_parameter_errors_name_the_setting():
    with pytest.raises(ValueError, match=r"train.prompts_per_step=5 .* 4 training prompts"):
        check_batch("x", 5, 4)
    with pytest.raises(ValueError, match="train.prompts_per_step must be >= 1"):
        check_batch("x", 0, 4)
    with pytest.raises(ValueError, match=r"x: sampler.kwargs.low=2 is out of range; it must be in \[0, 1\]"):
        check_param("x", "low", 2, False, "in [0, 1]")
