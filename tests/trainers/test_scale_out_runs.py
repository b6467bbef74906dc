"""Scale-out modes end to end: data-parallel learner processes, asynchronous rollouts, Ray workers.

Each mode is checked against the plain in-process run: same seed, same global batch, same weights
(to float tolerance), because sampling is batch-invariant and the loss normaliser is global.
"""

import json
import shutil

import pytest
import torch
from helpers import tiny_rl_config

from postrl.learner.checkpoint import list_checkpoints
from postrl.trainers import rl

pytestmark = pytest.mark.slow
LENGTH_REWARD = [{"name": "tiny_rewards:length_reward"}]


def _weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(list_checkpoints(run_dir)[-1] / "model.safetensors"))


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4)


def _cfg(tmp_path, name, **overrides):
    base = {"rewards": LENGTH_REWARD, "train.steps": 3, "train.mini_batches": 2, "train.micro_batch_size": 4,
            "output_dir": str(tmp_path / name)}
    return tiny_rl_config(tmp_path, **{**base, **overrides})


def test_two_learner_processes_train_to_the_weights_of_one(tmp_path):
    one = _cfg(tmp_path, "one")
    rl.train(one)
    two = _cfg(tmp_path, "two", **{"distributed.learner_procs": 2})
    summary = rl.train(two)
    assert summary["rl_steps"] == 3
    _assert_same_weights(_weights(one.run_dir), _weights(two.run_dir))
    assert [m["reward/mean"] for m in _metrics(one.run_dir)] == [m["reward/mean"] for m in _metrics(two.run_dir)]


def test_asynchronous_rollouts_are_one_update_stale_and_corrected(tmp_path):
    sync = _cfg(tmp_path, "sync", **{"train.steps": 4})
    lag = _cfg(tmp_path, "lag", **{"train.steps": 4, "distributed.max_off_policy_steps": 1})
    rl.train(sync)
    rl.train(lag)
    s, a = _metrics(sync.run_dir), _metrics(lag.run_dir)
    # steps 0 and 1 are both sampled from the initial weights: step 0 is identical, step 1 differs
    assert s[0]["reward/mean"] == a[0]["reward/mean"]
    assert all("rollout_is/mean_weight" in m for m in a)  # auto: token-level TIS when stale
    assert a[0]["rollout_is/truncated_frac"] == 0.0  # step 0 is on-policy: every weight is 1
    assert 0.0 < a[2]["rollout_is/mean_weight"] <= 2.0


def test_asynchronous_run_resumes_with_the_prompts_it_had_drawn(tmp_path):
    cfg = _cfg(tmp_path, "lag", **{"train.steps": 4, "distributed.max_off_policy_steps": 2,
                                   "checkpoint.keep_last": 4})
    rl.train(cfg)
    state = json.loads((list_checkpoints(cfg.run_dir)[1] / "trainer_state.json").read_text())
    assert sorted(state["pending"]) == ["2", "3"]  # drawn for steps 2 and 3, not yet trained on
    killed = tmp_path / "killed"
    shutil.copytree(cfg.run_dir, killed)
    for ckpt in list_checkpoints(killed)[2:]:
        shutil.rmtree(ckpt)
    rl.train(cfg.model_copy(update={"output_dir": str(killed)}), resume=True)
    assert [m["step"] for m in _metrics(killed)] == [1, 2, 3, 4]


def test_ray_workers_train_to_the_weights_of_the_in_process_run(tmp_path):
    pytest.importorskip("ray")
    local = _cfg(tmp_path, "local")
    rl.train(local)
    remote = _cfg(tmp_path, "ray", **{"distributed.backend": "ray", "distributed.rollout_workers": 2,
                                      "distributed.reward_workers": 1})
    rl.train(remote)
    _assert_same_weights(_weights(local.run_dir), _weights(remote.run_dir))
