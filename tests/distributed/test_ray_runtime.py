"""Ray pools against their in-process counterparts, on one local cluster of CPU actors.

Rollout replicas must give exactly the batch of one in-process engine (sampling is keyed on the
global prompt index), reward workers the RewardSet's values, learner actors the local Learner's
weights after an update.
"""

import copy

import pytest
import torch
from helpers import tiny_rl_config

from postrl.config import DistributedSection, RewardSpec
from postrl.learner.learner import LossSpec, build_learner
from postrl.learner.models import load_model, load_tokenizer
from postrl.rewards import RewardSet
from postrl.rollout.batch import RolloutBatch
from postrl.rollout.engines import SamplingParams
from postrl.rollout.hf_engine import HFEngine
from postrl.trainers.run_dir import seed_everything

ray = pytest.importorskip("ray")

CPU = torch.device("cpu")
RAY = {"distributed.backend": "ray"}


@pytest.fixture(scope="module")
def cluster():
    from postrl.distributed.ray_runtime import shutdown, start_ray

    start_ray(DistributedSection(backend="ray", rollout_workers=2, reward_workers=2, learner_procs=2))
    yield
    shutdown()


@pytest.mark.parametrize("n, parts", [(5, 2), (7, 3), (2, 3), (0, 2), (16, 4)])
def test_shards_are_contiguous_cover_every_prompt_and_differ_by_at_most_one(n, parts):
    from postrl.distributed.ray_runtime import _spans

    spans = _spans(n, parts)
    assert [i for lo, hi in spans for i in range(lo, hi)] == list(range(n))
    sizes = [hi - lo for lo, hi in spans]
    assert len(spans) == max(1, min(n, parts)) and max(sizes) - min(sizes) <= 1


def test_workers_get_the_drivers_import_paths_and_thread_limit(tmp_path, monkeypatch):
    from postrl.distributed.ray_runtime import worker_env

    monkeypatch.syspath_prepend(str(tmp_path))  # where a `module:function` reward would live
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    env = worker_env(DistributedSection(worker_cpus=2))
    paths = env["PYTHONPATH"].split(":")
    assert paths[0] == str(tmp_path.resolve())
    assert not any("site-packages" in p for p in paths)  # the workers' interpreter has its own
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2" and env["HF_HUB_OFFLINE"] == "1"


def _assert_same_rollout(pool: RolloutBatch, local: RolloutBatch):
    assert torch.equal(pool.group_ids, local.group_ids)
    assert torch.equal(pool.prompt_mask, local.prompt_mask)
    assert torch.equal(pool.prompt_ids * pool.prompt_mask, local.prompt_ids * local.prompt_mask)
    assert torch.equal(pool.completion_mask, local.completion_mask)
    # padding positions may hold different filler ids; only real tokens count
    assert torch.equal(pool.completion_ids * pool.completion_mask, local.completion_ids * local.completion_mask)
    torch.testing.assert_close(pool.behavior_logprobs, local.behavior_logprobs, atol=1e-5, rtol=1e-5)
    assert pool.metadata["finish_reason"] == local.metadata["finish_reason"]


@pytest.mark.slow  # actor start-up imports torch + transformers
def test_rollout_pool_matches_one_in_process_engine_before_and_after_a_weight_sync(cluster, tmp_path):
    from postrl.distributed.ray_runtime import RolloutPool

    cfg = tiny_rl_config(tmp_path, **RAY, **{"distributed.rollout_workers": 2, "rollout.micro_batch_size": 4})
    tok = load_tokenizer(cfg.model)
    model = load_model(cfg.model, tok, CPU).eval()
    engine = HFEngine(model, tok, micro_batch_size=4)
    # 5 prompts of different lengths: shards of 2 and 3 prompts, each padded differently
    prompts = [tok.encode(t) for t in ["1+1=", "23+4=", "7*8=", "100-1=", "9="]]
    params = SamplingParams(n=3, max_new_tokens=6, temperature=1.0)

    pool = RolloutPool(cfg)
    try:
        before = pool.generate(prompts, params, seed=7)
        _assert_same_rollout(before, engine.generate(prompts, params, seed=7))
        assert before.metadata["weights_version"] == [0] * 15
        # a shard asked for on its own (first_index) is that shard of the whole batch
        tail = pool.generate(prompts[2:], params, seed=7, first_index=2)
        _assert_same_rollout(tail, engine.generate(prompts[2:], params, seed=7, first_index=2))

        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
        pool.sync_weights(model)
        after = pool.submit(prompts, params, seed=7).result()  # the asynchronous path
        _assert_same_rollout(after, engine.generate(prompts, params, seed=7))
        assert not torch.allclose(after.behavior_logprobs, before.behavior_logprobs)
        assert after.metadata["weights_version"] == [1] * 15

        pool.sync_weights({"not.a.weight": torch.zeros(2)})  # strict: a mismatch is an error
        with pytest.raises(RuntimeError, match="do not match"):
            pool.generate(prompts, params, seed=7)
    finally:
        pool.close()


