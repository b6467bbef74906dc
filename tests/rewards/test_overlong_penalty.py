"""DAPO's soft overlong punishment (eq. 13) at its three regimes, and its L_max from the config."""

import pytest

from postrl.config import RLConfig, resolve
from postrl.rewards import REWARDS

overlong = REWARDS["overlong_penalty"]


def _lengths(*ns):
    return [[7] * n for n in ns]


def test_three_regimes_by_hand():
    # L_max 20, L_cache 5 -> L_exp 15
    # |y| = 10, 15 -> 0 ; |y| = 16 -> (15 - 16) / 5 = -0.2 ; 20 -> (15 - 20) / 5 = -1 ; 21 -> -1
    out = overlong([""] * 5, [""] * 5, _lengths(10, 15, 16, 20, 21), max_tokens=20, cache_tokens=5)
    assert out == pytest.approx([0.0, 0.0, -0.2, -1.0, -1.0])


def test_default_cache_is_a_fifth_of_l_max_and_penalty_scales():
    # L_max 20 -> L_cache 4 (DAPO: 4096 of 20480), L_exp 16; |y| = 18 -> -2/4 = -0.5, x 0.5 penalty = -0.25
    assert overlong([""], [""], _lengths(18), max_tokens=20, penalty=0.5) == pytest.approx([-0.25])


def test_zero_cache_keeps_only_the_overlong_regime():
    assert overlong([""] * 2, [""] * 2, _lengths(20, 21), max_tokens=20, cache_tokens=0) == [0.0, -1.0]


def test_missing_l_max_and_bad_cache_are_errors_that_say_what_to_set():
    with pytest.raises(ValueError, match="max_tokens"):
        overlong([""], [""], _lengths(3))
    with pytest.raises(ValueError, match="cache_tokens"):
        overlong([""], [""], _lengths(3), max_tokens=4, cache_tokens=5)


def test_config_fills_l_max_from_rollout_max_new_tokens_unless_given():
    cfg = resolve(RLConfig, {"rollout": {"max_new_tokens": 32}, "rewards": [{"name": "overlong_penalty"}]})
    assert cfg.rewards[0].kwargs == {"max_tokens": 32}
    mine = resolve(RLConfig, {"rewards": [{"name": "overlong_penalty", "kwargs": {"max_tokens": 8}}]})
    assert mine.rewards[0].kwargs == {"max_tokens": 8}
