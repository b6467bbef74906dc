"""ASPO: steer tool-use behaviour by a clipped bias added to a base estimator's advantage.

Owns the estimator `aspo` (ADVANTAGES). The bias rewards an EARLIER first tool call among the
correct completions of a prompt; it is added to the advantage, never to the reward, and clipped
relative to the advantage's own magnitude so it can reorder but never flip the outcome signal.
Reads the concat agent layout (metadata "tool_calls_per_turn" and "turn_ends", issue-6 contract).
"""

from __future__ import annotations

import torch

from postrl.algorithms.advantages import sequence_returns
from postrl.algorithms.registries import ADVANTAGES
from postrl.rollout.batch import RolloutBatch


def first_tool_call(batch: RolloutBatch, b: int) -> tuple[int, int] | None:
    """(turn, completion position of that turn's last action token) of row b's first tool call."""
    per_turn, ends = batch.metadata["tool_calls_per_turn"][b], batch.metadata["turn_ends"][b]
    for k, n in enumerate(per_turn or []):
        if n and n > 0:
            return k, int(ends[k])
    return None


@ADVANTAGES.register("aspo", paper="Understanding Tool-Integrated Reasoning", arxiv="2508.19201",
                     needs=("turns",), summary="base advantage + a bias for early tool calls among correct "
                     "completions, clipped to k|A| (Advantage Shaping Policy Optimization)")
def aspo(batch: RolloutBatch, *, base: str = "grpo", base_kwargs: dict | None = None, delta: float = -2.0,
         k: float = 0.7, correct_threshold: float = 0.0, apply_to: str = "all") -> torch.Tensor:
    """ASPO (sec. 5): A'_i = A_i + clip(delta * (p_i - mean_G p) / mean_G L, -k |A_i|, k |A_i|).

        A_i     = the base estimator's advantage (`base`, default grpo), per token
        p_i     = completion position of completion i's first tool call (the last token of the
                  first action whose turn made a tool call: metadata tool_calls_per_turn, turn_ends)
        mean_G  = over the prompt's completions that are correct (return > correct_threshold) and
                  call a tool; L = completion length (completion_mask tokens, observations included)
        bias    = delta * (p_i - mean p) / mean L, added only to those completions, clipped per token

    With delta < 0 a call earlier than the group's average raises the advantage. Defaults: delta =
    -2 and k = 0.7 as the public ASPO recipe that cites the paper (not confirmed from the paper's
    text); restricting the bias to correct completions is my reading of the paper (the bias must
    not reward a fast wrong answer). `apply_to`: "all" (the paper: the whole response's tokens)
    or "tool_turns" (only the action tokens of turns that made a tool call). A group with fewer
    than two such completions gets no bias; tokens with loss_mask 0 stay 0.
    """
    if apply_to not in ("all", "tool_turns"):
        raise ValueError(f"aspo: apply_to must be 'all' or 'tool_turns', got {apply_to!r}")
    if base == "aspo":
        raise ValueError("aspo: base must be another advantage estimator (e.g. grpo), not aspo itself")
    entry = ADVANTAGES.get(base)
    if "state" in entry.needs or "values" in entry.needs:
        raise ValueError(f"aspo: base={base!r} needs {entry.needs}; choose a stateless, critic-free base (grpo, rloo, ...)")
    adv = entry.fn(batch, **(base_kwargs or {}))
    for key in ("tool_calls_per_turn", "turn_ends"):
        if key not in batch.metadata:
            raise ValueError(f"aspo needs batch.metadata[{key!r}] (the multi-turn rollout's concat layout, "
                             "env.layout: concat); this batch has none")
    if batch.step_ids is not None:
        raise ValueError("aspo needs env.layout: concat (one row per episode, the tool call's position in it); "
                         "per_turn rows split an episode")
    R = sequence_returns(batch)
    L = batch.completion_mask.float().sum(-1)
    first = [first_tool_call(batch, b) for b in range(batch.size)]
    chosen = [first[b] is not None and float(R[b]) > correct_threshold for b in range(batch.size)]
    bias = torch.zeros(batch.size)
    for g in set(batch.group_ids.tolist()):
        rows = [b for b in range(batch.size) if int(batch.group_ids[b]) == g and chosen[b]]
        if len(rows) < 2:
            continue
        p_mean = sum(first[b][1] for b in rows) / len(rows)
        L_mean = float(L[rows].mean())
        for b in rows:
            bias[b] = delta * (first[b][1] - p_mean) / L_mean
    lim = k * adv.abs()
    shaped = torch.minimum(torch.maximum(bias[:, None].expand_as(adv), -lim), lim)
    if apply_to == "tool_turns":
        if batch.turn_ids is None:
            raise ValueError("aspo apply_to='tool_turns' needs batch.turn_ids (concat layout)")
        calls = batch.metadata["tool_calls_per_turn"]
        sel = torch.zeros_like(adv, dtype=torch.bool)
        for b in range(batch.size):
            for t, n in enumerate(calls[b] or []):
                if n and n > 0:
                    sel[b] |= batch.turn_ids[b] == t
        shaped = torch.where(sel, shaped, torch.zeros_like(shaped))
    return (adv + shaped) * (batch.loss_mask > 0)
