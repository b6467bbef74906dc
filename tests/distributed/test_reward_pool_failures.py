"""Reward failures through the Ray reward pool: skip_group flags come back from every worker's shard,
failure counts are summed over the workers, and a raise names the function."""

import textwrap

import pytest

from postrl.config import DistributedSection, RLRewardSpec
from postrl.rewards.guard import RewardError

ray = pytest.importorskip("ray")

FLAKY = textwrap.dedent('''
    def flaky(prompts, completions, **kwargs):
        return [1.0 / (c != "b") for c in completions]
''')


@pytest.mark.slow  # actor start-up imports torch + transformers
def test_skip_group_flags_and_counts_come_back_from_the_workers(tmp_path):
    from postrl.distributed.ray_runtime import RewardPool, shutdown, start_ray

    path = tmp_path / "pool_flaky.py"
    path.write_text(FLAKY)
    start_ray(DistributedSection(backend="ray", rollout_workers=1, reward_workers=2, learner_procs=1))
    try:
        pool = RewardPool([RLRewardSpec(name=f"{path}:flaky", on_error="skip_group")], 2)
        out = pool(["p"] * 4, ["a", "b", "c", "b"], None, {})  # shards [a, b] and [c, b]
        assert out.failed.tolist() == [False, True, False, True]
        assert pool.take_failure_counts() == {"reward/flaky/errors": 2.0, "reward/flaky/timeouts": 0.0}
        pool.close()
        pool = RewardPool([RLRewardSpec(name=f"{path}:flaky")], 2)
        with pytest.raises(RewardError, match=r"reward 'flaky' raised ZeroDivisionError.*completion 2 of 2"):
            pool(["p"] * 4, ["a", "b", "c", "d"], None, {})
        pool.close()
    finally:
        shutdown()
