"""`postrl train` with a critic (presets ppo, t_ppo) on the tiny model: the critic trains, its
metrics are logged, and a resumed run ends with the same policy *and* critic as an unbroken one.

Not marked slow: each test takes under 5 s on 2 CPU cores."""

import json
import shutil

import torch
from helpers import tiny_rl_config

from postrl.learner.checkpoint import list_checkpoints
from postrl.learner.critic import CRITIC_DIR
from postrl.trainers import rl

TOKEN_REWARD = [{"name": "tiny_rewards:token_id_mean"}]  # differs between samples: the critic has a target


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_ppo_trains_the_critic_and_logs_value_metrics(tmp_path):
    cfg = tiny_rl_config(tmp_path, **{"rewards": TOKEN_REWARD, "algorithm.preset": "ppo", "critic.lr": 1e-3})
    assert cfg.needs_critic
    rl.train(cfg)
    last = list_checkpoints(cfg.run_dir)[-1]
    critic = _weights(last / CRITIC_DIR)
    assert critic["score.weight"].abs().sum() > 0  # the zero-initialised head moved
    assert (last / CRITIC_DIR / "optimizer.pt").exists() and (last / "model.safetensors").exists()
    lines = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2]
    for key in ("value_loss", "value_clip_frac", "explained_variance", "values/mean", "returns/mean",
                "critic/grad_norm", "loss", "kl", "clip_frac"):
        assert key in lines[0], key
    assert lines[0]["values/mean"] == 0.0 and lines[1]["values/mean"] != 0.0  # V = 0 before the first update


def test_resume_after_step_one_gives_identical_policy_and_critic(tmp_path):
    cfg = tiny_rl_config(tmp_path, **{"rewards": TOKEN_REWARD, "algorithm.preset": "ppo", "critic.lr": 1e-3,
                                      "train.steps": 3, "train.mini_batches": 2, "checkpoint.keep_last": 3,
                                      "sampler.kwargs": {"shuffle": True}})
    rl.train(cfg)
    final = list_checkpoints(cfg.run_dir)[-1]

    killed = tmp_path / "killed"  # a run killed after step 1: only its first checkpoint exists
    shutil.copytree(cfg.run_dir, killed)
    for ckpt in list_checkpoints(killed)[1:]:
        shutil.rmtree(ckpt)
    rl.train(cfg.model_copy(update={"output_dir": str(killed)}), resume=True)
    resumed = list_checkpoints(killed)[-1]

    for part in (".", CRITIC_DIR):
        a, b = _weights(final / part), _weights(resumed / part)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    opt_a = torch.load(final / CRITIC_DIR / "optimizer.pt", weights_only=False)["optimizer"]["state"]
    opt_b = torch.load(resumed / CRITIC_DIR / "optimizer.pt", weights_only=False)["optimizer"]["state"]
    assert all(torch.equal(opt_a[i]["exp_avg"], opt_b[i]["exp_avg"]) for i in opt_a)
    steps = [json.loads(x)["step"] for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_t_ppo_runs_and_freezing_the_policy_trains_only_the_critic(tmp_path):
    # 4 new tokens: most completions of the untrained model are cut at the length limit
    cfg = tiny_rl_config(tmp_path, **{"rewards": TOKEN_REWARD, "algorithm.preset": "t_ppo", "critic.lr": 1e-3,
                                      "critic.policy_freeze_steps": 1, "train.steps": 1})
    from postrl.learner.models import load_model, load_tokenizer

    initial = load_model(cfg.model, load_tokenizer(cfg.model), torch.device("cpu")).state_dict()
    rl.train(cfg)
    last = list_checkpoints(cfg.run_dir)[-1]
    policy = _weights(last)
    assert all(torch.equal(v, initial[k]) for k, v in policy.items())  # frozen for step 1
    line = json.loads((cfg.run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert "loss" not in line and "truncated_frac" in line
    if line["truncated_frac"] < 1:  # some finished rows: the critic had targets and moved
        assert _weights(last / CRITIC_DIR)["score.weight"].abs().sum() > 0


def test_ppo_reward_rises_and_the_critic_explains_the_returns_on_a_dense_task(tmp_path):
    # measured on seeds 0-2: reward 0.05 -> 0.73-0.75 over 40 steps, explained variance ~0.5 at the end
    cfg = tiny_rl_config(tmp_path, **{
        "rewards": [{"name": "tiny_rewards:digit_fraction"}], "algorithm.preset": "ppo", "train.steps": 40,
        "train.lr": 5e-3, "critic.lr": 3e-3, "rollout.n": 8, "rollout.max_new_tokens": 4,
        "checkpoint.every": 100, "eval.limit": 1})
    rl.train(cfg)
    lines = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    rewards = [m["reward/mean"] for m in lines]
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.3, rewards
    assert sum(m["explained_variance"] for m in lines[-10:]) / 10 > 0.2
