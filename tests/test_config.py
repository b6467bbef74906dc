"""Config: YAML + presets + --set overrides; every error names the key and what is allowed."""

import pytest

from postrl.config import ConfigError, RLConfig, SFTConfig, load_config, parse_overrides, resolve


def test_overrides_are_parsed_as_yaml_and_set_dotted_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rollout:\n  n: 4\nalgorithm:\n  preset: rloo\n")
    cfg = load_config(path, ["rollout.n=8", "algorithm.advantage=grpo", 'rollout.stop=["\\n"]', "train.bf16=true"])
    assert cfg.rollout.n == 8 and cfg.algorithm.advantage == "grpo" and cfg.rollout.stop == ["\n"]
    assert cfg.algorithm.loss == "reinforce"  # from the preset, not overridden
    assert cfg.train.bf16 is True


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError) as e:
        resolve(RLConfig, {"rollout": {"temprature": 1.0}})
    assert "rollout.temprature" in str(e.value) and "did you mean 'temperature'" in str(e.value)


def test_wrong_type_names_the_key_and_value():
    with pytest.raises(ConfigError, match=r"`rollout.n` = 'many'"):
        resolve(RLConfig, {"rollout": {"n": "many"}})


def test_out_of_range_value_is_an_error():
    with pytest.raises(ConfigError, match="rollout.temperature"):
        resolve(RLConfig, {"rollout": {"temperature": 0}})


@pytest.mark.parametrize("key,value,kind", [
    ("algorithm.advantage", "grpoo", "advantage estimator"),
    ("algorithm.loss", "ppo", "policy loss"),
    ("sampler.name", "random", "sampler"),
    ("rollout.engine", "sglang", "rollout engine"),
])
def test_unknown_registry_name_lists_the_valid_names(key, value, kind):
    with pytest.raises(ConfigError) as e:
        resolve(RLConfig, {}, {key: value})
    assert f"unknown {kind} '{value}'" in str(e.value) and "valid names:" in str(e.value)


def test_unknown_reward_and_bad_reward_kwargs():
    with pytest.raises(ConfigError, match=r"rewards\[0\].name: unknown reward .exact."):
        resolve(RLConfig, {"rewards": [{"name": "exact"}]})
    with pytest.raises(ConfigError, match="takes no parameter 'stripp'"):
        resolve(RLConfig, {"rewards": [{"name": "exact_match", "kwargs": {"stripp": True}}]})


def test_unknown_loss_kwarg_lists_the_loss_parameters():
    with pytest.raises(ConfigError, match="its parameters are: clip_high, clip_low"):
        resolve(RLConfig, {"algorithm": {"loss_kwargs": {"clip": 0.3}}})


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'grpo'"):
        resolve(RLConfig, {"algorithm": {"preset": "grpoo"}})


def test_kl_in_reward_without_coefficient_is_rejected():
    with pytest.raises(ConfigError, match="kl_in_reward"):
        resolve(RLConfig, {"algorithm": {"kl_in_reward": True}})


def test_bad_override_syntax_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["rollout.n"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_sft_config_has_its_own_schema():
    cfg = resolve(SFTConfig, {"train": {"steps": 3}})
    assert cfg.train.steps == 3 and cfg.train.lr == 1e-5
    with pytest.raises(ConfigError, match="unknown key `rollout`"):
        resolve(SFTConfig, {"rollout": {"n": 2}})


@pytest.mark.parametrize("overrides,message", [
    # 8 prompts x 8 completions / 1 mini-batch = 64 rows: 3 learner processes cannot split them
    ({"distributed.learner_procs": 3}, "learner_procs=3 must divide the rows of every mini-batch"),
    ({"distributed.learner_procs": 2, "train.mini_batches": 3}, "train.mini_batches=3 must divide the 64 rows"),
    ({"distributed.learner_procs": 2, "distributed.max_off_policy_steps": 1}, "needs distributed.backend=ray"),
    ({"train.prefix_sharing": True, "model.gradient_checkpointing": True}, "turn off one of train.prefix_sharing"),
])
def test_incompatible_distributed_and_forward_settings_name_the_keys(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve(RLConfig, {}, overrides)


def test_rollout_importance_sampling_turns_on_with_stale_rollouts():
    assert resolve(RLConfig, {}).rollout_is == "none"
    assert resolve(RLConfig, {}, {"distributed.max_off_policy_steps": 2}).rollout_is == "token"
    assert resolve(RLConfig, {}, {"distributed.max_off_policy_steps": 2,
                                  "algorithm.rollout_is": "sequence"}).rollout_is == "sequence"


@pytest.mark.parametrize("overrides,message", [
    ({"distributed.backend": "ray"}, "not supported with it: distributed.backend='ray'"),
    ({"distributed.learner_procs": 2}, "not supported with it: distributed.learner_procs=2"),
    ({"distributed.max_off_policy_steps": 1}, "not supported with it: distributed.max_off_policy_steps=1"),
])
def test_a_critic_is_refused_outside_one_local_learner_with_the_alternatives_named(overrides, message):
    with pytest.raises(ConfigError, match=message) as e:
        resolve(RLConfig, {"algorithm": {"advantage": "gae"}}, overrides)
    assert "critic-free estimator (grpo" in str(e.value)


def test_the_critic_follows_the_estimators_needs_and_its_settings_need_one():
    assert resolve(RLConfig, {"algorithm": {"preset": "ppo"}}).needs_critic
    assert resolve(RLConfig, {"algorithm": {"advantage": "t_ppo"}}).needs_critic
    assert not resolve(RLConfig, {}).needs_critic
    with pytest.raises(ConfigError, match="critic.lr is set but algorithm.advantage='grpo' trains no value model"):
        resolve(RLConfig, {"critic": {"lr": 1e-4}})
    dumped = resolve(RLConfig, {}).model_dump(mode="json")  # a written config.yaml lists every critic key
    assert not resolve(RLConfig, dumped).needs_critic
