"""`postrl train` with an env: both layouts end to end, exact resume, config checks, episode rewards."""

import json
import shutil

import pytest
import torch
from helpers import tiny_rl_config

from postrl.learner.checkpoint import list_checkpoints
from postrl.rewards.combine import RewardSet
from postrl.trainers import rl
from postrl.trainers.env_rollout import EpisodeRewards

ENV = {"name": "tests.envs.tiny_envs:CountEnv", "kwargs": {"target": 2}, "max_total_tokens": 64}


def env_config(tmp_path, **overrides):
    return tiny_rl_config(tmp_path, **{"env": ENV, "rollout.n": 2, "rollout.max_new_tokens": 3,
                                       "train.prompts_per_step": 2, "eval.limit": 4, "eval.before": True,
                                       **overrides})


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["concat", "per_turn"])
def test_two_steps_in_each_layout(tmp_path, layout):
    cfg = env_config(tmp_path, **{"env": {**ENV, "layout": layout}, "algorithm.preset": "grpo"})
    assert cfg.rewards == []  # with an env the return is the reward unless rewards are given
    summary = rl.train(cfg)
    lines = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2]
    for key in ("env/success", "env/turns", "env/tool_calls", "env/timeouts", "env/return", "reward/env_return/mean"):
        assert key in lines[0], key
    assert lines[0]["env/turns"] == 2.0 and lines[0]["env/tool_calls"] == 2.0 and lines[0]["env/timeouts"] == 0.0
    assert summary["accuracy_before"] is not None and summary["accuracy_after"] is not None
    assert summary["eval/reward_mean"] >= 0


@pytest.mark.slow
def test_resume_is_exact(tmp_path):
    cfg = env_config(tmp_path, **{"train.steps": 4, "checkpoint.keep_last": 4, "eval.before": False,
                                  "sampler.kwargs": {"shuffle": True}})
    rl.train(cfg)
    full = _weights(list_checkpoints(cfg.run_dir)[-1])
    killed = tmp_path / "killed"
    shutil.copytree(cfg.run_dir, killed)
    for ckpt in list_checkpoints(killed)[2:]:
        shutil.rmtree(ckpt)
    rl.train(cfg.model_copy(update={"output_dir": str(killed)}), resume=True)
    resumed = _weights(list_checkpoints(killed)[-1])
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    a = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [m["env/return"] for m in a] == [m["env/return"] for m in b]


@pytest.mark.parametrize("overrides, message", [
    ({"env": {**ENV, "history": "last_k"}}, "the concat layout trains on the full history"),
    ({"env": {**ENV, "layout": "per_turn", "history": "lastk"}}, "not a history policy; valid: .*last_k"),
    ({"env": {**ENV, "layout": "per_turn"}, "algorithm.preset": "remax"}, "greedy baseline is per episode"),
    ({"env": {**ENV, "name": "tests.envs.tiny_envs:Nope"}}, "has no attribute 'Nope'"),
    ({"env": {**ENV, "kwargs": {"targte": 2}}}, "takes no parameter 'targte'"),
    ({"rollout.inject_reference": "answer"}, "rollout.inject_reference"),
    ({"rewards": [{"name": "exact_match", "normalize": "batch"}]}, "reward shaping"),
])
def test_config_refuses_what_cannot_work(tmp_path, overrides, message):
    with pytest.raises(Exception, match=message):
        env_config(tmp_path, **overrides)


def test_configured_rewards_score_the_transcript(tmp_path):
    cfg = env_config(tmp_path, rewards=[{"name": "tiny_rewards:length_reward"}])
    assert [r.name for r in cfg.rewards] == ["tiny_rewards:length_reward"]


def test_episode_rewards_hand_computed():
    """Two episodes laid out per turn (3 rows + 1 row): total = return + 2 * (transcript has 'ok')."""
    outcome = RewardSet([type("S", (), {"name": "tests.envs.tiny_envs:contains_ok", "weight": 2.0, "kwargs": {}})()])
    rewards = EpisodeRewards(outcome)
    columns = {"episode_return": [0.5, 0.5, 0.5, 1.0], "episode_success": [False] * 3 + [True],
               "episode_id": [7, 7, 7, 9], "transcript": ["a ok b"] * 3 + ["nope"], "transcript_ids": [[1]] * 4}
    from tests.envs.tiny_envs import CALLS

    CALLS.clear()
    out = rewards(["p"] * 4, ["x"] * 4, [[1]] * 4, columns)
    assert CALLS == [2]  # scored once per episode, on its transcript
    assert out.total.tolist() == [2.5, 2.5, 2.5, 1.0]
    assert out.per_function["env_success"].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert out.per_function["contains_ok"].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert rewards.names == ["env_success", "env_return", "contains_ok"]


HCPO_ENV = {**ENV, "kwargs": {"target": 3}, "max_total_tokens": 160, "layout": "per_turn", "history": "hcpo"}