def _reward_inputs():
    completions = ["42", "41", "4x", "", "3", "boom"]
    prompts = [f"p{i}" for i in range(len(completions))]
    ids = [[ord(c) for c in t] for t in completions]
    columns = {"answer": ["42", "42", "4", "1", None, "7"]}
    return prompts, completions, ids, columns


@pytest.mark.slow  # actor start-up imports torch + transformers
def test_reward_pool_scores_like_the_reward_set_and_reports_worker_errors(cluster, tmp_path):
    from postrl.distributed.ray_runtime import RewardPool

    specs = [RewardSpec(name="exact_match"), RewardSpec(name="tiny_rewards:length_reward", weight=0.5),
             RewardSpec(name="tiny_rewards:digit_fraction", weight=2.0)]
    inputs = _reward_inputs()
    local = RewardSet(specs)(*inputs)
    pool = RewardPool(specs, 2)
    try:
        assert pool.names == RewardSet(specs).names
        remote = pool(*inputs)
        torch.testing.assert_close(remote.total, local.total, rtol=0, atol=0)
        assert remote.per_function.keys() == local.per_function.keys()
        for name in local.per_function:
            torch.testing.assert_close(remote.per_function[name], local.per_function[name], rtol=0, atol=0,
                                       equal_nan=True)
        assert local.total.abs().sum() > 0  # the comparison is not between zeros
    finally:
        pool.close()

    bad = tmp_path / "bad_reward.py"
    bad.write_text("def checked(prompts, completions, **kw):\n"
                   "    if 'boom' in completions:\n"
                   "        raise ValueError(f'cannot score {completions[-1]!r}')\n"
                   "    return [0.0] * len(completions)\n")
    pool = RewardPool([RewardSpec(name=f"{bad}:checked")], 2)
    try:
        with pytest.raises(ValueError, match="cannot score 'boom'"):  # raised in the second worker
            pool(*inputs)
    finally:
        pool.close()


def _batch(B=8, P=3, T=5):
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    batch = RolloutBatch(prompt_ids=torch.randint(10, 200, (B, P), generator=g),
                         prompt_mask=torch.ones(B, P, dtype=torch.long),
                         completion_ids=torch.randint(10, 200, (B, T), generator=g) * mask, completion_mask=mask,
                         loss_mask=mask.float(), behavior_logprobs=torch.zeros(B, T),
                         group_ids=torch.arange(B) // 4)
    return batch, torch.randn(B, generator=g)[:, None].expand(B, T) * mask


def _train_local(cfg, batch, adv, spec):
    seed_everything(cfg.seed)
    learner = build_learner(cfg, load_tokenizer(cfg.model), CPU)
    start = {k: v.clone() for k, v in learner.state_dict().items()}
    batch.ref_logprobs = learner.logprobs(batch, reference=True)
    metrics = learner.train_on_batch(batch, adv, spec, epochs=2, mini_batches=2, seed=3)
    return start, learner.state_dict(), metrics, learner.num_parameters()


@pytest.mark.slow  # actor start-up imports torch + transformers
@pytest.mark.parametrize("procs", [1, 2])
def test_learner_group_trains_to_the_weights_of_a_local_learner(cluster, tmp_path, procs):
    from postrl.distributed.ray_runtime import LearnerGroup

    cfg = tiny_rl_config(tmp_path, **RAY, **{"distributed.learner_procs": procs, "algorithm.kl_coef": 0.05,
                                             "train.micro_batch_size": 2, "train.lr": 1e-2})
    spec = LossSpec.from_config(cfg)
    batch, adv = _batch()
    start, local_weights, local_metrics, local_params = _train_local(cfg, copy.deepcopy(batch), adv, spec)

    group = LearnerGroup(cfg)
    try:
        initial = group.state_dict()
        for k in start:
            assert torch.equal(initial[k], start[k])
        batch.ref_logprobs = group.logprobs(batch, reference=True)
        metrics = group.train_on_batch(batch, adv, spec, epochs=2, mini_batches=2, seed=3)
        weights = group.state_dict()
        assert group.num_parameters() == local_params
    finally:
        group.close()

    assert any(not torch.equal(local_weights[k], start[k]) for k in start)  # the update moved the weights
    assert weights.keys() == local_weights.keys()
    # The actors run torch with one thread (worker_cpus=1), this process with the machine's: matmul
    # reductions add in another order. Adam divides each element's step by its own gradient scale,
    # so that rounding can move a weight whose gradient is near zero by a small fraction of lr (1e-2).
    for k in weights:
        torch.testing.assert_close(weights[k], local_weights[k], atol=1e-4, rtol=1e-4)
    assert metrics.keys() == local_metrics.keys()
    for k in metrics:
        assert metrics[k] == pytest.approx(local_metrics[k], rel=1e-4, abs=1e-5), k
