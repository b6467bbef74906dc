"""Presets are sparse data: every one resolves to a valid config, and user keys win."""

import pytest

from postrl.algorithms import PRESETS
from postrl.config import RLConfig, resolve


@pytest.mark.parametrize("name", PRESETS.names())
def test_every_preset_resolves_to_a_valid_config(name):
    cfg = resolve(RLConfig, {"algorithm": {"preset": name}})
    for key, value in PRESETS[name]().items():
        section, field = key.split(".")
        assert getattr(getattr(cfg, section), field) == value


def test_user_keys_override_the_preset():
    cfg = resolve(RLConfig, {"algorithm": {"preset": "grpo", "kl_coef": 0.0}}, {"algorithm.loss_agg": "token_mean"})
    assert cfg.algorithm.kl_coef == 0.0 and cfg.algorithm.loss_agg == "token_mean"
    assert cfg.algorithm.kl_estimator == "k3"  # still from the preset


def test_grpo_preset_matches_the_paper():
    p = PRESETS["grpo"]()
    assert p["algorithm.advantage"] == "grpo" and p["algorithm.kl_coef"] == 0.04
    assert p["algorithm.loss_agg"] == "seq_mean_token_mean"
