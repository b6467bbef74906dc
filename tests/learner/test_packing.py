"""Packed forward: same log-probs, entropies and gradients as the padded one, in fewer rows."""

import random

import pytest
import torch

from learner.forward_cases import grouped_batch, tiny
from postrl.learner.packing import pack_rows, packed_logprobs


def test_pack_rows_first_fit_decreasing_by_hand():
    # longest first: 6 -> bin0, 5 -> bin1, 4 -> bin2, 3 -> bin2 (room 3), 2 -> bin1 (room 2), 1 -> bin0 (room 1)
    assert pack_rows([5, 3, 4, 2, 6, 1], capacity=7) == [[4, 5], [0, 3], [2, 1]]
    assert pack_rows([4, 4, 4], capacity=4) == [[0], [1], [2]]  # ties keep input order
    assert pack_rows([], capacity=3) == []


@pytest.mark.parametrize("seed", range(5))
def test_pack_rows_places_every_index_once_within_capacity(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 20) for _ in range(rng.randint(1, 40))]
    bins = pack_rows(lengths, capacity=20)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 20 for b in bins)
    # first fit: no item could have gone into an earlier bin, which had room when it was placed
    assert all(sum(lengths[i] for i in bins[a]) + lengths[bins[b][0]] > 20
               for b in range(len(bins)) for a in range(b))


def test_pack_rows_rejects_a_length_over_capacity():
    with pytest.raises(ValueError, match="capacity"):
        pack_rows([3, 9], capacity=8)


def test_varied_lengths_pack_into_fewer_rows():
    model = tiny("qwen2")
    batch = grouped_batch(0, [1] * 8, [2, 12, 3, 10, 4, 9, 2, 11], T=8)
    seen = []
    model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["input_ids"].shape), with_kwargs=True)
    packed_logprobs(model, batch)
    lengths = batch.prompt_mask.sum(-1) + batch.completion_lengths() - 1
    rows, width = seen[0]
    assert width == int(lengths.max())
    assert rows < batch.size and rows * width >= int(lengths.sum())


def test_batch_without_completion_tokens_still_backpropagates():
    model = tiny("qwen2")
    batch = grouped_batch(0, [2, 1], [3, 4], min_len=0)
    batch.completion_mask.zero_()
    logp, _ = packed_logprobs(model, batch)
    (logp * batch.completion_mask).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
