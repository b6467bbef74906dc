"""Shared-prefix forward: same log-probs, entropies and gradients as the plain forward."""

import pytest
import torch

from postrl.learner.logprobs import completion_logprobs
from postrl.learner.prefix_sharing import group_prompts, shared_prefix_logprobs
from postrl.learner.tiny import build_model, build_tokenizer
from postrl.rollout.batch import RolloutBatch

TOK = build_tokenizer()


def tiny(arch: str, attn: str = "sdpa", seed: int = 0):
    model = build_model(TOK, arch=arch, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1,
                        intermediate_size=64, init_seed=seed)
    model.set_attn_implementation(attn)
    return model.train()


def grouped_batch(seed: int, group_sizes: list[int], prompt_lens: list[int], T: int = 8, min_len: int = 1,
                  extra_pad: int = 2) -> RolloutBatch:
    """Groups of rows sharing a random prompt, shuffled, completion lengths in [min_len, T].

    Prompts are left-padded to `max(prompt_lens) + extra_pad` with varying pad ids, and
    `group_ids` are random, so only the prompt tokens tell which rows share a prompt.
    """
    g = torch.Generator().manual_seed(seed)
    rows = []
    for size, n in zip(group_sizes, prompt_lens):
        prompt = torch.randint(6, len(TOK), (n,), generator=g)
        rows += [prompt] * size
    rows = [rows[i] for i in torch.randperm(len(rows), generator=g).tolist()]
    B, P = len(rows), max(prompt_lens) + extra_pad
    prompt_ids = torch.randint(0, 6, (B, P), generator=g)  # pad ids differ between rows
    prompt_mask = torch.zeros(B, P, dtype=torch.long)
    for i, prompt in enumerate(rows):
        prompt_ids[i, P - len(prompt):] = prompt
        prompt_mask[i, P - len(prompt):] = 1
    lengths = torch.randint(min_len, T + 1, (B,), generator=g)
    lengths[0] = T  # the longest and shortest lengths always occur
    lengths[-1] = min_len
    completion_mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    completion_ids = torch.randint(6, len(TOK), (B, T), generator=g) * completion_mask
    return RolloutBatch(prompt_ids, prompt_mask, completion_ids, completion_mask, completion_mask.float(),
                        torch.zeros(B, T), group_ids=torch.randint(0, 3, (B,), generator=g))


def assert_same_as_plain(fn, model, batch, *, temperature: float, with_entropy: bool, entropy_grad: bool) -> None:
    """`fn` matches `completion_logprobs` on real tokens, and so does every parameter's gradient."""
    g = torch.Generator().manual_seed(1)
    weights = torch.randn(batch.completion_ids.shape, generator=g)
    weights_entropy = torch.randn(batch.completion_ids.shape, generator=g)
    mask = batch.completion_mask.float()
    results = []
    for f in (completion_logprobs, fn):
        model.zero_grad()
        logp, entropy = f(model, batch, temperature=temperature, with_entropy=with_entropy,
                          entropy_grad=entropy_grad)
        loss = (logp * weights * mask).sum()
        if entropy_grad:
            loss = loss + (entropy * weights_entropy * mask).sum()
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        results.append((logp * mask, None if entropy is None else entropy * mask, grads))
    (logp_ref, ent_ref, grads_ref), (logp, ent, grads) = results
    assert logp.shape == batch.completion_ids.shape and torch.isfinite(logp).all()
    torch.testing.assert_close(logp, logp_ref, atol=1e-5, rtol=1e-5)
    if with_entropy:
        torch.testing.assert_close(ent, ent_ref, atol=1e-5, rtol=1e-5)
        assert ent.requires_grad == entropy_grad
    else:
        assert ent is None
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# (seed, group sizes, prompt lengths, T, min completion length, temperature, entropy, entropy grad, attention)
CASES = [
    (0, [4, 4, 4], [3, 9, 5], 8, 1, 1.0, False, False, "sdpa"),
    (1, [4, 1, 4, 1], [6, 2, 11, 1], 6, 1, 0.7, True, False, "sdpa"),
    (2, [4, 4], [7, 4], 5, 0, 1.3, True, True, "sdpa"),  # some completions empty
    (3, [1, 1, 1], [4, 8, 2], 3, 1, 0.7, True, True, "eager"),  # singletons only
    (4, [4, 3], [5, 5], 1, 1, 1.0, True, True, "sdpa"),  # one-token completions: no second forward
]


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("case", CASES)
def test_shared_prefix_matches_plain_values_and_gradients(arch, case):
    seed, sizes, lens, T, min_len, temperature, with_entropy, entropy_grad, attn = case
    batch = grouped_batch(seed, sizes, lens, T=T, min_len=min_len)
    assert_same_as_plain(shared_prefix_logprobs, tiny(arch, attn, seed), batch, temperature=temperature,
                         with_entropy=with_entropy, entropy_grad=entropy_grad)


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
