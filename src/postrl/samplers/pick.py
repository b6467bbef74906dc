"""Seeded draws and batch picking shared by the statistical samplers.

Every draw of a sampler uses a fresh `random.Random` seeded by (seed, draw counter); the counter
is part of the sampler's state, so a restored sampler continues the exact sequence and no global
RNG is touched. A batch never repeats a prompt: `check_batch` refuses k > dataset size instead of
silently repeating rows (a curriculum that shows one prompt twice in a step doubles its weight).
`check_param` words the error for a hyper-parameter out of its range the same way for every sampler.
"""

from __future__ import annotations

import heapq
import math
import random


def check_batch(name: str, k: int, dataset_size: int) -> None:
    """A batch of k distinct prompts must fit in the dataset."""
    if k < 1:
        raise ValueError(f"{name}: asked for a batch of {k} prompts; train.prompts_per_step must be >= 1")
    if k > dataset_size:
        raise ValueError(f"{name}: a batch of train.prompts_per_step={k} prompts is larger than the "
                         f"{dataset_size} training prompts, and this sampler never repeats a prompt within a "
                         f"batch; set train.prompts_per_step <= {dataset_size} or use more data")


def check_param(name: str, key: str, value, ok: bool, valid: str) -> None:
    """Refuse `sampler.kwargs.<key>` = value unless `ok`, naming the valid range."""
    if not ok:
        raise ValueError(f"{name}: sampler.kwargs.{key}={value!r} is out of range; it must be {valid}")


def draw_rng(seed: int, counter: int) -> random.Random:
    """The generator of draw number `counter` of a sampler seeded with `seed`."""
    return random.Random(seed * 1_000_003 + counter)


def smallest(scores: list[float], k: int) -> list[int]:
    """Positions of the k smallest scores, smallest first; ties go to the earlier position."""
    return heapq.nsmallest(k, range(len(scores)), key=lambda j: (scores[j], j))


def weighted_sample(weights: list[float], k: int, rng: random.Random) -> list[int]:
    """k distinct positions drawn without replacement with probability proportional to `weights`.

    Efraimidis-Spirakis: key_j = log(u_j) / w_j with u_j ~ U(0, 1]; the k largest keys are the
    sample, so P(j is first) = w_j / sum(w) and later picks follow successive sampling. Positions of
    weight 0 come only after every positive one (in random order), so a batch is always full.
    """
    keys = []
    for j, w in enumerate(weights):
        u = 1.0 - rng.random()  # (0, 1]: log(u) is finite
        keys.append((1, math.log(u) / w) if w > 0 else (0, u))
    return heapq.nlargest(k, range(len(weights)), key=lambda j: keys[j])
