"""Shared-prefix forward: same log-probs, entropies and gradients as the plain forward."""

import pytest
import torch
from learner.forward_cases import grouped_batch, tiny

from postrl.learner.logprobs import completion_logprobs
from postrl.learner.prefix_sharing import group_prompts, shared_prefix_logprobs


def test_each_distinct_prompt_is_encoded_once():
    model = tiny("qwen2")
    batch = grouped_batch(0, [4, 4, 1], [3, 5, 3])
    seen = []
    model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["input_ids"].shape), with_kwargs=True)
    shared_prefix_logprobs(model, batch)
    # prompt pass: 3 prompts of at most 5 tokens; completion pass: 9 rows of T-1 tokens
    assert seen == [torch.Size([3, 5]), torch.Size([9, 7])]


def test_eval_without_grad_matches_plain():
    model = tiny("llama").eval()
    batch = grouped_batch(5, [4, 2], [6, 3])
    with torch.no_grad():
        ref, ref_ent = completion_logprobs(model, batch, with_entropy=True)
        logp, ent = shared_prefix_logprobs(model, batch, with_entropy=True)
    mask = batch.completion_mask
    torch.testing.assert_close(logp * mask, ref * mask, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent * mask, ref_ent * mask, atol=1e-5, rtol=1e-5)


def test_group_prompts_compares_real_tokens_not_pad_ids_or_group_ids():
    prompt_ids = torch.tensor([[0, 0, 5, 6],
                               [3, 4, 5, 6],   # same prompt as row 0 behind other pad ids
                               [0, 0, 5, 6],   # same tokens as row 0 but the 0 before is real: another prompt
                               [9, 5, 6, 7],
                               [1, 1, 5, 6]])  # row 0 again
    prompt_mask = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 1, 1]])
    first_rows, row_to_prompt = group_prompts(prompt_ids, prompt_mask)
    assert len(first_rows) == 3
    assert row_to_prompt[0] == row_to_prompt[1] == row_to_prompt[4]
    assert len({int(row_to_prompt[0]), int(row_to_prompt[2]), int(row_to_prompt[3])}) == 3
    # first_rows[k] is the first row holding prompt k
    assert sorted(first_rows.tolist()) == [0, 2, 3]
    assert (row_to_prompt[first_rows] == torch.arange(3)).all()


def test_gradient_checkpointing_in_training_is_refused():
    # transformers drops the cache inside checkpointed layers, which would cut completions off their prompt
    model = tiny("qwen2")
    model.gradient_checkpointing_enable()
    with pytest.raises(ValueError, match="gradient checkpointing"):
        shared_prefix_logprobs(model, grouped_batch(0, [2], [3]))
