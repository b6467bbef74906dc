"""Groups that are not all rollout.n rows: the step's rollout parameters, uneven allocation, per-group rewards.

A sampler may split the rollout budget unevenly (`allocates`, XRPO) or drop rows after the
advantages (`drops_rows`, D3S); then a step's groups differ in size and its row count varies.

    sampling_params(p)       the step's SamplingParams: the sampler's first_n(rollout.n) completions
                             per prompt, per-token entropies when the sampler needs "token_entropy"
    allocate(p, ...)         XRPO's in-step allocation: the remaining budget k * n - rows, over the
                             sampler's phases, generated (seeded from the step seed), scored and merged
                             into the prompts' groups; logs `allocation/...`
    group_rewards(batch, k)  per group, the rewards of its completions (episodes for env batches),
                             whatever the group sizes: what `sampler.update` receives
    check_config(cfg)        settings that need whole, equal groups or a fixed row count, refused by key

Estimators built on `group_stats` (grpo, rloo, ...) take groups of any size; a loss that needs
"groups" cuts micro-batches by rollout.n and is refused with uneven groups.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from postrl.rewards import RewardResult
from postrl.rollout.batch import RolloutBatch
from postrl.rollout.engines import SamplingParams
from postrl.samplers.base import SAMPLERS, Addition

ALLOCATION_SEED = 15_485_863  # offsets the step seed for allocation rounds (refills: 104_729 * round, rescues: 7_727)


def sampling_params(p) -> SamplingParams:
    """The step's rollout parameters, as the sampler asks for them."""
    cfg = p.cfg
    params = SamplingParams.from_config(cfg.rollout, n=p.sampler.first_n(cfg.rollout.n))
    if "token_entropy" in SAMPLERS.get(cfg.sampler.name).needs:
        params = replace(params, entropy=True)
    return params


def group_rewards(batch: RolloutBatch, n_groups: int, *, episodes: bool = False,
                  values: torch.Tensor | None = None) -> list[list[float]]:
    """rewards_G[g]: the rewards of group g's completions (env batches: one per episode, its first row).
    `values` [B] replaces `batch.rewards`: the trainer passes the reward before length shaping, so a
    sampler's pass/fail threshold is not moved by a length bonus or penalty."""
    rows = torch.arange(batch.size)
    if episodes:
        from postrl.trainers.env_rollout import episode_rows

        rows = torch.tensor(episode_rows(batch), dtype=torch.long)
    rewards, groups = (batch.rewards if values is None else values)[rows], batch.group_ids[rows]
    return [rewards[groups == g].tolist() for g in range(n_groups)]


def allocate(p, idx: list[int], batch: RolloutBatch, result: RewardResult, seed: int, step: int = 0):
    """The sampler's extra rollouts, merged into their groups. Returns (batch, result, metrics)."""
    from postrl.trainers.collect import score  # collect imports this module

    budget = len(idx) * p.cfg.rollout.n - batch.size
    phases = max(int(getattr(p.sampler, "phases", 1)), 1)
    params = replace(sampling_params(p), n=1, progress=step / p.cfg.train.steps)
    extra_total = 0
    for phase in range(phases):
        share = (budget - extra_total) // (phases - phase)
        if share <= 0:
            continue
        rewards_G = [result.total[batch.group_ids == g].tolist() for g in range(len(idx))]
        extra = p.sampler.allocate(list(idx), rewards_G, share)
        if len(extra) != len(idx) or any(e < 0 for e in extra) or sum(extra) > share:
            raise RuntimeError(f"sampler {p.cfg.sampler.name!r}: allocate returned {extra} for {len(idx)} groups "
                               f"and a budget of {share}")
        groups = [g for g, e in enumerate(extra) for _ in range(e)]
        if not groups:
            continue
        gen = p.rollouts.generate([prompt_of(batch, g) for g in groups], params,
                                  (seed + ALLOCATION_SEED * (phase + 1)) % 2**62)
        carry_additions(batch, gen, groups)
        scored = score(p, [idx[g] for g in groups], gen)
        gen.group_ids = torch.tensor(groups, dtype=torch.long)
        batch, result = merge(batch, result, gen, scored.result)
        extra_total += len(groups)
    sizes = torch.bincount(batch.group_ids, minlength=len(idx)).float()
    return batch, result, {"allocation/extra_rollouts": float(extra_total),
                           "allocation/group_size_max": float(sizes.max()),
                           "allocation/group_size_min": float(sizes.min())}


