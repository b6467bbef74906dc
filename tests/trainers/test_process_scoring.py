"""Process rewards in `postrl train` (trainers/process_scoring.py, the hook in trainers/rl.py)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from helpers import make_batch, tiny_rl_config
from postrl.config import ConfigError, RewardSpec
from postrl.registry import Registry
from postrl.rewards.process import ProcessRewards
from postrl.trainers import process_scoring as ps


@pytest.fixture
def fake_registry(monkeypatch):
    """Two entries: `steps` (step rewards 1, 2 at tokens 0 and 2) and `dense` (0.5 on every token)."""
    reg = Registry("process reward")

    @reg.register("steps", paper="p", summary="s")
    def steps(ctx, *, scale: float = 1.0):
        B, T = ctx.batch.completion_ids.shape
        tr = torch.zeros(B, T)
        tr[:, 0], tr[:, 2] = 1.0 * scale, 2.0 * scale
        return ProcessRewards(tr, [[1.0 * scale, 2.0 * scale]] * B, [[0, 2]] * B)

    @reg.register("dense", paper="p", summary="s")
    def dense(ctx):
        B, T = ctx.batch.completion_ids.shape
        return ProcessRewards(torch.full((B, T), 0.5), [[] for _ in range(B)], [[] for _ in range(B)])

    @reg.register("other_steps", paper="p", summary="s")
    def other_steps(ctx):
        B, T = ctx.batch.completion_ids.shape
        return ProcessRewards(torch.zeros(B, T), [[1.0]] * B, [[1]] * B)

    monkeypatch.setattr(ps, "PROCESS_REWARDS", reg)
    return reg


def _batch(token_rewards=None):
    b = make_batch([1.0, 0.0], [0, 0], lengths=[3, 3], token_rewards=token_rewards)
    b.metadata["completion_text"] = ["a", "b"]
    return b


ROWS = [SimpleNamespace(prompt="q", columns={})]


def test_weighted_token_and_step_rewards_add_up(fake_registry):
    b = _batch(token_rewards=[[0.1, 0.1, 0.1]] * 2)  # something already there (e.g. another term)
    specs = [RewardSpec(name="steps", weight=2.0), RewardSpec(name="steps", weight=1.0, kwargs={"scale": 10.0}),
             RewardSpec(name="dense", weight=-1.0)]
    metrics = ps.add_process_rewards(b, ROWS, None, specs)
    # token 0: .1 + 2*1 + 10 - .5 = 11.6; token 1: .1 - .5 = -.4; token 2: .1 + 2*2 + 20 - .5 = 23.6
    assert torch.allclose(b.token_rewards, torch.tensor([[11.6, -0.4, 23.6]] * 2))
    assert b.step_rewards == [[12.0, 24.0]] * 2  # 2*[1, 2] + [10, 20]; the dense entry gives no steps
    assert b.metadata["step_ends"] == [[0, 2]] * 2
    assert metrics["process/dense/mean"] == pytest.approx(1.5) and metrics["process/steps_mean"] == 2


def test_an_estimator_that_consumes_steps_gets_them_once(fake_registry):
    b = _batch()
    ps.add_process_rewards(b, ROWS, None, [RewardSpec(name="steps"), RewardSpec(name="dense")], consume_steps=True)
    assert torch.allclose(b.token_rewards, torch.full((2, 3), 0.5))  # only the dense-only entry
    assert b.step_rewards == [[1.0, 2.0]] * 2


def test_step_ends_must_agree(fake_registry):
    with pytest.raises(ValueError, match="must use the same step separator"):
        ps.add_process_rewards(_batch(), ROWS, None, [RewardSpec(name="steps"), RewardSpec(name="other_steps")])


def test_kl_adds_to_process_rewards():
    b = _batch(token_rewards=[[1.0, 0.0, 2.0]] * 2)
    ps.add_token_rewards(b, torch.full((2, 3), -0.25))
    assert torch.allclose(b.token_rewards, torch.tensor([[0.75, -0.25, 1.75]] * 2))
    fresh = _batch()
    ps.add_token_rewards(fresh, torch.ones(2, 3))
    assert torch.equal(fresh.token_rewards, torch.ones(2, 3))


def test_config_checks_names_kwargs_and_estimator_needs(tmp_path):
    with pytest.raises(ConfigError, match=r"process_rewards\[0\].name: unknown process reward 'prn'.*'prm'"):
        tiny_rl_config(tmp_path, process_rewards=[{"name": "prn"}])
    with pytest.raises(ConfigError, match=r"process_rewards\[0\].kwargs: process reward 'prm' takes no parameter"):
        tiny_rl_config(tmp_path, process_rewards=[{"name": "prm", "kwargs": {"agg": "min"}}])
    with pytest.raises(ConfigError, match="algorithm.advantage='prime' assigns credit from step rewards"):
        tiny_rl_config(tmp_path, **{"algorithm.advantage": "prime"})
    cfg = tiny_rl_config(tmp_path, process_rewards=[{"name": "prm", "weight": 0.5, "kwargs": {"path": "x"}}])
    assert cfg.process_rewards[0].weight == 0.5


@pytest.fixture(scope="module")
def tiny_prm(tmp_path_factory):
    from helpers import TINY_MODEL
    from postrl.config import resolve
    from postrl.trainers import prm
    from postrl.trainers.prm_config import PrmConfig

    out = tmp_path_factory.mktemp("prm")
    cfg = resolve(PrmConfig, {"output_dir": str(out), "model": TINY_MODEL, "data": {"limit": 16},
                              "train": {"steps": 2, "batch_size": 4, "micro_batch_size": 4, "lr": 1e-2},
                              "eval": {"limit": 4}, "logging": {"progress": False}})
    return prm.train(cfg)["model_dir"]


@pytest.mark.slow
@pytest.mark.parametrize("advantage", ["grpo", "prime"])
def test_train_two_steps_with_a_prm_puts_rewards_on_step_ends(tmp_path, monkeypatch, tiny_prm, advantage):
    from postrl.algorithms import kl_penalty
    from postrl.rewards.process import scatter_step_rewards
    from postrl.trainers import rl

    seen = []
    real = rl.ADVANTAGES

    class Spy:  # the estimator's registry entry, wrapped to keep the batch it is called with
        def get(self, name):
            entry = real.get(name)

            def fn(batch, *args, **kwargs):
                seen.append(batch)
                return entry.fn(batch, *args, **kwargs)

            return dataclasses.replace(entry, fn=fn)

    monkeypatch.setattr(rl, "ADVANTAGES", Spy())
    cfg = tiny_rl_config(tmp_path, process_rewards=[{"name": "prm", "weight": 2.0,
                                                     "kwargs": {"path": tiny_prm, "aggregate": "none"}}],
                         **{"rollout.max_new_tokens": 8, "algorithm.kl_coef": 0.1, "algorithm.kl_in_reward": True,
                            "algorithm.advantage": advantage})
    summary = rl.train(cfg)
    assert summary["rl_steps"] == 2 and len(seen) == 2
    for batch in seen:
        kl = -0.1 * kl_penalty(batch.behavior_logprobs, batch.ref_logprobs, "k3") * batch.loss_mask
        process = batch.token_rewards - kl  # what is left after the KL term: the process rewards
        ends = batch.metadata["step_ends"]
        assert all(e and e[-1] == int(n) - 1 for e, n in zip(ends, batch.completion_mask.sum(-1)))
        placed = scatter_step_rewards(batch.step_rewards, ends, tuple(process.shape))
        assert all(0 < s / 2.0 < 1 for row in batch.step_rewards for s in row)  # weight 2 x probabilities
        if advantage == "grpo":  # the step rewards sit on the step ends, weighted, next to the KL term
            assert torch.allclose(process, placed, atol=1e-5)
        else:  # the step-level estimator reads them itself: only the KL term is in token_rewards
            assert torch.allclose(process, torch.zeros_like(process), atol=1e-6)
