"""A step's scored batch: the loop features that act between rollout and advantages.

`collect` is the one call `rl_step` makes between getting the rollout batch and estimating
advantages. In order, and each only when configured (the plain loop pays for none of them):

1. reference injection (`rollout.inject_reference`, TempSamp-R1 arXiv 2509.18056): the last
   completion of every group becomes the dataset's reference solution (its tokens + EOS,
   loss_mask 1, finish_reason "stop"), marked in `batch.metadata["reference_injected"]`;
2. scoring with the configured reward functions;
3. group filtering and refill (a sampler with `filters_groups`, e.g. DAPO's dynamic sampling):
   rejected groups are dropped and the missing ones drawn, generated and scored, for at most
   `sampler.max_rounds` rounds; logs `dynamic_sampling/{rounds,kept_groups,generated_groups}`;
3'. uneven allocation (a sampler that `allocates`, XRPO; trainers/groups.py): the rest of the
   budget prompts_per_step * n - rows is generated for the prompts the sampler picks and merged into
   their groups; logs `allocation/...`;
3a. prompt additions (a sampler that decorates or rescues, trainers/hints.py): rows carry their
   hint / answer prefix (refills are decorated too); Scaf-GRPO's hinted retries replace one
   rollout of each all-failed group; logs `hints/...`;
3a'. success replay of single completions (top-level `replay`, ARPO arXiv 2505.16282;
   trainers/arpo_replay.py): an all-failed group's last completion is replaced by a stored success
   of the same prompt, with its stored rewards; logs `replay/...`;
3b. reward shaping (`rewards/shaping.py`: per-reward normalize/clip, `reward_combine`) of the final
   batch, which becomes `batch.rewards` (the raw per-function values stay in the result);
3c. length shaping (`length`, rewards/length.py: HAPO, HBPO, scheduled length reward): rewrites
   `batch.rewards` from each completion's length and correctness; logs `length/...`;
4. behaviour log-probs of injected rows: the learner's current log-probs (one no-grad forward
   over those rows), so their importance ratio is defined;
5. overlong filtering (`algorithm.mask_truncated`, DAPO): loss_mask 0 on truncated completions;
6. greedy baselines (an estimator that needs "greedy_rewards", ReMax arXiv 2310.10505): one
   greedy completion per prompt, scored by the same rewards, its total reward per row in
   `batch.metadata["greedy_reward"]`.
Refills and greedy completions use `Rollouts.generate`, i.e. the weights that sampled the step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from postrl.algorithms import ADVANTAGES
from postrl.rewards import RewardResult
from postrl.rollout.batch import RolloutBatch
from postrl.rollout.engines import SamplingParams
from postrl.trainers import groups, hints
from postrl.trainers.scoring import score_batch, skip_failed_groups


@dataclass
class Scored:
    """Generated groups with their prompts' dataset rows (`idx[g]` for group g) and rewards."""

    idx: list[int]
    batch: RolloutBatch
    result: RewardResult

    def rewards_G(self) -> list[list[float]]:
        total = self.result.total
        return [total[self.batch.group_ids == g].tolist() for g in range(len(self.idx))]