def prompt_of(batch: RolloutBatch, g: int) -> list[int]:
    """The prompt tokens group g was sampled from (hints, answer prefixes and all)."""
    r = int((batch.group_ids == g).nonzero()[0, 0])
    return batch.prompt_ids[r][batch.prompt_mask[r].bool()].tolist()


def carry_additions(batch: RolloutBatch, gen: RolloutBatch, groups: list[int]) -> None:
    """Give the extra rows their group's hint metadata (the rewards read the answer prefix)."""
    if "hint" not in batch.metadata:
        return
    from postrl.trainers import hints

    first = {g: int((batch.group_ids == g).nonzero()[0, 0]) for g in set(groups)}
    m = batch.metadata
    hints.mark(gen, [Addition(hint=m["hint"][first[g]] or "", answer_prefix=m["answer_prefix"][first[g]] or "",
                              tag=m["hint_tag"][first[g]] or "") for g in groups])


def merge(batch: RolloutBatch, result: RewardResult, extra: RolloutBatch, extra_result: RewardResult):
    """batch + extra rows (group ids already set), rows of a group together in their old order."""
    merged = RolloutBatch.concat([batch, extra])
    total = torch.cat([result.total, extra_result.total.to(result.total)])
    per_function = {k: torch.cat([v, extra_result.per_function[k].to(v)]) for k, v in result.per_function.items()}
    order = torch.argsort(merged.group_ids, stable=True)
    return merged.select(order), RewardResult(total[order], {k: v[order] for k, v in per_function.items()})


def check_config(cfg) -> None:
    """Refuse, by key, what uneven groups or a varying row count cannot work with."""
    from postrl.algorithms import POLICY_LOSSES

    entry = SAMPLERS.get(cfg.sampler.name)
    sampler, name = entry.fn, cfg.sampler.name
    uneven = getattr(sampler, "allocates", False) or getattr(sampler, "drops_rows", False)
    if "token_entropy" in entry.needs:
        if cfg.rollout.engine != "hf":
            raise ValueError(f"sampler.name={name!r} reads per-token entropies, which only the hf engine returns; "
                             f"rollout.engine is {cfg.rollout.engine!r}: set rollout.engine: hf")
        if cfg.env is not None:
            raise ValueError(f"sampler.name={name!r} reads per-token entropies of single completions; it does not "
                             "work with env: (episodes). Drop the env section or choose another sampler")
    if getattr(sampler, "allocates", False):
        sampler.check_rollouts(cfg.rollout.n, cfg.sampler.kwargs)
        if cfg.distributed.max_off_policy_steps:
            raise ValueError(f"sampler.name={name!r} generates more rollouts inside the step from its first ones, "
                             "which needs synchronous rollouts; set distributed.max_off_policy_steps: 0")
    if not uneven:
        return
    what = "gives prompts different numbers of rollouts" if getattr(sampler, "allocates", False) else \
        "drops rollouts after the advantages"
    loss = cfg.algorithm.loss
    if "groups" in POLICY_LOSSES.get(loss).needs:
        raise ValueError(f"algorithm.loss={loss!r} needs every micro-batch to hold whole groups of rollout.n rows; "
                         f"sampler.name={name!r} {what}, so groups differ in size: choose another loss (e.g. grpo)")
    if cfg.distributed.learner_procs > 1:
        raise ValueError(f"sampler.name={name!r} {what}, so a step's row count varies and cannot be split evenly "
                         "across learner processes; set distributed.learner_procs: 1")
