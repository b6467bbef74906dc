"""Per-reward normalisation and clipping, the shaper's state, and config validation."""

import math
from types import SimpleNamespace

import pytest
import torch
from helpers import tiny_rl_config

from postrl.config import ConfigError, RLRewardSpec
from postrl.rewards.combine import RewardResult
from postrl.rewards.shaping import RewardShaper, RunningMoments, batch_moments, shape

NAN = float("nan")


def _result(**per_function):
    per = {k: torch.tensor(v, dtype=torch.float32) for k, v in per_function.items()}
    return RewardResult(torch.zeros(len(next(iter(per.values())))), per)


def _batch(group_ids):
    return SimpleNamespace(group_ids=torch.tensor(group_ids))


def test_running_moments_merge_batches_exactly():
    m = RunningMoments()
    m.update([1.0, 2.0, 3.0])
    m.update([4.0])
    # all four values: mean 2.5, unbiased var ((1.5^2 + 0.5^2) * 2) / 3 = 5/3
    assert (m.count, m.mean, m.std) == (4, 2.5, pytest.approx(math.sqrt(5 / 3)))
    m.update([])
    assert m.count == 4
    one = RunningMoments()
    one.update([7.0])
    assert (one.mean, one.std) == (7.0, 0.0)


def test_shape_normalises_then_clips_and_keeps_none():
    v = torch.tensor([1.0, 2.0, 3.0, NAN])
    mean, std = batch_moments(v)  # None is left out: mean 2, std 1
    assert (mean, std) == (2.0, 1.0)
    out = shape(v, mean, std, None)
    assert out[:3].tolist() == pytest.approx([-1.0, 0.0, 1.0]) and out[3].isnan()
    out = shape(v, mean, std, (-0.5, 0.5))
    assert out[:3].tolist() == pytest.approx([-0.5, 0.0, 0.5]) and out[3].isnan()
    assert shape(v, None, None, (1.5, 2.5))[:3].tolist() == [1.5, 2.0, 2.5]  # clip alone: raw values
    assert batch_moments(torch.tensor([NAN])) == (0.0, 0.0)
    assert batch_moments(torch.tensor([5.0])) == (5.0, 0.0)  # one value: std 0, normalised to 0


def test_running_normalisation_over_steps_and_resume_from_state():
    specs = [RLRewardSpec(name="r", normalize="running"), RLRewardSpec(name="s", weight=2.0, clip=(0.0, 0.5))]
    shaper = RewardShaper(specs)
    # step 0: r = [0, 2] -> running mean 1, std sqrt(2); s = [1, 0.25] clipped to [0.5, 0.25], x 2
    out, metrics = shaper(_result(r=[0.0, 2.0], s=[1.0, 0.25]), _batch([0, 0]), 0)
    a = 1 / math.sqrt(2)
    assert out.total.tolist() == pytest.approx([-a + 1.0, a + 0.5], abs=1e-6)
    assert metrics["reward_shaping/r/mean"] == 1.0 and metrics["reward_shaping/r/std"] == pytest.approx(math.sqrt(2))
    assert out.per_function["r"].tolist() == [0.0, 2.0]  # the raw values stay in the result
    state = shaper.state_dict()
    # step 1: r = [4, 6] -> all four values: mean 3, std sqrt((9 + 1 + 1 + 9) / 3) = sqrt(20/3)
    out1, _ = shaper(_result(r=[4.0, 6.0], s=[0.0, 0.0]), _batch([0, 0]), 1)
    sd = math.sqrt(20 / 3)
    assert out1.total.tolist() == pytest.approx([1 / sd, 3 / sd], abs=1e-6)
    # a fresh shaper loaded from the step-0 state gives the same step 1
    resumed = RewardShaper(specs)
    resumed.load_state_dict(state)
    assert torch.equal(resumed(_result(r=[4.0, 6.0], s=[0.0, 0.0]), _batch([0, 0]), 1)[0].total, out1.total)


def test_batch_normalisation_and_per_sample_rows_reuse_the_fitted_statistics():
    shaper = RewardShaper([RLRewardSpec(name="r", normalize="batch")])
    out, _ = shaper(_result(r=[1.0, 3.0, NAN]), _batch([0, 0, 0]), 0)  # mean 2, std sqrt(2)
    assert out.total[:2].tolist() == pytest.approx([-1 / math.sqrt(2), 1 / math.sqrt(2)], abs=1e-6)
    assert out.total[2] == 0.0  # None counts as 0 in the sum
    # a greedy completion scored later in the step: the batch's mean and std, nothing refitted
    greedy = shaper.per_sample(_result(r=[2.0 + math.sqrt(2)]))
    assert greedy.total.tolist() == pytest.approx([1.0], abs=1e-6)
    assert shaper.fitted["r"] == (2.0, pytest.approx(math.sqrt(2)))


