"""`postrl train` with the archer preset: the off-policy critic (learner/critic_replay.py) warms up
before the policy moves, replays past turns, is checkpointed with its buffer and target critic, and a
killed-and-resumed run ends exactly where an unbroken one does. Multi-turn (CountEnv, 2 turns per
episode, both layouts) and a single-turn task."""

import json

import pytest
import torch
from helpers import kill_and_resume, tiny_rl_config
from safetensors.torch import load_file

from postrl.learner.checkpoint import list_checkpoints
from postrl.learner.critic import CRITIC_DIR
from postrl.learner.critic_replay import BUFFER_FILE, REPLAY_DIR, TARGET_FILE
from postrl.learner.models import load_model, load_tokenizer
from postrl.trainers import rl

ENV = {"name": "tests.envs.tiny_envs:CountEnv", "kwargs": {"target": 2}, "max_total_tokens": 64}
TOKEN_REWARD = [{"name": "tiny_rewards:token_id_mean"}]


def archer_config(tmp_path, layout, **overrides):
    # one critic-only warm-up step (the preset's 20 would freeze the policy for the whole test)
    # token_id_mean (added to the env return on the transcript) rewards every step, so the critic
    # learns something in its warm-up step and the policy then gets non-zero advantages
    base = {"algorithm.preset": "archer", "critic.policy_freeze_steps": 1, "critic.lr": 1e-3,
            "rewards": TOKEN_REWARD}
    if layout is not None:  # else single-turn arithmetic: every completion is one terminal turn
        base.update({"env": {**ENV, "layout": layout}, "rollout.n": 2, "rollout.max_new_tokens": 3,
                     "train.prompts_per_step": 2, "eval.limit": 4})
    return tiny_rl_config(tmp_path, **{**base, **overrides})


@pytest.mark.parametrize("layout", ["concat", None])  # per_turn + a critic: refused by env_rollout.check_config
def test_two_archer_steps_warm_up_the_critic_then_replay(tmp_path, layout):
    cfg = archer_config(tmp_path, layout)
    assert cfg.critic.vf_clip is None and cfg.critic.target_tau == 0.1 and cfg.critic.replay_capacity == 10000
    initial = load_model(cfg.model, load_tokenizer(cfg.model), torch.device("cpu")).state_dict()
    rl.train(cfg)
    one, two = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    turns = 16 if layout is None else 8  # 4 prompts x 4 samples x 1 turn; 2 prompts x 2 episodes x 2 turns
    assert (one["critic/transitions"], one["critic/replayed"], one["critic/replay_size"]) == (turns, 0, turns)
    assert (two["critic/transitions"], two["critic/replayed"], two["critic/replay_size"]) == (turns, turns, 2 * turns)
    assert "loss" not in one and "loss" in two  # step 1 trains only the critic (warm-up)
    ckpts = list_checkpoints(cfg.run_dir)
    first = load_file(str(ckpts[0] / "model.safetensors"))
    assert all(torch.equal(v, initial[k]) for k, v in first.items())  # the frozen policy did not move
    last = load_file(str(ckpts[-1] / "model.safetensors"))
    assert any(not torch.equal(v, initial[k]) for k, v in last.items())
    critic = load_file(str(ckpts[-1] / CRITIC_DIR / "model.safetensors"))
    target = torch.load(ckpts[-1] / REPLAY_DIR / TARGET_FILE, weights_only=True)
    assert critic["score.weight"].abs().sum() > 0 and target["score.weight"].abs().sum() > 0
    assert not torch.equal(critic["score.weight"], target["score.weight"])  # tau 0.1: the target lags
    buffer = torch.load(ckpts[-1] / REPLAY_DIR / BUFFER_FILE, weights_only=True)
    assert buffer["added"] == len(buffer["items"]) == 2 * turns


@pytest.mark.slow
def test_killed_and_resumed_archer_run_ends_with_the_same_policy_critic_target_and_buffer(tmp_path, monkeypatch):
    def run(name):
        return archer_config(tmp_path / name, "concat", **{"train.steps": 3, "checkpoint.keep_last": 3,
                                                          "sampler.kwargs": {"shuffle": True}})

    full = run("full")
    rl.train(full)
    broken = run("broken")
    kill_and_resume(monkeypatch, rl, "rl_step", lambda resume: rl.train(broken, resume=resume), kill_at=3)
    a, b = list_checkpoints(full.run_dir)[-1], list_checkpoints(broken.run_dir)[-1]
    assert a.name == b.name == "step_000003"
    for part in ("model.safetensors", f"{CRITIC_DIR}/model.safetensors"):
        x, y = load_file(str(a / part)), load_file(str(b / part))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), part
    x, y = (torch.load(c / REPLAY_DIR / TARGET_FILE, weights_only=True) for c in (a, b))
    assert all(torch.equal(x[k], y[k]) for k in x)
    x, y = (torch.load(c / REPLAY_DIR / BUFFER_FILE, weights_only=True) for c in (a, b))
    assert x["added"] == y["added"] == 24 and len(x["items"]) == len(y["items"])
    for s, t in zip(x["items"], y["items"]):
        assert torch.equal(s[0], t[0]) and s[1:4] == t[1:4]
        assert (s[4] is None and t[4] is None) or torch.equal(s[4], t[4])


def test_replay_settings_need_an_off_policy_critic_estimator(tmp_path):
    with pytest.raises(Exception, match="critic.target_tau is set but algorithm.advantage='gae' trains its critic"):
        tiny_rl_config(tmp_path, **{"algorithm.preset": "ppo", "critic.target_tau": 0.5})
    with pytest.raises(Exception, match="critic.replay_capacity is set but algorithm.advantage='grpo'"):
        tiny_rl_config(tmp_path, **{"algorithm.preset": "grpo", "critic.replay_capacity": 5})