def collect(p, idx: list[int], batch: RolloutBatch, seed: int, step: int = 0):
    """Score the step's batch and apply the configured loop features; returns
    (idx, batch with rewards, RewardResult, metrics). `seed` is the step's sampling seed."""
    cfg, metrics = p.cfg, {}
    hints.mark(batch, p.additions.pop(step, None))  # a decorating sampler's hints / answer prefixes
    scored = score(p, idx, batch)
    if p.sampler.filters_groups:
        def more(k: int, round_: int) -> Scored | None:  # draws happen here, inside the step: resume stays exact
            new = p.sampler.next(k)
            if not new:  # the sampler has nothing more for this step (CLPO: no rewrites left)
                return None
            params = replace(SamplingParams.from_config(cfg.rollout), progress=step / cfg.train.steps)
            ids, additions = hints.prompts_for(p, new)
            gen = p.rollouts.generate(ids, params, (seed + 104_729 * round_) % 2**62)
            hints.mark(gen, additions)
            return score(p, new, gen)

        scored, info = refill(scored, more, p.sampler.keep, cfg.train.prompts_per_step, p.sampler.max_rounds)
        metrics.update(info)
    idx, batch, result = scored.idx, scored.batch, scored.result
    if p.sampler.allocates:  # XRPO: the rest of the rollout budget to the most uncertain prompts (trainers/groups.py)
        batch, result, allocation_metrics = groups.allocate(p, idx, batch, result, seed, step)
        metrics.update(allocation_metrics)
    if p.sampler.decorates or p.sampler.rescues:  # Scaf-GRPO's hinted retries, hints/... metrics
        batch, result, hint_metrics = hints.finish(p, idx, batch, result, seed, step)
        metrics.update(hint_metrics)
    if p.episode_replay is not None and cfg.env is None:  # single-turn success replay (trainers/arpo_replay.py)
        batch, result, replay_metrics = p.episode_replay.single_turn(batch, result, idx, seed)
        metrics.update(replay_metrics)
    if p.shaper is not None:
        result, shaping_metrics = p.shaper(result, batch, step)
        metrics.update(shaping_metrics)
    batch.rewards = result.total
    if p.length_shaper is not None:  # HAPO / HBPO / scheduled length reward on top (rewards/length.py)
        metrics.update(p.length_shaper.apply(batch, idx, result, p.rewards, step))
    if cfg.rollout.inject_reference is not None:
        metrics.update(reference_behavior_logprobs(p.learner, batch))
    if cfg.algorithm.mask_truncated:
        mask_truncated(batch)
    metrics.update(skip_failed_groups(batch))  # rewards[i].on_error: skip_group (rewards/guard.py)
    if "greedy_rewards" in ADVANTAGES.get(cfg.algorithm.advantage).needs:
        metrics.update(greedy_baseline(p, idx, batch, step))
    return idx, batch, result, metrics


def per_sample_total(p, result: RewardResult, step: int) -> torch.Tensor:
    """The reward of rows scored outside the training batch, shaped as the batch's were."""
    return p.shaper.per_sample(result, step).total if p.shaper is not None else result.total


def score(p, idx: list[int], batch: RolloutBatch) -> Scored:
    """Inject references when configured, then call the reward functions."""
    rows = [p.train_rows[i] for i in idx]
    if p.cfg.rollout.inject_reference is not None:
        batch = inject_reference(batch, rows, p.cfg.rollout.inject_reference, p.tokenizer)
    return Scored(list(idx), batch, score_batch(batch, rows, p.tokenizer, p.rewards))


def refill(first: Scored, more: Callable[[int, int], Scored | None], keep: Callable[[list[list[float]]], list[bool]],
           want: int, max_rounds: int) -> tuple[Scored, dict[str, float]]:
    """Keep the groups `keep` accepts; while fewer than `want`, `more(missing, round)` draws and
    scores new prompts, for at most `max_rounds` rounds (the first included; `more` returning None
    ends them early). Short after that, the batch is topped up with rejected groups in generation
    order, so its size stays `want`."""
    kept: list[tuple[Scored, int]] = []
    dropped: list[tuple[Scored, int]] = []

    def sort(s: Scored) -> None:
        for g, ok in enumerate(keep(s.rewards_G())):
            (kept if ok else dropped).append((s, g))

    sort(first)
    rounds, generated = 1, len(first.idx)
    while len(kept) < want and rounds < max_rounds:
        s = more(want - len(kept), rounds)
        if s is None:
            break
        rounds, generated = rounds + 1, generated + len(s.idx)
        sort(s)
    info = {"dynamic_sampling/rounds": float(rounds), "dynamic_sampling/kept_groups": float(min(len(kept), want)),
            "dynamic_sampling/generated_groups": float(generated)}
    if rounds == 1 and len(kept) == len(first.idx):  # nothing dropped: the batch as it came
        return first, info
    return take_groups(kept[:want] + dropped[:max(0, want - len(kept))]), info


