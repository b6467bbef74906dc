"""Uneven groups (trainers/groups.py): per-group rewards, merging extra rollouts into their groups,
the step's sampling parameters, and the config checks for samplers that drop or add rows."""

import types

import pytest
import torch
from helpers import make_batch, tiny_rl_config

from postrl.config import ConfigError
from postrl.rewards import RewardResult
from postrl.samplers import SAMPLERS
from postrl.trainers.groups import carry_additions, group_rewards, merge, prompt_of, sampling_params


def test_group_rewards_takes_groups_of_any_size():
    batch = make_batch([1.0, 0.0, 0.5, 1.0, 1.0, 0.0], [0, 0, 0, 1, 2, 2])
    assert group_rewards(batch, 3) == [[1.0, 0.0, 0.5], [1.0], [1.0, 0.0]]


def test_group_rewards_can_read_the_reward_before_length_shaping():
    # a length shaper rewrote batch.rewards (a correct answer now scores 0.3); the sampler gets the task reward
    batch = make_batch([0.3, -0.5, 0.8], [0, 0, 1])
    assert group_rewards(batch, 2, values=torch.tensor([1.0, 0.0, 1.0])) == [[1.0, 0.0], [1.0]]


def test_group_rewards_of_episodes_reads_each_episodes_first_row():
    batch = make_batch([1.0, 1.0, 0.0, 0.0, 0.0], [0, 0, 0, 1, 1])
    batch.metadata["episode_id"] = [4, 4, 5, 6, 7]  # per_turn rows: episode 4 has two
    assert group_rewards(batch, 2, episodes=True) == [[1.0, 0.0], [0.0, 0.0]]


def test_merge_puts_extra_rows_after_their_groups_rows_with_their_rewards():
    batch = make_batch([0.0] * 4, [0, 0, 1, 1], lengths=[1, 2, 3, 1])
    batch.completion_ids = torch.tensor([[10, 0, 0], [11, 0, 0], [12, 0, 0], [13, 0, 0]])
    extra = make_batch([0.0] * 3, [1, 0, 1], lengths=[2, 4, 1])
    extra.completion_ids = torch.tensor([[20, 0, 0, 0], [21, 0, 0, 0], [22, 0, 0, 0]])
    result = RewardResult(torch.tensor([1.0, 0.0, 0.5, 0.0]), {"f": torch.tensor([1.0, 0.0, 0.5, 0.0])})
    more = RewardResult(torch.tensor([0.2, 0.3, 0.4]), {"f": torch.tensor([0.2, 0.3, 0.4])})
    out, res = merge(batch, result, extra, more)
    assert out.group_ids.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert out.completion_ids[:, 0].tolist() == [10, 11, 21, 12, 13, 20, 22]  # old order, then the extra ones
    assert out.completion_mask.sum(-1).tolist() == [1, 2, 4, 3, 1, 2, 1] and out.completion_ids.shape[1] == 4
    assert res.total.tolist() == pytest.approx([1.0, 0.0, 0.3, 0.5, 0.0, 0.2, 0.4])
    assert torch.equal(res.per_function["f"], res.total)


def test_extra_rollouts_reuse_their_groups_prompt_and_hint_metadata():
    batch = make_batch([0.0] * 4, [0, 0, 1, 1])
    batch.prompt_ids = torch.tensor([[0, 5, 6], [0, 5, 6], [7, 8, 9], [7, 8, 9]])
    batch.prompt_mask = torch.tensor([[0, 1, 1], [0, 1, 1], [1, 1, 1], [1, 1, 1]])
    batch.metadata.update(hint=["", "", "H", "H"], answer_prefix=["", "", "", ""], hint_tag=["", "", "icl", "icl"])
    assert prompt_of(batch, 0) == [5, 6] and prompt_of(batch, 1) == [7, 8, 9]
    gen = make_batch([0.0] * 3, [0, 1, 2])
    carry_additions(batch, gen, [1, 1, 0])
    assert gen.metadata["hint"] == ["H", "H", ""] and gen.metadata["hint_tag"] == ["icl", "icl", ""]


def test_sampling_params_follow_the_sampler(tmp_path):
    def params(**overrides):
        cfg = tiny_rl_config(tmp_path, **overrides)
        sampler = SAMPLERS[cfg.sampler.name](20, 0, **cfg.sampler.kwargs,
                                             **({"rows": [types.SimpleNamespace(prompt="p")] * 20}
                                                if "rows" in SAMPLERS.get(cfg.sampler.name).needs else {}))
        return sampling_params(types.SimpleNamespace(cfg=cfg, sampler=sampler))

    plain = params()
    assert plain.n == 4 and not plain.entropy
    assert params(**{"sampler.name": "d3s"}).entropy  # needs "token_entropy"
    xrpo = params(**{"sampler.name": "xrpo", "sampler.kwargs": {"n0": 2}})
    assert xrpo.n == 2 and not xrpo.entropy  # the first phase; the rest is allocated in the step


@pytest.mark.parametrize("overrides, match", [
    ({"sampler.name": "d3s", "rollout.engine": "vllm"}, "only the hf engine"),
    ({"sampler.name": "d3s", "algorithm.preset": "dapo"}, None),  # plain losses: fine
    ({"sampler.name": "d3s", "algorithm.loss": "cispo"}, None),
    ({"sampler.name": "xrpo", "sampler.kwargs": {"n0": 6}}, "n0=6 .* rollout.n=4"),
    ({"sampler.name": "xrpo", "sampler.kwargs": {"n0": 2}, "distributed.max_off_policy_steps": 1}, "synchronous"),
])
def test_config_checks(tmp_path, overrides, match):
    if match is None:
        tiny_rl_config(tmp_path, **overrides)
    else:
        with pytest.raises(ConfigError, match=match):
            tiny_rl_config(tmp_path, **overrides)


def test_losses_that_need_whole_groups_are_refused_with_uneven_groups(tmp_path):
    from postrl.algorithms import POLICY_LOSSES

    loss = next(e.name for e in POLICY_LOSSES if "groups" in e.needs and "reference" not in e.needs)
    for sampler in ({"sampler.name": "d3s"}, {"sampler.name": "xrpo", "sampler.kwargs": {"n0": 2}}):
        with pytest.raises(ConfigError, match="whole groups"):
            tiny_rl_config(tmp_path, **{"algorithm.loss": loss, "train.micro_batch_size": 8, **sampler})
