"""Shared batches and the equality check for the learner's fast forwards (prefix sharing, packing)."""

import torch

from postrl.learner.logprobs import completion_logprobs
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


def assert_same_as_plain(fn, model, batch, *, temperature: float, with_entropy: bool, entropy_grad: bool,
                         with_vocab_mean: bool = False) -> None:
    """`fn` matches `completion_logprobs` on real tokens, and so does every parameter's gradient
    (through the vocabulary mean too, when asked for)."""
    g = torch.Generator().manual_seed(1)
    weights = torch.randn(batch.completion_ids.shape, generator=g)
    weights_entropy = torch.randn(batch.completion_ids.shape, generator=g)
    weights_mean = torch.randn(batch.completion_ids.shape, generator=g)
    mask = batch.completion_mask.float()
    extra = {"with_vocab_mean": True} if with_vocab_mean else {}
    results = []
    for f in (completion_logprobs, fn):
        model.zero_grad()
        out = f(model, batch, temperature=temperature, with_entropy=with_entropy, entropy_grad=entropy_grad, **extra)
        assert len(out) == (3 if with_vocab_mean else 2)
        logp, entropy = out[:2]
        vocab_mean = out[2] if with_vocab_mean else None
        loss = (logp * weights * mask).sum()
        if entropy_grad:
            loss = loss + (entropy * weights_entropy * mask).sum()
        if with_vocab_mean:
            loss = loss + (vocab_mean * weights_mean * mask).sum()
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        results.append((logp * mask, None if entropy is None else entropy * mask,
                        None if vocab_mean is None else vocab_mean * mask, grads))
    (logp_ref, ent_ref, mean_ref, grads_ref), (logp, ent, mean, grads) = results
    assert logp.shape == batch.completion_ids.shape and torch.isfinite(logp).all()
    torch.testing.assert_close(logp, logp_ref, atol=1e-5, rtol=1e-5)
    if with_entropy:
        torch.testing.assert_close(ent, ent_ref, atol=1e-5, rtol=1e-5)
        assert ent.requires_grad == entropy_grad
    else:
        assert ent is None
    if with_vocab_mean:
        assert mean.shape == batch.completion_ids.shape and torch.isfinite(mean).all()
        torch.testing.assert_close(mean, mean_ref, atol=1e-5, rtol=1e-5)
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
