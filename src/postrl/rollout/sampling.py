"""Batch-invariant token sampling: per-row random streams and inverse-CDF draws.

Each completion row owns a stream of uniforms keyed by `(seed, global prompt index, sample
index)`, drawn once before decoding, and step t of that row consumes uniform t. A row's tokens
therefore depend only on its key and its own logits: not on the micro-batch size, on which rows
share the batch, on finished rows being dropped, or on how prompts are sharded across workers.
(`torch.multinomial` with one shared generator gives none of this: each draw consumes the
generator in batch order.)

A draw is the inverse CDF: the first token whose cumulative filtered probability exceeds
`u * total`. The filters are those of HF `generate`, in its order: temperature, top-k (ties with
the k-th logit are kept), top-p (the smallest prefix of the sorted distribution whose mass
reaches p, always at least one token). The returned log-prob is that of the temperature-scaled,
untruncated distribution: the quantity the learner recomputes.
"""

from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """The SplitMix64 finaliser: a bijective 64-bit mix, so nearby keys give unrelated seeds."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """The 64-bit seed of row (prompt_index, sample_index) under run seed `seed`."""
    h = _splitmix64(seed & _MASK64)
    h = _splitmix64(h ^ (prompt_index & _MASK64))
    return _splitmix64(h ^ (sample_index & _MASK64))


def row_uniforms(seed: int, keys: list[tuple[int, int]], steps: int) -> torch.Tensor:
    """[B, steps] float32 uniforms in [0, 1), row b drawn from the stream of `keys[b]`.

    Per-row Python (one generator reseed per row), never per token. Drawn on the CPU so the
    streams are the same whatever device decodes.
    """
    gen = torch.Generator()
    out = torch.empty(len(keys), steps)
    for b, (prompt_index, sample_index) in enumerate(keys):
        gen.manual_seed(row_seed(seed, prompt_index, sample_index))
        torch.rand(steps, generator=gen, out=out[b])
    return out


def sample_tokens(logits: torch.Tensor, u: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0, greedy: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Next token [B] and its behaviour log-prob [B] from logits [B, V] and uniforms u [B]."""
    logits = logits.float()
    if greedy:  # the log-prob is then under the untempered distribution, as the learner uses for greedy
        logprobs = torch.log_softmax(logits, dim=-1)
        token = logprobs.argmax(-1)
        return token, logprobs.gather(-1, token[:, None]).squeeze(-1)
    logits = logits / temperature
    logprobs = torch.log_softmax(logits, dim=-1)
    filtered = logits
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(filtered, top_k, dim=-1).values[:, -1:]
        filtered = filtered.masked_fill(filtered < kth, float("-inf"))
    order = None
    if top_p < 1.0:  # sample in sorted order, where the nucleus is a prefix
        filtered, order = torch.sort(filtered, descending=True, dim=-1)
        probs = torch.softmax(filtered, dim=-1)
        drop = probs.cumsum(-1) - probs >= top_p  # mass before a token already reaches p; keeps the first
        filtered = filtered.masked_fill(drop, float("-inf"))
    index = inverse_cdf(filtered, u)
    token = index if order is None else order.gather(-1, index[:, None]).squeeze(-1)
    return token, logprobs.gather(-1, token[:, None]).squeeze(-1)


def inverse_cdf(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Index drawn from softmax(logits) [B, K] with uniforms u [B]: the first cdf entry above u * total.

    `x` is clamped strictly below the total so rounding (u * total == total) can never run past
    the end; and since cdf[i-1] <= x < cdf[i] the chosen entry has positive mass, so a -inf
    (filtered) logit is never picked.
    """
    weights = torch.exp(logits - logits.max(dim=-1, keepdim=True).values)  # unnormalised; -inf -> 0
    cdf = weights.cumsum(dim=-1)
    total = cdf[:, -1:]
    x = torch.minimum(u[:, None].to(cdf.dtype) * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, x, right=True).squeeze(-1)
