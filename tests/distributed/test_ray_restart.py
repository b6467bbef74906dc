"""Ray rollout and reward workers whose process is killed (SIGKILL) are re-created and their shard
redone: the pool returns exactly the batch / scores it would have returned, sampled with the
weights version the shard was asked for; past `max_worker_restarts` the run stops with an error."""

import os
import signal
import time

import pytest
import torch
from helpers import tiny_rl_config

from postrl.config import DistributedSection, RewardSpec
from postrl.learner.models import load_model, load_tokenizer
from postrl.rewards import RewardSet
from postrl.rollout.engines import SamplingParams
from postrl.rollout.hf_engine import HFEngine

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # actor start-up imports torch + transformers


@pytest.fixture(scope="module")
def cluster():
    from postrl.distributed.ray_runtime import shutdown, start_ray

    shutdown()  # another module's cluster may be smaller
    start_ray(DistributedSection(backend="ray", rollout_workers=2, reward_workers=2))
    yield
    shutdown()


def _pid(actor) -> int:
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))  # queued behind the actor's work


def _kill(pid: int) -> None:
    """SIGKILL an actor's process, as the OOM killer or a lost node would."""
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)


def _same_rollout(a, b) -> bool:
    return (torch.equal(a.completion_mask, b.completion_mask) and torch.equal(a.group_ids, b.group_ids)
            and torch.equal(a.completion_ids * a.completion_mask, b.completion_ids * b.completion_mask)
            and torch.allclose(a.behavior_logprobs, b.behavior_logprobs, atol=1e-5, rtol=1e-5))


def test_killed_rollout_and_reward_workers_are_recreated_and_their_shards_redone(cluster, tmp_path):
    from postrl.distributed.ray_runtime import RewardPool, RolloutPool

    cfg = tiny_rl_config(tmp_path, **{"distributed.backend": "ray", "distributed.rollout_workers": 2,
                                      "distributed.max_worker_restarts": 2, "rollout.micro_batch_size": 4})
    tok = load_tokenizer(cfg.model)
    model = load_model(cfg.model, tok, torch.device("cpu")).eval()
    engine = HFEngine(model, tok, micro_batch_size=4)
    prompts = [tok.encode(t) for t in ["1+1=", "23+4=", "7*8=", "100-1=", "9="]]
    params = SamplingParams(n=3, max_new_tokens=6, temperature=1.0)

    def perturb(seed):  # weights a re-created worker (built from the config) does not have
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=gen))

    pool = RolloutPool(cfg)
    try:
        perturb(1)
        pool.sync_weights(model)
        pid = _pid(pool.workers[0])
        pending = pool.submit(prompts, params, seed=7)
        _kill(pid)  # during its generation (the tiny model needs longer than the kill)
        with pytest.warns(UserWarning, match=r"rollout worker 0 died .*re-created it and redoing its shard "
                                             r"\(re-creation 1 of at most 2\)"):
            batch = pending.result()
        assert _same_rollout(batch, engine.generate(prompts, params, seed=7))
        assert batch.metadata["weights_version"] == [1] * 15 and pool.slots.restarts == [1, 0]

        # killed while idle; the next weight sync to it is lost, the redone shard loads it anyway
        _kill(_pid(pool.workers[1]))
        perturb(2)
        pool.sync_weights(model)
        with pytest.warns(UserWarning, match="rollout worker 1 died"):
            batch = pool.generate(prompts, params, seed=8)
        assert _same_rollout(batch, engine.generate(prompts, params, seed=8))
        assert batch.metadata["weights_version"] == [2] * 15 and pool.slots.restarts == [1, 1]

        pool.slots.max_restarts = 1  # slot 0 has used its one re-creation
        _kill(_pid(pool.workers[0]))
        with pytest.raises(RuntimeError, match=r"rollout worker 0 died 2 times; distributed.max_worker_restarts=1"):
            pool.generate(prompts, params, seed=9)
    finally:
        pool.close()

    specs = [RewardSpec(name="exact_match"), RewardSpec(name="tiny_rewards:length_reward", weight=0.5)]
    completions = ["42", "41", "4x", "", "3", "777"]
    inputs = ([f"p{i}" for i in range(6)], completions, [[ord(c) for c in t] for t in completions],
              {"answer": ["42", "42", "4", "1", "3", "7"]})
    local = RewardSet(specs)(*inputs)
    pool = RewardPool(specs, 2, max_restarts=1)
    try:
        _kill(_pid(pool.workers[1]))
        with pytest.warns(UserWarning, match="reward worker 1 died"):
            remote = pool(*inputs)
        torch.testing.assert_close(remote.total, local.total, rtol=0, atol=0)
        assert local.total.abs().sum() > 0 and pool.slots.restarts == [0, 1]
        assert torch.equal(pool(*inputs).total, local.total)  # the new worker keeps serving
    finally:
        pool.close()