@pytest.mark.slow
def test_hcpo_trains_with_dcs_compression_and_alignment_and_resumes_exactly(tmp_path, monkeypatch):
    """HiconAgent's three parts are live in `postrl train`: the context length is sampled
    (env/history_len between 1 and the turns so far), the compressed branch differs from the full
    one (alignment KL > 0), both update the weights; progress = step / steps reaches the policy."""
    from helpers import kill_and_resume

    from postrl.rollout import multiturn

    seen, real = [], multiturn.run_episodes

    def spy(*args, **kwargs):
        if not args[4].greedy:  # (evaluation plays greedy episodes)
            seen.append(kwargs["progress"])
        return real(*args, **kwargs)

    monkeypatch.setattr(multiturn, "run_episodes", spy)
    over = {"env": HCPO_ENV, "algorithm.loss": "hcpo", "train.steps": 3, "checkpoint.keep_last": 3,
            "eval.before": False}
    cfg = env_config(tmp_path / "a", **over)
    rl.train(cfg)
    assert seen == [0.0, 1 / 3, 2 / 3]  # a pure function of the step: resume-exact
    lines = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(m["env/turns"] == 3.0 for m in lines)
    # turns 0, 1, 2 see 0, 1 and tau in {1, 2} past turns: the mean is 2/3 only when every tau is 1
    assert any(m["env/history_len"] > 2 / 3 for m in lines)
    assert any(m["hcpo_align_kl"] > 0 for m in lines) and all(m["hcpo_align_kl"] >= 0 for m in lines)
    first, last = (_weights(c) for c in (list_checkpoints(cfg.run_dir)[0], list_checkpoints(cfg.run_dir)[-1]))
    assert any(not torch.equal(first[k], last[k]) for k in first)

    monkeypatch.setattr(multiturn, "run_episodes", real)
    cfg_b = env_config(tmp_path / "b", **over)
    kill_and_resume(monkeypatch, rl, "rl_step", lambda resume: rl.train(cfg_b, resume=resume))
    assert _same_last_weights(cfg.run_dir, cfg_b.run_dir)


ARPO_ENV = {**ENV, "name": "tests.envs.tiny_envs:LuckyEnv", "kwargs": {"target": 3}, "max_total_tokens": 160,
            "arpo": {"initial": 2, "beam": 1, "alpha": 1.0}, "replay": {"capacity": 2, "threshold": 1.0}}


@pytest.mark.slow
def test_arpo_branches_and_replays_in_train_and_resumes_exactly(tmp_path, monkeypatch):
    from helpers import kill_and_resume

    over = {"env": ARPO_ENV, "rollout.n": 4, "train.steps": 3, "checkpoint.keep_last": 3, "eval.before": False,
            "algorithm.preset": "grpo", "data.limit": 2}  # the same 2 prompts every step: their successes replay
    cfg = env_config(tmp_path / "a", **over)
    rl.train(cfg)
    lines = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["env/branched"] == 0.5  # alpha 1: the first tool-call turns branch until M - N = 2 are spent
    assert lines[0]["replay/replaced_groups"] == 0.0 and lines[0]["replay/stored"] > 0
    assert sum(m["replay/replaced_groups"] for m in lines) > 0  # LuckyEnv: some groups of a stored prompt all fail
    state = json.loads((list_checkpoints(cfg.run_dir)[-1] / "trainer_state.json").read_text())
    assert state["arpo_replay"]["capacity"] == 2
    assert sum(len(v) for v in state["arpo_replay"]["buffers"].values()) == lines[-1]["replay/stored"]

    cfg_b = env_config(tmp_path / "b", **over)
    kill_and_resume(monkeypatch, rl, "rl_step", lambda resume: rl.train(cfg_b, resume=resume))
    assert _same_last_weights(cfg.run_dir, cfg_b.run_dir)


@pytest.mark.parametrize("env, loss, message", [
    ({**ENV, "layout": "per_turn"}, "hcpo", "env.history='full': set env.layout: per_turn and env.history: hcpo"),
    ({**ENV}, "hcpo", "env.layout='concat'"),
    ({**HCPO_ENV, "history_kwargs": {"compress": False}}, "hcpo", "compress=false"),
    ({**ENV, "arpo": {"initial": 3}}, "ppo_clip", "env.arpo.initial=3 is more than rollout.n=2"),
    ({**ENV, "arpo": {"initial": 1, "beem": 2}}, "ppo_clip", "beem"),
])
def test_hcpo_and_arpo_config_errors(tmp_path, env, loss, message):
    with pytest.raises(Exception, match=message):
        env_config(tmp_path, **{"env": env, "algorithm.loss": loss})


def _same_last_weights(run_a, run_b) -> bool:
    a, b = (_weights(list_checkpoints(r)[-1]) for r in (run_a, run_b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
