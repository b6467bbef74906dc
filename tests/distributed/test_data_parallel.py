"""Data-parallel learner: 2 processes (gloo) give the weights of 1 process with the same global batch."""

import copy

import pytest
import torch

from postrl.config import OptimSection
from postrl.distributed.data_parallel import DataParallel, init_from_env, launch
from postrl.learner.learner import Learner, LossSpec
from postrl.learner.tiny import build_model, build_tokenizer
from postrl.rollout.batch import RolloutBatch


def _model():
    return build_model(build_tokenizer(), hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1,
                       intermediate_size=64, init_seed=5)


def _batch(B=8, P=3, T=5):
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    return RolloutBatch(prompt_ids=torch.randint(10, 200, (B, P), generator=g), prompt_mask=torch.ones(B, P, dtype=torch.long),
                        completion_ids=torch.randint(10, 200, (B, T), generator=g) * mask, completion_mask=mask,
                        loss_mask=mask.float(), behavior_logprobs=torch.zeros(B, T),
                        group_ids=torch.arange(B) // 4), torch.randn(B, generator=g)[:, None].expand(B, T) * mask


def _train(dp, optim):
    batch, adv = _batch()
    learner = Learner(_model(), None, optim, total_updates=4, device=torch.device("cpu"), dp=dp)
    spec = LossSpec(loss="ppo_clip", agg="token_mean")
    for step in range(2):
        learner.train_on_batch(batch, adv, spec, epochs=1, mini_batches=2, seed=step)
    return learner.state_dict()


def _rank_main(strategy, out_path):
    dp = init_from_env(strategy)
    state = _train(dp, OptimSection(lr=1e-2, micro_batch_size=1))
    if dp.is_main:
        torch.save(state, out_path)


def test_shard_takes_a_contiguous_block_per_rank():
    rows = list(range(8))
    assert DataParallel(0, 2).shard(rows) == [0, 1, 2, 3]
    assert DataParallel(1, 2).shard(rows) == [4, 5, 6, 7]
    with pytest.raises(ValueError, match="evenly"):
        DataParallel(0, 3).shard(rows)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_processes_give_the_weights_of_one_process(tmp_path, strategy):
    one = _train(None, OptimSection(lr=1e-2, micro_batch_size=2))
    launch(_rank_main, 2, strategy, tmp_path / "two.pt")
    two = torch.load(tmp_path / "two.pt")
    assert one.keys() == two.keys()
    start = _model().state_dict()
    assert any(not torch.equal(one[k], start[k]) for k in one)  # training moved the weights
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-5, rtol=1e-4)
