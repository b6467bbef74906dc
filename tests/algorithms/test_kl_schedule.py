"""algorithm.kl_schedule (GRPO-D): the KL coefficient at given steps, by hand."""

import math

import pytest

from postrl.algorithms.kl import scheduled_kl_coef
from postrl.config import ConfigError, RLConfig, resolve


def test_linear_schedule_moves_from_start_to_end_then_stays():
    # start 0, end 0.04 over 4 steps: 0, 0.01, 0.02, 0.03, 0.04, then 0.04
    values = [scheduled_kl_coef("linear", 0.0, 0.04, s, 4) for s in range(6)]
    assert values == pytest.approx([0.0, 0.01, 0.02, 0.03, 0.04, 0.04])


def test_cosine_schedule_is_half_a_cosine():
    # u = 1/4: (1 - cos(pi/4)) / 2 = 0.146447; u = 1/2: 0.5
    assert scheduled_kl_coef("cosine", 0.0, 1.0, 1, 4) == pytest.approx((1 - math.cos(math.pi / 4)) / 2)
    assert scheduled_kl_coef("cosine", 0.0, 1.0, 2, 4) == pytest.approx(0.5)
    assert scheduled_kl_coef("cosine", 0.2, 0.1, 4, 4) == pytest.approx(0.1)  # decaying works too


def test_constant_schedule_ignores_the_step():
    assert scheduled_kl_coef("constant", None, 0.04, 123, 10) == 0.04


def test_schedule_config_errors_name_the_key_and_the_fix():
    with pytest.raises(ConfigError, match="kl_coef_start"):
        resolve(RLConfig, {"algorithm": {"kl_schedule": "linear", "kl_coef": 0.04}})
    with pytest.raises(ConfigError, match="kl_schedule: linear"):
        resolve(RLConfig, {"algorithm": {"kl_coef_start": 0.01}})


def test_a_schedule_that_starts_above_zero_loads_the_reference():
    cfg = resolve(RLConfig, {"algorithm": {"kl_schedule": "linear", "kl_coef_start": 0.1, "kl_coef": 0.0}})
    assert cfg.needs_reference
