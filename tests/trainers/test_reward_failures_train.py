"""`postrl train` with failing user rewards: raise stops naming the dataset row; zero and
skip_group keep it going, with the failures in metrics.jsonl and failed groups out of the update."""

import json
import textwrap

import pytest
import torch

from helpers import tiny_rl_config
from postrl.rewards.guard import RewardError
from postrl.rollout.batch import RolloutBatch
from postrl.trainers import rl
from postrl.trainers.scoring import skip_failed_groups

FUNCTIONS = textwrap.dedent('''
    import os, time

    def flaky(prompts, completions, completion_ids, **kwargs):
        """Fails (ZeroDivisionError) on completions whose token ids sum to a multiple of 3."""
        return [1.0 / (sum(ids) % 3) for ids in completion_ids]

    def hangs_once(prompts, completions, marker, **kwargs):
        """The first call ever hangs (the worker is killed at the timeout); later calls answer."""
        if not os.path.exists(marker):
            open(marker, "w").close()
            time.sleep(600)
        return [float(len(c)) for c in completions]
''')


@pytest.fixture
def fns(tmp_path):
    path = tmp_path / "failing_rewards.py"
    path.write_text(FUNCTIONS)
    return str(path)


def test_skip_failed_groups_masks_whole_groups():
    batch = RolloutBatch.from_token_lists([[1]] * 4, [[2, 3], [4], [5], [6, 7]], pad_id=0, group_ids=[0, 0, 1, 1],
                                          metadata={"reward_failed": [False, True, None, False]})
    assert skip_failed_groups(batch) == {"reward/skipped_groups": 1.0}
    assert batch.loss_mask.tolist() == [[0, 0], [0, 0], [1, 0], [1, 1]]  # group 0 out, group 1 kept
    clean = RolloutBatch.from_token_lists([[1]], [[2]], pad_id=0)
    assert skip_failed_groups(clean) == {} and torch.equal(clean.loss_mask, torch.ones(1, 1))


def test_raise_stops_the_run_naming_function_completion_and_dataset_row(tmp_path, fns):
    cfg = tiny_rl_config(tmp_path, rewards=[{"name": f"{fns}:flaky"}], **{"train.steps": 1, "rollout.n": 8})
    with pytest.raises(RewardError, match=r"reward 'flaky' raised ZeroDivisionError.*\(completion \d+ of 32.*"
                                          r"rewards\[0\].on_error: zero .* or skip_group .*\[prompt: dataset row \d+\]"):
        rl.train(cfg)


def test_zero_and_skip_group_keep_the_run_going_and_report_the_failures(tmp_path, fns):
    rewards = [{"name": f"{fns}:flaky", "on_error": "skip_group"},
               {"name": f"{fns}:hangs_once", "on_error": "zero", "timeout_s": 1.0,
                "kwargs": {"marker": str(tmp_path / "marker")}}]
    cfg = tiny_rl_config(tmp_path, rewards=rewards, **{"rollout.n": 8})
    summary = rl.train(cfg)
    assert summary["rl_steps"] == 2
    lines = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    first, second = lines[0], lines[1]
    assert first["reward/hangs_once/timeouts"] == 1.0 and first["reward/hangs_once/errors"] == 32.0
    assert second["reward/hangs_once/timeouts"] == 0.0 and second["reward/hangs_once/errors"] == 0.0
    for m in (first, second):  # ~1/3 of the 32 completions fail `flaky`; their groups are skipped
        assert 0 < m["reward/flaky/errors"] < 32 and m["reward/flaky/timeouts"] == 0.0
        assert 1 <= m["reward/skipped_groups"] <= min(4, m["reward/flaky/errors"])
