"""Success replay of single completions (trainers/arpo_replay.py `single_turn`): hand-built batches,
the rewards that come with a replayed row, JSON state, and the config checks."""

import json

import pytest
import torch
from helpers import make_batch, tiny_rl_config

from postrl.config import ConfigError
from postrl.rewards import RewardResult
from postrl.trainers.arpo_replay import EpisodeReplay


def _step(rewards, ids):
    """Groups of two rows; row b's completion is [ids[b], ids[b]], behaviour log-prob -0.1 * ids[b]."""
    batch = make_batch([0.0] * len(rewards), [b // 2 for b in range(len(rewards))], lengths=[2] * len(rewards))
    batch.rewards = None  # as in collect: rewards are set after the replay
    batch.completion_ids = torch.tensor([[i, i] for i in ids])
    batch.behavior_logprobs = torch.tensor([[-0.1 * i] * 2 for i in ids])
    batch.metadata["completion_text"] = [f"t{i}" for i in ids]
    total = torch.tensor(rewards)
    return batch, RewardResult(total, {"exact_match": total.clone(), "format": torch.full_like(total, 0.5)})


def test_an_all_failed_groups_last_completion_becomes_a_stored_success_with_its_rewards():
    replay = EpisodeReplay(capacity=2, threshold=1.0)
    batch, result = _step([1.0, 0.0, 0.0, 0.0], [11, 12, 13, 14])  # prompt 7 solved once (row 0), prompt 9 not
    out, res, metrics = replay.single_turn(batch, result, [7, 9], seed=0)
    assert out is batch and res is result  # nothing stored yet for prompt 9
    assert metrics == {"replay/replaced_groups": 0.0, "replay/stored": 1.0}

    batch, result = _step([0.0, 0.0, 0.0, 0.0], [21, 22, 23, 24])  # prompts 9 and 7, both all-failed
    out, res, metrics = replay.single_turn(batch, result, [9, 7], seed=1)
    assert metrics["replay/replaced_groups"] == 1.0  # only prompt 7 has a success
    assert out.completion_ids[:, 0].tolist() == [21, 22, 23, 11]  # group 1's last row is step 1's row 0
    assert out.group_ids.tolist() == [0, 0, 1, 1] and out.metadata["replayed"] == [False, False, False, True]
    assert out.behavior_logprobs[3].tolist() == pytest.approx([-1.1, -1.1])  # the policy that sampled it
    assert out.metadata["completion_text"] == ["t21", "t22", "t23", "t11"]
    assert res.total.tolist() == [0.0, 0.0, 0.0, 1.0]
    assert res.per_function["exact_match"].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert res.per_function["format"].tolist() == [0.5] * 4
    assert "episode_id" not in out.metadata  # single completions are not episodes


def test_state_round_trips_through_the_checkpoint_json():
    replay = EpisodeReplay(capacity=2)
    replay.single_turn(*_step([0.0, 1.0], [5, 6]), [3], seed=0)
    again = EpisodeReplay(capacity=2)
    again.load_state_dict(json.loads(json.dumps(replay.state_dict())))
    a, ra, _ = replay.single_turn(*_step([0.0, 0.0], [7, 8]), [3], seed=4)
    b, rb, _ = again.single_turn(*_step([0.0, 0.0], [7, 8]), [3], seed=4)
    assert a.completion_ids[:, 0].tolist() == b.completion_ids[:, 0].tolist() == [7, 6]
    assert a.metadata == b.metadata and torch.equal(ra.total, rb.total)


def test_config_takes_a_top_level_replay_and_refuses_what_cannot_work(tmp_path):
    cfg = tiny_rl_config(tmp_path, replay={"capacity": 3})
    assert cfg.replay.capacity == 3 and cfg.replay.threshold == 1.0
    with pytest.raises(ConfigError, match="rollout.n >= 2"):
        tiny_rl_config(tmp_path, replay={}, **{"rollout.n": 1})
    with pytest.raises(ConfigError, match="inject_reference"):
        tiny_rl_config(tmp_path, replay={}, **{"rollout.inject_reference": "answer"})
    with pytest.raises(ConfigError, match="capacity"):
        tiny_rl_config(tmp_path, replay={"capacity": 0})
    env = {"name": "tests.envs.tiny_envs:CountEnv", "kwargs": {"target": 2}, "max_total_tokens": 64}
    with pytest.raises(ConfigError, match="set env.replay instead, not both"):
        tiny_rl_config(tmp_path, replay={}, env={**env, "replay": {}}, **{"rollout.n": 2})
