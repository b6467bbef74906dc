"""Presets are sparse data: every one resolves to a valid config, and user keys win."""

import pytest

from postrl.algorithms import PRESETS
from postrl.config import RLConfig, resolve


@pytest.mark.parametrize("name", PRESETS.names())
def test_every_preset_resolves_to_a_valid_config(name):
    cfg = resolve(RLConfig, {"algorithm": {"preset": name}})
    for key, value in PRESETS[name]().items():
        if key.endswith("+"):  # appended to a list: every item is there
            listed = [item.name for item in getattr(cfg, key[:-1])]
            assert all(item["name"] in listed for item in value), (key, listed)
            continue
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


def test_an_appending_preset_key_adds_to_the_users_list_and_never_replaces_it():
    # dapo appends its overlong penalty: to the default reward, or to the user's own
    default = resolve(RLConfig, {"algorithm": {"preset": "dapo"}})
    assert [r.name for r in default.rewards] == ["exact_match", "overlong_penalty"]
    mine = resolve(RLConfig, {"algorithm": {"preset": "dapo"}, "rewards": [{"name": "format"}],
                              "rollout": {"max_new_tokens": 64}})
    assert [r.name for r in mine.rewards] == ["format", "overlong_penalty"]
    assert mine.rewards[1].kwargs == {"max_tokens": 64}  # "max_new_tokens" need: L_max from the rollout
    # a reward of the same name is not added twice (and is how a user overrides or switches it off)
    off = resolve(RLConfig, {"algorithm": {"preset": "dapo"},
                             "rewards": [{"name": "exact_match"}, {"name": "overlong_penalty", "weight": 0.0}]})
    assert [(r.name, r.weight) for r in off.rewards] == [("exact_match", 1.0), ("overlong_penalty", 0.0)]
    # the caller's own list (an override value) is left as it was
    rewards = [{"name": "format"}]
    resolve(RLConfig, {"algorithm": {"preset": "dapo"}}, {"rewards": rewards})
    assert rewards == [{"name": "format"}]


def test_loop_feature_presets_match_their_papers():
    dapo = PRESETS["dapo"]()
    assert dapo["algorithm.loss_kwargs"] == {"clip_low": 0.2, "clip_high": 0.28}  # DAPO sec. 3.1
    assert dapo["algorithm.loss_agg"] == "token_mean" and dapo["algorithm.kl_coef"] == 0.0
    assert dapo["sampler.name"] == "dynamic_sampling"
    remax = PRESETS["remax"]()
    assert remax["algorithm.advantage"] == "remax" and remax["algorithm.loss"] == "reinforce"
    grpo_d = resolve(RLConfig, {"algorithm": {"preset": "grpo_d"}}).algorithm
    assert (grpo_d.kl_schedule, grpo_d.kl_coef_start, grpo_d.kl_coef) == ("linear", 0.0, 0.04)
    tempsamp = resolve(RLConfig, {"algorithm": {"preset": "tempsamp"}})
    assert tempsamp.rollout.inject_reference == "answer" and tempsamp.algorithm.advantage == "tempsamp"
