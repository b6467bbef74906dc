"""The batch types that flow from rollout to the learner.

`RolloutBatch` is token-in-token-out: it holds exactly the tokens the engine sampled, so the
learner trains on the sampled tokens and never re-tokenises text. Layout, for B sequences:

    prompt_ids      [B, P]  left-padded prompt tokens (pad on the left, prompt flush right)
    completion_ids  [B, T]  right-padded completion tokens (completion flush left)
    prompt_mask     [B, P]  1 on real prompt tokens
    completion_mask [B, T]  1 on real completion tokens (sampled *and* environment tokens)
    loss_mask       [B, T]  1 only on tokens the policy generated; environment/tool tokens are 0

so `cat(prompt_ids, completion_ids)` is one contiguous sequence per row with padding at both
ends. Per-token tensors are `[B, T]` and aligned with `completion_ids`. Optional fields are the
hooks later stages fill or read: process rewards (`token_rewards`, `step_rewards`), agent
structure (`turn_ids`, `step_ids`, `state_keys`), critic values, reference log-probs.

The critic contract (see `learner/critic.py`): before advantages the trainer fills `values`
(V of the state before each completion token, 0 on masked tokens) and `last_values` (V of the
state after the last token); an estimator whose registry entry needs "values" reads them and
leaves the critic's targets in `returns` (and, to train the critic on fewer tokens than
`loss_mask`, a `value_mask`). These are per-row tensors, so `select`/`trimmed`/`to`/`concat`
carry them like any other field.

`PreferenceBatch` is the pairwise/listwise counterpart used by preference objectives.
Shape suffixes in names elsewhere follow the same letters: _B batch, _G group, _T token.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch


@dataclass
class RolloutBatch:
    prompt_ids: torch.Tensor  # [B, P] long
    prompt_mask: torch.Tensor  # [B, P] long
    completion_ids: torch.Tensor  # [B, T] long
    completion_mask: torch.Tensor  # [B, T] long
    loss_mask: torch.Tensor  # [B, T] float; 0 on env/tool tokens and padding
    behavior_logprobs: torch.Tensor  # [B, T] float; log-probs under the sampling policy
    group_ids: torch.Tensor  # [B] long; completions of one prompt share an id
    rewards: torch.Tensor | None = None  # [B] float; outcome reward (weighted sum over functions)
    token_rewards: torch.Tensor | None = None  # [B, T] dense rewards (KL penalty, PRMs, ...)
    step_rewards: list[list[float]] | None = None  # per sequence, one reward per step/turn
    turn_ids: torch.Tensor | None = None  # [B, T] which turn each token belongs to (-1: none)
    step_ids: torch.Tensor | None = None  # [B] step index of this row within its episode
    state_keys: list[str] | None = None  # [B] hashable anchor-state key (GiGPO-style grouping)
    values: torch.Tensor | None = None  # [B, T] critic values V(s_t), when a value model is used
    last_values: torch.Tensor | None = None  # [B] critic value of the state after the last completion token
    returns: torch.Tensor | None = None  # [B, T] value targets, left by estimators that need "values"
    value_mask: torch.Tensor | None = None  # [B, T] tokens the critic trains on (None: loss_mask)
    ref_logprobs: torch.Tensor | None = None  # [B, T] filled by the learner once per batch
    old_logprobs: torch.Tensor | None = None  # [B, T] filled when the batch is reused off-policy
    old_vocab_mean: torch.Tensor | None = None  # [B, T] mean_v log pi_old(v|s_t), for losses that need "vocab_mean"
    old_alt_logprobs: torch.Tensor | None = None  # [B, T] log pi_old under metadata["alt_prompt_ids"] ("alt_context" losses)
    prompt_index: torch.Tensor | None = None  # [B] dataset row of each prompt (for samplers)
    metadata: dict[str, list[Any]] = field(default_factory=dict)  # columns, finish reasons, ...

    @property
    def size(self) -> int:
        return self.completion_ids.shape[0]

    @property
    def device(self) -> torch.device:
        return self.completion_ids.device

    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)

    def completion_lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(-1)

    def select(self, index: torch.Tensor | list[int] | slice) -> "RolloutBatch":
        """Rows `index` of every per-row field (tensors, lists and metadata columns)."""
        if isinstance(index, slice):
            index = list(range(self.size))[index]
        idx = torch.as_tensor(index, dtype=torch.long)
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                out[f.name] = None
            elif isinstance(v, torch.Tensor):
                out[f.name] = v.index_select(0, idx.to(v.device))
            elif f.name == "metadata":
                out[f.name] = {k: [col[i] for i in idx.tolist()] for k, col in v.items()}
            else:
                out[f.name] = [v[i] for i in idx.tolist()]
        return RolloutBatch(**out)

    def trimmed(self) -> "RolloutBatch":
        """Drop padding columns shared by all rows (left of prompts, right of completions)."""
        p_keep = int(self.prompt_mask.sum(-1).max().item()) if self.size else 0
        t_keep = max(int(self.completion_mask.sum(-1).max().item()) if self.size else 0, 1)
        P = self.prompt_ids.shape[1]
        changes = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, torch.Tensor) or v.dim() != 2:
                continue
            if f.name.startswith("prompt_"):
                changes[f.name] = v[:, P - p_keep:]
            else:
                changes[f.name] = v[:, :t_keep]
        return replace(self, **changes)

    def to(self, device: torch.device | str) -> "RolloutBatch":
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), torch.Tensor)})

    @staticmethod
    def from_token_lists(prompts: list[list[int]], completions: list[list[int]], pad_id: int, *,
                         behavior: list[list[float]] | None = None, group_ids: list[int] | None = None,
                         metadata: dict[str, list[Any]] | None = None) -> "RolloutBatch":
        """One row per (prompt, completion) id list, in the batch layout; loss_mask = completion_mask.
        Completions are at least one column wide, so an all-empty batch keeps the [B, T] shapes."""
        prompt_ids, prompt_mask = pad_rows(prompts, pad_id, left=True)
        T = max(max((len(c) for c in completions), default=0), 1)
        completion_ids, completion_mask = pad_rows(completions, pad_id, left=False, width=T)
        logps = torch.zeros((len(completions), T), dtype=torch.float32)
        for i, lp in enumerate(behavior or []):
            logps[i, :len(lp)] = torch.tensor(lp, dtype=torch.float32)
        groups = group_ids if group_ids is not None else list(range(len(completions)))
        return RolloutBatch(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
                            completion_mask=completion_mask, loss_mask=completion_mask.float(),
                            behavior_logprobs=logps, group_ids=torch.tensor(groups, dtype=torch.long),
                            metadata=dict(metadata or {}))

    @staticmethod
    def concat(batches: list["RolloutBatch"]) -> "RolloutBatch":
        """Stack batches row-wise, re-padding prompts on the left and completions on the right."""
        if len(batches) == 1:
            return batches[0]
        P = max(b.prompt_ids.shape[1] for b in batches)
        T = max(b.completion_ids.shape[1] for b in batches)
        out: dict[str, Any] = {}
        for f in fields(RolloutBatch):
            vals = [getattr(b, f.name) for b in batches]
            if f.name == "metadata":
                keys = set().union(*(v.keys() for v in vals))
                out[f.name] = {k: sum((v.get(k, [None] * b.size) for v, b in zip(vals, batches)), [])
                               for k in keys}
            elif all(v is None for v in vals):
                out[f.name] = None
            elif any(v is None for v in vals):
                raise ValueError(f"cannot concat batches: field {f.name!r} is set in some and not others")
            elif isinstance(vals[0], torch.Tensor):
                if vals[0].dim() == 2:
                    width = P if f.name.startswith("prompt_") else T
                    left = f.name.startswith("prompt_")
                    vals = [_pad2d(v, width, left) for v in vals]
                out[f.name] = torch.cat(vals, dim=0)
            else:
                out[f.name] = sum(vals, [])
        return RolloutBatch(**out)


def pad_rows(rows: list[list[int]], pad_id: int, *, left: bool, width: int | None = None):
    """Token-id lists -> (ids [N, W], mask [N, W]): the batch layout, prompts `left`-padded
    (flush right), responses right-padded. `width` defaults to the longest row."""
    W = width if width is not None else max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), W), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), W), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            span = slice(W - len(r), W) if left else slice(0, len(r))
            ids[i, span] = torch.tensor(r, dtype=torch.long)
            mask[i, span] = 1
    return ids, mask


def _pad2d(x: torch.Tensor, width: int, left: bool, value: float = 0) -> torch.Tensor:
    pad = width - x.shape[1]
    if pad <= 0:
        return x
    filler = torch.full((x.shape[0], pad), value, dtype=x.dtype, device=x.device)
    return torch.cat([filler, x] if left else [x, filler], dim=1)


@dataclass
class PreferenceBatch:
    """Pairs (chosen/rejected) or ranked lists for preference objectives.

    `chosen_*`/`rejected_*` follow the RolloutBatch layout (prompt left-padded, response
    right-padded, `*_loss_mask` 1 on response tokens). For listwise data (LiPO), `responses`
    holds K response batches per prompt and `scores` [B, K] their labels; for unpaired data
    (KTO), `labels` [B] marks desirable (1) or undesirable (0) completions in `chosen_*`.
    """

    prompt_ids: torch.Tensor  # [B, P]
    prompt_mask: torch.Tensor  # [B, P]
    chosen_ids: torch.Tensor  # [B, T]
    chosen_mask: torch.Tensor  # [B, T]
    rejected_ids: torch.Tensor | None = None  # [B, T]
    rejected_mask: torch.Tensor | None = None  # [B, T]
    labels: torch.Tensor | None = None  # [B] for unpaired (KTO-style) data
    scores: torch.Tensor | None = None  # [B, K] for ranked lists
    metadata: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.chosen_ids.shape[0]
