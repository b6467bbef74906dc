"""Monte-Carlo values of prefix states for segment-level advantages (SPO-chain).

An advantage estimator registered with `needs=("mc_values",)` (`segment_spo`) gets, before it is
called, the value of a few states inside each completion, estimated by sampling continuations.
`estimate_segment_values` owns that extra rollout, in four steps:

1. cut points: the positions of a completion's policy tokens whose behaviour probability is below
   `threshold`; every `cutpoint_interval`-th of them, from the first, starts a segment, so each
   segment holds the same number of low-probability tokens (`max_segments` caps the count by
   widening the interval);
2. prefixes: for a segment starting at completion position b, the state s_b is the prompt plus
   completion[:b] (token ids, nothing re-tokenised); identical prefixes are sampled once;
3. continuations: `mc_samples` completions of every prefix from the rollout engine
   (`engine.generate`, the rollout section's sampling settings, a seed derived from the step's),
   each cut to the budget the original completion had left (`max_new_tokens - b`);
4. values: V(s_b) is the mean reward of prefix + continuation, scored like the batch itself.

Contract, per row of the batch (lists, so `RolloutBatch.select` keeps them aligned):
    batch.metadata["segment_cuts"][i]   = [b_0, b_1, ...]  segment starts (completion positions)
    batch.metadata["segment_values"][i] = [V(s_b_0), V(s_b_1), ...]
A row without low-probability tokens has no cut (empty lists). The value after the last token is
the row's own reward, which the estimator reads from `batch.rewards`.

The engine must sample from the policy that produced the batch: synchronous rollouts only
(`distributed.max_off_policy_steps = 0`, checked by the config).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable

import torch

from postrl.rollout.batch import RolloutBatch
from postrl.rollout.engines import SamplingParams
from postrl.rollout.sampling import row_seed

HPARAMS = ("threshold", "cutpoint_interval", "max_segments", "mc_samples")
"""The estimator's hyper-parameters this module reads (the estimator's signature holds the defaults)."""
_MC_STREAM = 0x5350_4F  # keys the continuations' seed apart from the step's rollout seed


def check_hparams(hparams: dict[str, Any], where: str = "algorithm.advantage_kwargs") -> None:
    """Range checks, naming the key and the fix."""
    missing = [k for k in HPARAMS if k not in hparams]
    if missing:
        raise ValueError(f"{where}: Monte-Carlo segment values need {', '.join(missing)}")
    t, k, m, n = (hparams[k] for k in HPARAMS)
    if not (isinstance(t, (int, float)) and 0 < t <= 1):
        raise ValueError(f"{where}.threshold={t!r}: a probability in (0, 1] (the paper uses 0.9)")
    if not (isinstance(k, int) and k >= 1):
        raise ValueError(f"{where}.cutpoint_interval={k!r}: a positive integer (the paper uses 5)")
    if m is not None and not (isinstance(m, int) and m >= 1):
        raise ValueError(f"{where}.max_segments={m!r}: a positive integer, or null for no cap")
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"{where}.mc_samples={n!r}: a positive integer (the paper uses 9)")


def cut_points(low_T: torch.Tensor, interval: int, max_segments: int | None = None) -> list[int]:
    """Segment starts from a boolean [T] mask of low-probability positions.

    Every `interval`-th low-probability position, from the first, starts a segment; with more than
    `max_segments` segments the interval widens to ceil(#low / max_segments), which spreads the
    low-probability tokens evenly over at most `max_segments` segments (the paper's fixed-K rule).
    """
    low = low_T.nonzero().flatten().tolist()
    if max_segments is not None and len(low[::interval]) > max_segments:
        interval = math.ceil(len(low) / max_segments)
    return low[::interval]


def low_probability(batch: RolloutBatch, threshold: float) -> torch.Tensor:
    """[B, T] bool: policy tokens whose behaviour probability is below `threshold` (the cut points
    and, in `segment_spo`, the probability mask)."""
    return (batch.behavior_logprobs.float().exp() < threshold) & (batch.loss_mask > 0)


def segment_boundaries(batch: RolloutBatch, *, threshold: float, cutpoint_interval: int,
                       max_segments: int | None = None) -> list[list[int]]:
    """Segment starts of every row."""
    low = low_probability(batch, threshold)
    return [cut_points(low[i], cutpoint_interval, max_segments) for i in range(batch.size)]


def estimate_segment_values(batch: RolloutBatch, *, generate: Callable[..., RolloutBatch],
                            score: Callable[[RolloutBatch], torch.Tensor], params: SamplingParams, seed: int,
                            hparams: dict[str, Any]) -> None:
    """Fill `batch.metadata["segment_cuts"]` and `["segment_values"]` (see the module docstring).

    `generate(prompt_ids, params, seed)` is the rollout engine's; `score(batch) -> [N]` rewards a
    batch whose rows carry the group ids of `batch` (so each continuation is scored against its
    own dataset row); `params` are the rollout's sampling settings; `hparams` the estimator's
    resolved keyword arguments.
    """
    check_hparams(hparams)
    cuts = segment_boundaries(batch, threshold=hparams["threshold"], cutpoint_interval=hparams["cutpoint_interval"],
                              max_segments=hparams["max_segments"])
    prompts = [ids[m.bool()].tolist() for ids, m in zip(batch.prompt_ids, batch.prompt_mask)]
    completions = [ids[m.bool()].tolist() for ids, m in zip(batch.completion_ids, batch.completion_mask)]

    # distinct prefix states: rows of one prompt often share one (e.g. b = 0)
    slot: dict[tuple[int, ...], int] = {}
    states: list[tuple[int, int]] = []  # (row, b) of each distinct prefix
    for i, starts in enumerate(cuts):
        for b in starts:
            key = tuple(prompts[i] + completions[i][:b])
            if key not in slot:
                slot[key] = len(states)
                states.append((i, b))
    values = torch.zeros(0)
    if states:
        n = hparams["mc_samples"]
        budgets = [params.max_new_tokens - b for _, b in states]
        mc_params = replace(params, n=n, max_new_tokens=max(budgets), greedy=False)
        out = generate([prompts[i] + completions[i][:b] for i, b in states], mc_params,
                       row_seed(seed, _MC_STREAM, 0) % 2**62)
        state_of = out.group_ids.tolist()  # engines number the prompts of a call 0..U-1, n rows each
        full = []
        for r, u in enumerate(state_of):
            i, b = states[u]
            continuation = out.completion_ids[r][out.completion_mask[r].bool()].tolist()[:budgets[u]]
            full.append(completions[i][:b] + continuation)
        rows = [states[u][0] for u in state_of]
        rewards = score(_scoring_batch(batch, rows, full)).float()
        values = torch.zeros(len(states)).index_add_(0, torch.tensor(state_of), rewards) / n
    batch.metadata["segment_cuts"] = cuts
    batch.metadata["segment_values"] = [
        [float(values[slot[tuple(prompts[i] + completions[i][:b])]]) for b in starts] for i, starts in enumerate(cuts)]


def _scoring_batch(batch: RolloutBatch, rows: list[int], completions: list[list[int]]) -> RolloutBatch:
    """Rows = original prompt + a full completion (prefix + continuation), keeping the row's group id."""
    N, T = len(rows), max((len(c) for c in completions), default=0)
    completion_ids = torch.zeros(N, max(T, 1), dtype=torch.long)
    completion_mask = torch.zeros(N, max(T, 1), dtype=torch.long)
    for r, c in enumerate(completions):
        completion_ids[r, :len(c)] = torch.tensor(c, dtype=torch.long)
        completion_mask[r, :len(c)] = 1
    index = torch.tensor(rows, dtype=torch.long)
    return RolloutBatch(prompt_ids=batch.prompt_ids[index], prompt_mask=batch.prompt_mask[index],
                        completion_ids=completion_ids, completion_mask=completion_mask,
                        loss_mask=completion_mask.float(), behavior_logprobs=torch.zeros(N, max(T, 1)),
                        group_ids=batch.group_ids[index])
