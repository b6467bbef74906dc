"""RolloutBatch carries the critic's fields (values, last_values, returns, value_mask) like any other."""

import torch
from helpers import make_batch

from postrl.rollout.batch import RolloutBatch


def _with_critic_fields(lengths, T):
    batch = make_batch([1.0] * len(lengths), list(range(len(lengths))), lengths=lengths, T=T)
    B = batch.size
    batch.values = torch.arange(B * T, dtype=torch.float32).view(B, T) * batch.loss_mask
    batch.last_values = torch.arange(B, dtype=torch.float32) + 0.5
    batch.returns = -batch.values
    batch.value_mask = batch.loss_mask.clone()
    return batch


def test_select_trimmed_and_to_keep_the_critic_fields_aligned():
    batch = _with_critic_fields([4, 2, 1], T=5)  # column 4 is padding in every row
    sub = batch.select([2, 1]).trimmed().to("cpu")
    assert sub.values.shape == sub.returns.shape == sub.value_mask.shape == (2, 2)  # trimmed to the longest row
    assert torch.equal(sub.values, batch.values[[2, 1], :2]) and torch.equal(sub.returns, batch.returns[[2, 1], :2])
    assert torch.equal(sub.last_values, torch.tensor([2.5, 1.5]))  # per row, not trimmed


def test_concat_pads_the_per_token_fields_and_stacks_the_per_row_ones():
    a, b = _with_critic_fields([2], T=2), _with_critic_fields([3, 1], T=3)
    both = RolloutBatch.concat([a, b])
    assert both.returns.shape == (3, 3) and both.value_mask[0].tolist() == [1.0, 1.0, 0.0]
    assert both.last_values.tolist() == [0.5, 0.5, 1.5]


def test_from_token_lists_left_pads_prompts_and_right_pads_completions():
    from postrl.rollout.batch import RolloutBatch

    b = RolloutBatch.from_token_lists([[5, 6], [7]], [[1], [2, 3, 4]], pad_id=0, behavior=[[-0.5], [-1.0, -2.0, -3.0]],
                                      group_ids=[3, 3], metadata={"finish_reason": ["stop", "length"]})
    assert b.prompt_ids.tolist() == [[5, 6], [0, 7]] and b.prompt_mask.tolist() == [[1, 1], [0, 1]]
    assert b.completion_ids.tolist() == [[1, 0, 0], [2, 3, 4]] and b.completion_mask.tolist() == [[1, 0, 0], [1, 1, 1]]
    assert b.loss_mask.tolist() == [[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    assert b.behavior_logprobs.tolist() == [[-0.5, 0.0, 0.0], [-1.0, -2.0, -3.0]]
    assert b.group_ids.tolist() == [3, 3] and b.metadata["finish_reason"] == ["stop", "length"]
    empty = RolloutBatch.from_token_lists([[5]], [[]], pad_id=0)  # keeps a [B, 1] completion column
    assert empty.completion_ids.tolist() == [[0]] and empty.completion_mask.tolist() == [[0]]
