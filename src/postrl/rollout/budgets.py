"""HBPO budget subgroups: a rollout engine wrapper that samples each prompt's group under K token budgets.

`rollout.budgets: [b_1, ..., b_K]` splits the n completions of every prompt into K subgroups of
n / K (Hierarchical Budget Policy Optimization, arXiv 2507.15844, sec. 3.1). Subgroup k is
sampled from the prompt followed by the tokens of `rollout.budget_prompt.format(budget=b_k)`
(the paper inserts "I will answer the question within b_k tokens" after the reasoning tag), so
the model is told its budget; the learner trains on exactly those prompt tokens. The result is
ONE batch whose groups are the original prompts (group id i for prompt i, its K subgroups in
budget order) with `batch.metadata["budget"]` = b_k on every row of subgroup k, which the `hbpo`
length shaper (`rewards/length.py`) reads.

Length limit: the paper samples every subgroup up to the same response limit and lets the reward
penalise overshooting the budget, so by default each subgroup generates with
`rollout.max_new_tokens`; `rollout.budget_cap: true` instead stops subgroup k at b_k tokens (a hard
budget, as L1-Exact / ThinkPrune do), which leaves the reward's beyond-budget branch unused.

Random streams: subgroup k samples with its own seed (the step's seed for k = 0), so subgroups
never share uniforms and the batch is the same however prompts are sharded. Only the training
rollouts are wrapped: evaluation samples without a budget prompt (the paper's natural-reasoning
setting).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from postrl.rollout.batch import RolloutBatch

_SUBGROUP_SEED_STRIDE = 1_000_000_007  # seeds of subgroups k >= 1; any distinct values give unrelated streams


class BudgetEngine:
    """Wraps an engine; `generate` samples n / K completions per prompt under each budget."""

    def __init__(self, engine, tokenizer, budgets: list[int], budget_prompt: str, *, cap: bool = False):
        self.engine, self.budgets, self.cap = engine, [int(b) for b in budgets], cap
        self.suffixes = [tokenizer.encode(budget_prompt.format(budget=b), add_special_tokens=False)
                         for b in self.budgets]

    def generate(self, prompt_ids: list[list[int]], params, seed: int = 0, *, first_index: int = 0) -> RolloutBatch:
        K = len(self.budgets)
        if params.n % K:
            raise ValueError(f"rollout.budgets has {K} budgets but {params.n} completions per prompt were asked "
                             f"for; n must be divisible by the number of budgets")
        m, parts = params.n // K, []
        for k, (b, suffix) in enumerate(zip(self.budgets, self.suffixes)):
            limit = min(b, params.max_new_tokens) if self.cap else params.max_new_tokens
            sub = replace(params, n=m, max_new_tokens=limit)
            part = self.engine.generate([list(p) + suffix for p in prompt_ids], sub,
                                        (seed + k * _SUBGROUP_SEED_STRIDE) % 2**62, first_index=first_index)
            part.metadata["budget"] = [b] * part.size
            parts.append(part)
        batch = RolloutBatch.concat(parts)
        # part k holds prompt i's rows at [i*m, (i+1)*m): order rows prompt-major, then budget
        order = [k * len(prompt_ids) * m + i * m + j for i in range(len(prompt_ids)) for k in range(K) for j in range(m)]
        batch = batch.select(order)
        batch.group_ids = torch.arange(len(prompt_ids)).repeat_interleave(params.n)
        return batch

    def sync_weights(self, state) -> None:
        self.engine.sync_weights(state)

    def __getattr__(self, name):  # shares_model, cache_fallback, ... of the wrapped engine
        if name == "engine":
            raise AttributeError(name)
        return getattr(self.engine, name)


def wrap(cfg, engine, tokenizer):
    """The training engine, wrapped in a `BudgetEngine` when `rollout.budgets` is set."""
    r = cfg.rollout
    if r.budgets is None:
        return engine
    return BudgetEngine(engine, tokenizer, r.budgets, r.budget_prompt, cap=r.budget_cap)


def check_config(cfg) -> None:
    """What `rollout.budgets` needs of an `RLConfig`; errors name the key and the fix."""
    r = cfg.rollout
    if r.budgets is None:
        return
    from postrl.algorithms import ADVANTAGES

    K = len(r.budgets)
    if K == 0 or any(int(b) < 1 for b in r.budgets):
        raise ValueError(f"rollout.budgets = {r.budgets}: give a non-empty list of positive token budgets, e.g. "
                         "[512, 1024, 2048, 2560], or null for no budget subgroups")
    if r.n % K:
        raise ValueError(f"rollout.budgets has {K} budgets, so rollout.n must be divisible by {K} (each budget gets "
                         f"n / {K} completions); rollout.n is {r.n}")
    if max(r.budgets) > r.max_new_tokens:
        raise ValueError(f"rollout.budgets = {r.budgets} promises up to {max(r.budgets)} tokens but "
                         f"rollout.max_new_tokens is {r.max_new_tokens}; raise max_new_tokens or lower the budgets")
    if "{budget}" not in r.budget_prompt:
        raise ValueError(f"rollout.budget_prompt = {r.budget_prompt!r} must contain {{budget}} (the budget's "
                         "number of tokens), e.g. ' I will answer the question within {budget} tokens.'")
    if cfg.env is not None:
        raise ValueError("rollout.budgets samples single completions in budget subgroups; it cannot be used with "
                         "env (multi-turn episodes): drop rollout.budgets or the env section")
    if cfg.distributed.backend != "local":
        raise ValueError("rollout.budgets wraps the local rollout engine; distributed.backend "
                         f"{cfg.distributed.backend!r} is not supported: use distributed.backend: local")
    clash = [n for n in ("greedy_rewards", "mc_values") if n in ADVANTAGES.get(cfg.algorithm.advantage).needs]
    if clash:
        raise ValueError(f"rollout.budgets: algorithm.advantage={cfg.algorithm.advantage!r} generates extra rows "
                         f"({clash[0]}) that belong to no budget subgroup; use another estimator (grpo, rloo, ...)")
    if r.inject_reference is not None:
        raise ValueError("rollout.budgets with rollout.inject_reference: an injected reference was sampled under no "
                         "budget; drop one of them")
    from postrl.samplers import SAMPLERS

    sampler = SAMPLERS[cfg.sampler.name]
    if getattr(sampler, "allocates", False) or getattr(sampler, "rescues", False):
        raise ValueError(f"rollout.budgets: sampler.name={cfg.sampler.name!r} generates groups of other sizes "
                         f"(uneven allocation or single hinted retries), which cannot be split into {K} budget "
                         "subgroups; use another sampler or drop rollout.budgets")
