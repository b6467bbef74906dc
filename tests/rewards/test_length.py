"""The `length` section in the loop: config checks, the inputs the hook builds, and exact resume."""

import json
import shutil
import types

import pytest
import torch
from helpers import make_batch, tiny_rl_config
from safetensors.torch import load_file

from postrl.learner.checkpoint import STATE_FILE, list_checkpoints
from postrl.rewards import RewardResult
from postrl.rewards.length import LENGTH_SHAPERS, LengthShaper
from postrl.trainers import rl
from postrl.trainers.collect import collect

PARITY = [{"name": "tiny_rewards:token_parity"}]  # a 0/1 "verifier" a random model's samples split on
ENV = {"name": "tests.envs.tiny_envs:CountEnv", "kwargs": {"target": 2}, "max_total_tokens": 64}


@pytest.mark.parametrize("overrides, message", [
    ({"length": {"name": "happ"}}, "unknown length shaper 'happ' \\(did you mean 'hapo'\\?\\); valid names: hapo"),
    ({"length": {"name": "hapo", "kwargs": {"wieght": 1}}}, "length shaper 'hapo' takes no parameter 'wieght'"),
    ({"length": {"name": "hapo", "kwargs": {"aggregate": "max"}}}, "aggregate 'min' or 'mean'"),
    ({"length": {"name": "hbpo"}}, "set rollout.budgets"),
    ({"length": {"name": "hbpo", "kwargs": {"beta": -1}}, "rollout.budgets": [2, 4]}, "beta > 0"),
    ({"length": {"name": "length_schedule"}, "algorithm.preset": "remax", "rollout.n": 2},
     "would not be length-shaped"),
    ({"length": {"name": "hapo"}, "env": ENV, "rollout.n": 2}, "cannot be used with env"),
    ({"rollout.budgets": [2, 4], "env": ENV}, "cannot be used with env"),
])
def test_bad_length_configs_are_refused_with_the_fix(tmp_path, overrides, message):
    with pytest.raises(Exception, match=message):
        tiny_rl_config(tmp_path, **overrides)


def test_the_hook_builds_the_inputs_from_the_batch():
    # 2 prompts (dataset rows 7 and 3), 2 completions each; loss_mask counts 3, 1, 2, 2 tokens
    batch = make_batch([1.0, 0.0, 1.0, 1.0], [0, 0, 1, 1], lengths=[3, 1, 2, 2])
    batch.loss_mask[3, 1] = 0  # an env token: not counted as generated
    batch.metadata["finish_reason"] = ["length", "stop", "stop", "length"]
    batch.metadata["budget"] = [4, 8, 4, 8]
    result = RewardResult(batch.rewards.clone(), {"first": torch.tensor([1.0, 0.5, 0.9, 2.0])})
    seen = {}

    def spy(inputs, state, **kw):
        seen["inputs"], seen["kw"] = inputs, kw
        state["calls"] = state.get("calls", 0) + 1
        return inputs.rewards + 1, {"x": 2.0}

    shaper = LengthShaper("hapo", {"weight": 0.5}, success_threshold=0.9, max_tokens=16, total_steps=5)
    shaper.entry = types.SimpleNamespace(fn=spy)
    metrics = shaper.apply(batch, [7, 3], result, types.SimpleNamespace(names=["first"]), step=2)
    x = seen["inputs"]
    assert x.prompt_index.tolist() == [7, 7, 3, 3] and x.group_ids.tolist() == [0, 0, 1, 1]
    assert x.correct.tolist() == [True, False, True, True]  # first reward >= 0.9
    assert x.lengths.tolist() == [3.0, 1.0, 2.0, 1.0] and x.truncated.tolist() == [True, False, False, True]
    assert x.budget.tolist() == [4.0, 8.0, 4.0, 8.0] and (x.step, x.total_steps, x.max_tokens) == (2, 5, 16)
    assert seen["kw"] == {"weight": 0.5}
    assert batch.rewards.tolist() == [2.0, 1.0, 2.0, 2.0]
    assert metrics == {"length/x": 2.0, "length/reward_delta_mean": 1.0}
    assert shaper.state_dict() == {"calls": 1}


def test_collect_applies_the_shaper_to_the_shaped_reward(tmp_path):
    cfg = tiny_rl_config(tmp_path, **{"rewards": PARITY, "length": {"name": "length_schedule"}})
    p = rl.build(cfg)
    rl.request_rollouts(p, 0)
    idx, batch = p.rollouts.get(0)
    idx, batch, result, metrics = collect(p, idx, batch, seed=0)
    from postrl.rewards.length import LengthInputs

    x = LengthInputs(result.total, result.total >= 1.0, batch.loss_mask.sum(-1), torch.zeros(batch.size).bool(),
                     torch.tensor(idx)[batch.group_ids], batch.group_ids, 0, cfg.train.steps, 4)
    want, _ = LENGTH_SHAPERS["length_schedule"](x, {})
    assert torch.allclose(batch.rewards, want) and metrics["length/length_schedule/coef"] == 1.0


def _metrics(run_dir):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in m.items() if not k.startswith(("time/", "tokens_per_s", "memory/"))} for m in lines]


def test_hapo_history_is_checkpointed_and_a_resumed_run_is_identical(tmp_path):
    # 4 prompts, 4 per step: every step revisits every prompt, so step 2's rewards read the history
    cfg = tiny_rl_config(tmp_path, **{"rewards": PARITY, "length": {"name": "hapo"}, "data.limit": 4,
                                      "train.steps": 3, "checkpoint.keep_last": 3})
    rl.train(cfg)
    full = _metrics(cfg.run_dir)
    assert full[-1]["length/hapo/known_frac"] > 0  # the history was used
    saved = json.loads((list_checkpoints(cfg.run_dir)[0] / STATE_FILE).read_text())["length_shaper"]
    assert saved["h"] and all(v >= 1 for v in saved["h"].values())
    killed = tmp_path / "killed"
    shutil.copytree(cfg.run_dir, killed)
    for ckpt in list_checkpoints(killed)[1:]:
        shutil.rmtree(ckpt)
    rl.train(cfg.model_copy(update={"output_dir": str(killed)}), resume=True)
    assert _metrics(killed) == full
    a, b = (load_file(str(list_checkpoints(d)[-1] / "model.safetensors")) for d in (cfg.run_dir, killed))
    assert all(torch.equal(a[k], b[k]) for k in a)