def test_group_combiners_cannot_score_rows_outside_the_batch():
    shaper = RewardShaper([RLRewardSpec(name="a"), RLRewardSpec(name="b")], "trust", {"model": "b"})
    with pytest.raises(ValueError, match="cannot score rows outside the training batch"):
        shaper.per_sample(_result(a=[1.0], b=[1.0]))


# ------------------------------------------------------------------------------------- config
def _cfg(tmp_path, **overrides):
    return tiny_rl_config(tmp_path, **overrides)


def test_plain_config_builds_no_shaper(tmp_path):
    from postrl.rewards.shaping import is_plain

    assert is_plain(_cfg(tmp_path))
    assert not is_plain(_cfg(tmp_path, rewards=[{"name": "exact_match", "clip": [0, 1]}]))


@pytest.mark.parametrize("overrides, message", [
    ({"rewards": [{"name": "exact_match", "clip": [1, 0]}]}, r"clip = \[1.0, 0.0\]: give \[lo, hi\] with lo < hi"),
    ({"rewards": [{"name": "exact_match", "normalize": "global"}]}, r"rewards.0.normalize"),
    ({"reward_combine": {"name": "trusted"}}, r"unknown reward combiner 'trusted' \(did you mean 'trust'\?\)"),
    ({"reward_combine": {"name": "trust", "kwargs": {"alpha": 0.3}}}, r"takes no parameter 'alpha'"),
    ({"reward_combine": {"name": "trust"}}, r"set kwargs.model to the reward to trust-weight"),
    ({"reward_combine": {"name": "trust", "kwargs": {"model": "exact_match"}}}, r"also the outcome reward"),
    ({"reward_combine": {"name": "trust", "kwargs": {"model": "rm"}}},
     r"kwargs.model = 'rm' is not one of the rewards; their names are exact_match"),
    ({"rewards": [{"name": "exact_match"}, {"name": "format"}], "reward_combine": {"name": "constraints"}},
     r"kwargs.judges must be a non-empty list"),
    ({"rewards": [{"name": "exact_match"}, {"name": "format"}],
      "reward_combine": {"name": "constraints", "kwargs": {"judges": ["exact_match", "format"]}}},
     r"every reward is a judge"),
    ({"rewards": [{"name": "exact_match"}, {"name": "format", "normalize": "batch"}],
      "reward_combine": {"name": "constraints", "kwargs": {"judges": ["format"]}}},
     r"rewards\[1\] \(format\) is a judge .* drop its normalize/clip"),
    ({"rewards": [{"name": "exact_match"}, {"name": "format"}], "rollout.n": 1,
      "reward_combine": {"name": "trust", "kwargs": {"model": "format"}}}, r"set rollout.n >= 2"),
    ({"rewards": [{"name": "exact_match"}, {"name": "format"}], "algorithm.preset": "remax",
      "reward_combine": {"name": "trust", "kwargs": {"model": "format"}}}, r"\(greedy_rewards\) cannot be rewarded"),
    ({"reward_combine": {"name": "consistency"}, "distributed.learner_procs": 2, "train.micro_batch_size": 4},
     r"needs one local learner process"),
    ({"reward_combine": {"name": "consistency", "kwargs": {"answer_pattern": "(<answer>"}}},
     r"answer_pattern '\(<answer>' is not a valid regex"),
    ({"reward_combine": {"name": "consistency", "kwargs": {"ema_decay": 1.5}}}, r"need 0 <= ema_decay <= 1"),
])
def test_config_errors_name_the_key_and_the_fix(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(tmp_path, **overrides)


def test_raft_rewards_take_no_shaping_keys():
    from postrl.config import RaftConfig, resolve

    with pytest.raises(ConfigError, match=r"unknown key `rewards.0.normalize`"):
        resolve(RaftConfig, {"rewards": [{"name": "exact_match", "normalize": "batch"}]})


def test_a_shaper_without_normalisation_reproduces_the_reward_sets_weighted_sum():
    from postrl.rewards import RewardSet

    specs = [RLRewardSpec(name="tiny_rewards:digit_fraction", weight=2.0),
             RLRewardSpec(name="tiny_rewards:length_reward", weight=0.5)]
    completions, ids = ["a1", "22", "x"], [[1, 2], [3, 4], [5]]
    result = RewardSet(specs)(["p"] * 3, completions, ids, {})
    out, _ = RewardShaper(specs)(result, _batch([0, 0, 1]), 0)
    assert torch.equal(out.total, result.total)  # 2 * [0.5, 1, 0] + 0.5 * [2, 2, 1]
    assert out.total.tolist() == [2.0, 3.0, 0.5]
