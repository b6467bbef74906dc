"""Prompt additions from the sampler: hinted prompts, answer prefixes and hinted rescues.

A sampler with `decorates = True` (GHPO, DR-PO, CLPO) adds an `Addition` to each drawn row: a `prompt`
text that replaces the row's question (a chat prompt: its last user message; CLPO's restructured
problems, judged against the row's own answer), a `hint` appended to the prompt (a chat prompt: to its
last user message) before the prompt is rendered and tokenised by the ordinary encoder
(`data.encode_prompts`), and an `answer_prefix` whose tokens (encoded without special tokens) follow
the templated prompt. All are prompt tokens, so the learner never trains on them; `score_batch`
prepends the prefix to the decoded completion, so the rewards judge the whole answer (reward functions
still get the dataset prompt, without the hint or rewrite, and `completion_ids` / `completion_text` stay
the sampled tokens). Rows without an addition keep their cached prompt ids.

    prompts_for(p, idx)  the step's (and each refill's) prompt ids + additions
    mark(batch, adds)    per-row metadata "hint", "answer_prefix", "hint_tag", "rewritten_prompt"
                         (group g <- adds[g])
    finish(...)          after scoring: a rescuing sampler's hinted retries (Scaf-GRPO), then the
                         `hints/...` metrics

Additions need synchronous single-turn rollouts; `check_config` refuses the rest by name.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from postrl.data import DataError, encode_prompts
from postrl.rewards import RewardResult
from postrl.rollout.batch import RolloutBatch
from postrl.rollout.engines import SamplingParams
from postrl.samplers.base import Addition
from postrl.trainers.scoring import score_batch

RESCUE_SEED = 7_727  # offsets the step seed for rescue generations (refills use 104_729 * round)


def prompts_for(p, idx: list[int]) -> tuple[list[list[int]], list[Addition] | None]:
    """Prompt ids of rows `idx` (with the sampler's additions when it decorates) and the additions."""
    if not p.sampler.decorates:
        return [p.train_ids[i] for i in idx], None
    additions = p.sampler.decorate(list(idx))
    if len(additions) != len(idx):
        raise RuntimeError(f"sampler {p.cfg.sampler.name!r}: decorate returned {len(additions)} additions for "
                           f"{len(idx)} rows")
    return encode_with(p, idx, additions), additions


def encode_with(p, idx: list[int], additions: list[Addition]) -> list[list[int]]:
    """Prompt ids of rows `idx`, each with its addition; rows without one reuse `p.train_ids`."""
    ids = [list(p.train_ids[i]) for i in idx]
    hinted = [j for j, a in enumerate(additions) if a.hint or a.prompt]
    if hinted:
        rows = [with_hint(with_prompt(p.train_rows[idx[j]], additions[j].prompt), additions[j].hint) for j in hinted]
        try:
            encoded, kept = encode_prompts(p.tokenizer, rows, p.cfg.data)
        except DataError as e:
            raise DataError(f"{e} (the prompt includes the hint of sampler {p.cfg.sampler.name!r})") from None
        if len(kept) != len(rows):  # data.long_prompts: skip drops rows silently; a hint must not
            raise DataError(f"sampler {p.cfg.sampler.name!r}: a hinted or rewritten prompt is longer than "
                            f"data.max_prompt_tokens={p.cfg.data.max_prompt_tokens}; raise data.max_prompt_tokens")
        for j, row_ids in zip(hinted, encoded):
            ids[j] = row_ids
    for j, a in enumerate(additions):
        if a.answer_prefix:
            ids[j] = ids[j] + p.tokenizer.encode(a.answer_prefix, add_special_tokens=False)
    return ids


def with_hint(row, hint: str):
    """A copy of dataset row `row` whose prompt ends with `hint` (chat: the last user message)."""
    return _edit_question(row, lambda text: text + hint, "a hint can only be appended to text content")


def with_prompt(row, text: str):
    """A copy of dataset row `row` whose question is `text` (chat: the last user message's content);
    `row` itself when `text` is empty."""
    if not text:
        return row
    return _edit_question(row, lambda _: text, "only text content can be rewritten")


def _edit_question(row, edit, refusal: str):
    """A copy of `row` with `edit` applied to its question: the prompt string, or the content of the
    last user message (the last message when none is a user's) of a chat prompt."""
    prompt = row.prompt
    if isinstance(prompt, str):
        return replace(row, prompt=edit(prompt))
    users = [k for k, m in enumerate(prompt) if m.get("role") == "user"]
    k = users[-1] if users else len(prompt) - 1
    if not isinstance(prompt[k].get("content"), str):
        raise DataError(f"row {row.index + 1}: {refusal}; message {k} of the prompt has non-text content")
    messages = [dict(m) for m in prompt]
    messages[k]["content"] = edit(messages[k]["content"])
    return replace(row, prompt=messages)


def mark(batch: RolloutBatch, additions: list[Addition] | None) -> None:
    """Per-row metadata of the additions of a generated batch (group g was prompted with additions[g])."""
    if additions is None:
        return
    of_row = [additions[g] for g in batch.group_ids.tolist()]
    batch.metadata["hint"] = [a.hint for a in of_row]
    batch.metadata["answer_prefix"] = [a.answer_prefix for a in of_row]
    batch.metadata["hint_tag"] = [a.tag for a in of_row]
    batch.metadata["rewritten_prompt"] = [a.prompt for a in of_row]


def finish(p, idx: list[int], batch: RolloutBatch, result: RewardResult, seed: int, step: int = 0):
    """After scoring: a rescuing sampler's hinted retries, then the hint metrics.
    Returns (batch, result, metrics)."""
    metrics: dict[str, float] = {}
    if p.sampler.rescues:
        batch, result, metrics = rescue(p, idx, batch, result, seed, step)
    metrics.update(hint_metrics(batch, p.cfg.sampler.name))
    return batch, result, metrics


def rescue(p, idx: list[int], batch: RolloutBatch, result: RewardResult, seed: int, step: int = 0):
    """Scaf-GRPO's rescue: for every group the sampler plans tries for, one completion per planned
    addition (all generated together); where `sampler.rescued` picks one, it replaces the group's
    first rollout (its prompt ids become the hinted prompt, so the row trains on what it was
    sampled from). Returns (batch, result, metrics)."""
    group_of = batch.group_ids.tolist()
    rewards_G = [result.total[batch.group_ids == g].tolist() for g in range(len(idx))]
    plans = p.sampler.rescue(list(idx), rewards_G)
    tries = [(g, a) for g, plan in enumerate(plans) for a in plan]
    info = {"hints/rescue_groups": float(sum(1 for plan in plans if plan)), "hints/rescue_tries": float(len(tries)),
            "hints/rescued_groups": 0.0}
    if not tries:
        return batch, result, info
    rows = [idx[g] for g, _ in tries]
    params = replace(SamplingParams.from_config(p.cfg.rollout, n=1), progress=step / p.cfg.train.steps)
    gen = p.rollouts.generate(encode_with(p, rows, [a for _, a in tries]), params, (seed + RESCUE_SEED) % 2**62)
    mark(gen, [a for _, a in tries])
    tried_result = score_batch(gen, [p.train_rows[i] for i in rows], p.tokenizer, p.rewards)
    tried = tried_result.total.tolist()
    swap: dict[int, int] = {}  # batch row -> try row
    at = 0
    for g, plan in enumerate(plans):
        pick = p.sampler.rescued(tried[at:at + len(plan)]) if plan else None
        if pick is not None:
            swap[group_of.index(g)] = at + pick
        at += len(plan)
    info["hints/rescued_groups"] = float(len(swap))
    if not swap:
        return batch, result, info
    out_rows = sorted(swap)
    picked = torch.tensor([swap[i] for i in out_rows])
    new = gen.select(picked)
    new.group_ids = batch.group_ids[out_rows].clone()
    kept = [i for i in range(batch.size) if i not in swap]
    if "hint" not in batch.metadata:  # the sampled rows had no additions
        mark(batch, [Addition()] * len(idx))
    merged = RolloutBatch.concat([batch.select(kept), new])
    order = torch.argsort(torch.tensor(kept + out_rows))
    merged = merged.select(order)
    total = torch.cat([result.total[kept], tried_result.total[picked].to(result.total)])[order]
    per_function = {k: torch.cat([v[kept], tried_result.per_function[k][picked].to(v)])[order]
                    for k, v in result.per_function.items()}
    return merged, RewardResult(total, per_function), info


def hint_metrics(batch: RolloutBatch, sampler_name: str) -> dict[str, float]:
    """`hints/fraction`: rows prompted with an addition; `hints/<sampler>/<tag>`: rows per decision."""
    tags = batch.metadata.get("hint_tag") or [None] * batch.size
    hints = batch.metadata.get("hint") or [None] * batch.size
    prefixes = batch.metadata.get("answer_prefix") or [None] * batch.size
    rewritten = batch.metadata.get("rewritten_prompt") or [None] * batch.size
    added = [bool(h) or bool(a) or bool(r) for h, a, r in zip(hints, prefixes, rewritten)]
    out = {"hints/fraction": sum(added) / max(batch.size, 1)}
    for tag in sorted({t for t, a in zip(tags, added) if a and t}):
        out[f"hints/{sampler_name}/{tag}"] = sum(1 for t, a in zip(tags, added) if a and t == tag) / batch.size
    return out


def check_config(cfg) -> None:
    """Refuse, by key, settings a decorating or rescuing sampler cannot work with."""
    from postrl.algorithms import ADVANTAGES
    from postrl.samplers import SAMPLERS

    sampler = SAMPLERS[cfg.sampler.name]
    if not (getattr(sampler, "decorates", False) or getattr(sampler, "rescues", False)):
        return
    name, lag = cfg.sampler.name, cfg.distributed.max_off_policy_steps
    if lag:
        raise ValueError(f"sampler.name={name!r} adds hints or answer prefixes chosen from the last step's results, "
                         f"which needs synchronous rollouts; distributed.max_off_policy_steps is {lag}: set it to 0")
    if cfg.env is not None:
        raise ValueError(f"sampler.name={name!r} adds to single-turn prompts; it does not work with env: "
                         "(multi-turn episodes). Drop the env section or use sampler.name: uniform")
    if cfg.rollout.inject_reference is not None:
        raise ValueError(f"sampler.name={name!r} changes prompts and answers, so an injected reference would be "
                         f"scored against the wrong prompt; drop rollout.inject_reference")
    if getattr(cfg.rollout, "budgets", None):
        raise ValueError(f"sampler.name={name!r} ends prompts with hints or answer prefixes, after which "
                         "rollout.budgets would append its budget prompt; drop rollout.budgets")
    needs = ADVANTAGES.get(cfg.algorithm.advantage).needs
    for word, why in (("greedy_rewards", "a greedy baseline of the unhinted prompt"),
                      ("mc_values", "prefix continuations scored without the answer prefix")):
        if word in needs:
            raise ValueError(f"algorithm.advantage={cfg.algorithm.advantage!r} would use {why}; it does not work "
                             f"with sampler.name={name!r}: choose another estimator (grpo, rloo, ...) or sampler")
