"""Reward shaping inside `postrl train` on the tiny model: runs, metrics and exact resume.

Running normalisation statistics and GRPO-CARE's EMA reference are state the loop carries across
steps, so each of them is checked by killing a run after its first checkpoint and resuming it:
the resumed run must end with the same weights (and EMA weights) and log the same metrics.
"""

import json
import math
import shutil

import pytest
import torch
from helpers import tiny_rl_config
from safetensors.torch import load_file

from postrl.learner.checkpoint import list_checkpoints
from postrl.learner.ema import EMA_DIR, EMA_FILE
from postrl.trainers import rl


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _stable(m):
    return {k: v for k, v in m.items() if not k.startswith(("time/", "tokens_per_s", "memory/"))}


def _resume_matches(cfg, tmp_path):
    """Kill a copy of the finished run after its first checkpoint, resume it, compare."""
    killed = tmp_path / "killed"
    shutil.copytree(cfg.run_dir, killed)
    for ckpt in list_checkpoints(killed)[1:]:
        shutil.rmtree(ckpt)
    rl.train(cfg.model_copy(update={"output_dir": str(killed)}), resume=True)
    full, resumed = list_checkpoints(cfg.run_dir)[-1], list_checkpoints(killed)[-1]
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [_stable(m) for m in _metrics(killed)] == [_stable(m) for m in _metrics(cfg.run_dir)]
    return full, resumed


@pytest.mark.slow
def test_running_normalisation_bleu_and_judges_train_and_resume_exactly(tmp_path):
    cfg = tiny_rl_config(tmp_path, **{
        "rewards": [{"name": "tiny_rewards:token_id_mean", "normalize": "running", "clip": [-1.5, 1.5]},
                    {"name": "bleu", "weight": 0.5, "kwargs": {"column": "answer"}},
                    {"name": "format", "kwargs": {"pattern": r"\d"}}],
        "reward_combine": {"name": "constraints", "kwargs": {"judges": ["format"], "violation_reward": -2.0}},
        "train.steps": 3, "checkpoint.keep_last": 3})
    summary = rl.train(cfg)
    assert math.isfinite(summary["last/loss"])
    lines = _metrics(cfg.run_dir)
    for m in lines:
        assert 0.0 <= m["constraints/violation_frac"] <= 1.0
        assert m["reward/bleu/mean"] >= 0.0
    # the running statistics cover every step so far: 16 rewards per step
    state = json.loads((list_checkpoints(cfg.run_dir)[-1] / "trainer_state.json").read_text())
    assert state["reward_shaping"]["moments"]["token_id_mean"][0] == 3 * 16
    assert lines[-1]["reward_shaping/token_id_mean/std"] > 0
    _resume_matches(cfg, tmp_path)


def test_trust_weighted_model_reward_trains(tmp_path):  # two steps, a few seconds: not marked slow
    cfg = tiny_rl_config(tmp_path, **{
        "rewards": [{"name": "tiny_rewards:token_parity"}, {"name": "tiny_rewards:token_id_mean", "weight": 0.3}],
        "reward_combine": {"name": "trust", "kwargs": {"model": "token_id_mean", "anneal_steps": 10}}})
    summary = rl.train(cfg)
    assert math.isfinite(summary["last/loss"])
    lines = _metrics(cfg.run_dir)
    assert [m["trust/anneal"] for m in lines] == pytest.approx([1.0, math.exp(-0.1)])
    assert any(m["trust/active_groups"] > 0 for m in lines)  # parity splits most groups


@pytest.mark.slow
def test_consistency_bonus_with_an_ema_reference_trains_and_resumes_exactly(tmp_path):
    cfg = tiny_rl_config(tmp_path, **{
        "rewards": [{"name": "tiny_rewards:token_parity"}],
        # the whole completion is the "answer", so every row has a likelihood under the reference
        "reward_combine": {"name": "consistency", "kwargs": {"answer_pattern": "(?s)(.+)", "ema_decay": 0.5,
                                                             "ema_every": 1}},
        "train.steps": 3, "checkpoint.keep_last": 3})
    rl.train(cfg)
    lines = _metrics(cfg.run_dir)
    assert all(0.0 < m["consistency/likelihood_mean"] <= 0.95 for m in lines)
    assert any(m["consistency/bonus_frac"] > 0 for m in lines)
    assert [m["consistency/ema_updated"] for m in lines] == [1.0, 1.0, 1.0]
    full, resumed = _resume_matches(cfg, tmp_path)
    ema_full = torch.load(full / EMA_DIR / EMA_FILE, weights_only=True)
    ema_resumed = torch.load(resumed / EMA_DIR / EMA_FILE, weights_only=True)
    assert all(torch.equal(ema_full[k], ema_resumed[k]) for k in ema_full)
    # the EMA moved: it is neither the initial weights nor the policy
    first = torch.load(list_checkpoints(cfg.run_dir)[0] / EMA_DIR / EMA_FILE, weights_only=True)
    policy = load_file(str(full / "model.safetensors"))
    key = next(k for k in policy if k in ema_full and "embed" in k)
    assert not torch.equal(ema_full[key], first[key]) and not torch.equal(ema_full[key], policy[key])