def take_groups(chosen: list[tuple[Scored, int]]) -> Scored:
    """One batch of the chosen (part, group) pairs, group ids renumbered 0..len-1 in that order."""
    pieces, totals, per_function, idx = [], [], {}, []
    for new_g, (s, g) in enumerate(chosen):
        rows = (s.batch.group_ids == g).nonzero().flatten().tolist()
        piece = s.batch.select(rows)
        piece.group_ids = torch.full_like(piece.group_ids, new_g)
        pieces.append(piece)
        totals.append(s.result.total[rows])
        for name, values in s.result.per_function.items():
            per_function.setdefault(name, []).append(values[rows])
        idx.append(s.idx[g])
    result = RewardResult(torch.cat(totals), {k: torch.cat(v) for k, v in per_function.items()})
    return Scored(idx, RolloutBatch.concat(pieces), result)


def inject_reference(batch: RolloutBatch, rows: list, column: str, tokenizer) -> RolloutBatch:
    """The batch with the last completion of group g replaced by `rows[g].columns[column]`,
    tokenised (no special tokens) and closed by EOS; behaviour log-probs of those rows are 0
    until `reference_behavior_logprobs` fills them."""
    refs = []
    for row in rows:
        value = row.columns.get(column)
        if value is None:
            raise ValueError(f"rollout.inject_reference={column!r}: dataset row {row.index} has no value in column "
                             f"{column!r}; its columns: {', '.join(sorted(row.columns))}")
        refs.append(tokenizer.encode(str(value), add_special_tokens=False) + [tokenizer.eos_token_id])
    last = {g: i for i, g in enumerate(batch.group_ids.tolist())}  # the last row of every group
    swap = [last[g] for g in range(len(rows))]
    swapped = set(swap)
    kept = [i for i in range(batch.size) if i not in swapped]
    G, L = len(refs), max(len(r) for r in refs)
    ids = torch.full((G, L), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((G, L), dtype=torch.long)
    for g, ref in enumerate(refs):
        ids[g, :len(ref)] = torch.tensor(ref, dtype=torch.long)
        mask[g, :len(ref)] = 1
    at = torch.tensor(swap)
    injected = RolloutBatch(prompt_ids=batch.prompt_ids[at], prompt_mask=batch.prompt_mask[at], completion_ids=ids,
                            completion_mask=mask, loss_mask=mask.float(), behavior_logprobs=torch.zeros(G, L),
                            group_ids=batch.group_ids[at],
                            metadata={"finish_reason": ["stop"] * G, "reference_injected": [True] * G})
    sampled = batch.select(kept)
    sampled.metadata["reference_injected"] = [False] * len(kept)
    merged = RolloutBatch.concat([sampled, injected])
    return merged.select(torch.argsort(torch.tensor(kept + swap)))


def reference_behavior_logprobs(learner, batch: RolloutBatch) -> dict[str, float]:
    """Behaviour log-probs of injected rows := the learner's current log-probs (computed once)."""
    rows = [i for i, injected in enumerate(batch.metadata["reference_injected"]) if injected]
    at = torch.tensor(rows)
    batch.behavior_logprobs[at] = learner.logprobs(batch.select(rows)).to(batch.behavior_logprobs.dtype)
    return {"reference/reward_mean": float(batch.rewards[at].mean())}


def mask_truncated(batch: RolloutBatch) -> None:
    """DAPO overlong filtering: no loss on completions the length limit cut off."""
    cut = torch.tensor([reason == "length" for reason in batch.metadata["finish_reason"]])
    batch.loss_mask = batch.loss_mask * (~cut).to(batch.loss_mask.dtype)[:, None]


def greedy_baseline(p, idx: list[int], batch: RolloutBatch, step: int = 0) -> dict[str, float]:
    """ReMax's baseline: the reward of one greedy completion per prompt, per row of `batch`."""
    params = SamplingParams.from_config(p.cfg.rollout, greedy=True, n=1)
    greedy = p.rollouts.generate([p.train_ids[i] for i in idx], params, 0)
    total = per_sample_total(p, score_batch(greedy, [p.train_rows[i] for i in idx], p.tokenizer, p.rewards), step)
    batch.metadata["greedy_reward"] = total[batch.group_ids].tolist()
    return {"reward/greedy_mean": float(total.mean())}
