"""Evaluation: greedy pass@1 and sampled pass@k (unbiased estimator) on a prompt set."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from postrl.rollout.engines import SamplingParams
from postrl.trainers.scoring import primary_success, score_batch


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., 2021, arXiv 2107.03374):

        pass@k = 1 - C(n - c, k) / C(n, k)
    """
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def evaluate(engine, tokenizer, rows: Sequence, prompt_ids: list[list[int]], reward_set, *,
             max_new_tokens: int, stop: list[str] | None = None, ks: Sequence[int] = (),
             temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
             success_threshold: float = 1.0, seed: int = 0) -> dict[str, float]:
    """`accuracy` = greedy pass@1; `pass@k` for each k from max(ks) samples per prompt."""
    greedy = SamplingParams(n=1, max_new_tokens=max_new_tokens, stop=list(stop or []), greedy=True)
    batch = engine.generate(prompt_ids, greedy, seed=seed)
    result = score_batch(batch, rows, tokenizer, reward_set)
    ok = primary_success(result, reward_set, success_threshold)
    out = {"accuracy": float(ok.mean()), "reward_mean": float(result.total.mean()),
           "completion_len": float(batch.completion_mask.sum(-1).float().mean()), "problems": len(rows)}
    if ks:
        n = max(ks)
        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, top_k=top_k,
                                max_new_tokens=max_new_tokens, stop=list(stop or []))
        batch = engine.generate(prompt_ids, params, seed=seed + 1)
        ok = primary_success(score_batch(batch, rows, tokenizer, reward_set), reward_set, success_threshold)
        correct = torch.zeros(len(rows)).index_add_(0, batch.group_ids, ok)
        for k in sorted(set(ks)):
            out[f"pass@{k}"] = sum(pass_at_k(n, int(c), k) for c in correct.tolist()) / len(rows)
    return out
