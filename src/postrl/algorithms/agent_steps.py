"""The turn structure of an agent batch, read once for every multi-turn credit-assignment entry.

Agent estimators assign credit per turn (a "step": one action of one episode) and broadcast it to
that action's tokens. `agent_steps` reads the three layouts of `RolloutBatch` into one flat list of
steps, so each estimator computes S per-step numbers and `scatter` places them on the tokens:

- concat (``batch.turn_ids`` set; issue-6 contract): one row per episode; turn k's action tokens
  are ``turn_ids == k`` with ``loss_mask > 0``; state keys come from
  ``metadata["turn_state_keys"][b][k]``; episode ids from ``metadata["episode_id"]`` (else the row).
- per_turn (``batch.step_ids`` set, ``turn_ids`` None): one row per (episode, turn); the turn is
  ``step_ids[b]``, the state ``state_keys[b]``, the episode ``metadata["episode_id"][b]`` (required).
- single-turn (neither): each row is an episode of one turn, so every entry degrades to its
  outcome-only form (GRPO-like) on ordinary batches.

Turn rewards: ``batch.step_rewards[b]`` (the env's per-turn rewards; missing entries are 0). The
episode return R is the row's sequence return (per_turn: ``metadata["episode_return"]`` when
present); whatever part of R the turn rewards do not explain (an outcome reward scored on the
transcript) is added to the LAST turn, so that sum_k r_k = R always holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from postrl.algorithms.advantages import sequence_returns
from postrl.rollout.batch import RolloutBatch


@dataclass
class Steps:
    """S steps (one per (episode, turn) present in the batch) and E episodes."""

    row: list[int]  # batch row holding the step's tokens
    turn: list[int]  # 0-based turn index within the episode
    episode: list[int]  # dense episode index 0..E-1
    state: list[str]  # state key before the turn ("" when the env has none)
    mask: torch.Tensor  # [S, T] float: 1 on the step's action tokens (a subset of loss_mask)
    ep_group: list[int]  # [E] prompt group of each episode
    ep_return: list[float]  # [E] episode return R
    ep_rewards: list[list[float]]  # [E] per-turn rewards (length = turns, sum = R)

    @property
    def size(self) -> int:
        return len(self.row)

    def group(self) -> list[int]:
        return [self.ep_group[e] for e in self.episode]


def layout(batch: RolloutBatch) -> str:
    if batch.turn_ids is not None:
        return "concat"
    if batch.step_ids is not None:
        return "per_turn"
    return "single"


def agent_steps(batch: RolloutBatch, name: str) -> Steps:
    """The steps of `batch` in any layout; `name` (the estimator) is used in error messages."""
    kind, mask = layout(batch), batch.loss_mask.float()
    R_B = sequence_returns(batch)
    ep_ids = batch.metadata.get("episode_id")
    if ep_ids is not None and len(ep_ids) != batch.size:
        raise ValueError(f"{name}: metadata['episode_id'] has {len(ep_ids)} values for {batch.size} rows")
    rows, turns, eps, states, masks = [], [], [], [], []
    ep_index: dict = {}
    ep_group, ep_return, ep_turn_rewards, ep_turns = [], [], [], []

    def episode_of(key, b: int, R: float) -> int:
        if key not in ep_index:
            ep_index[key] = len(ep_group)
            ep_group.append(int(batch.group_ids[b]))
            ep_return.append(R)
            sr = batch.step_rewards[b] if batch.step_rewards is not None else None
            ep_turn_rewards.append([float(x) for x in (sr or [])])
            ep_turns.append(0)
        return ep_index[key]

    if kind == "concat":
        turn_keys = batch.metadata.get("turn_state_keys")
        for b in range(batch.size):
            e = episode_of(ep_ids[b] if ep_ids is not None else ("row", b), b, float(R_B[b]))
            ids = batch.turn_ids[b]
            n = int(ids.max().item()) + 1 if ids.numel() and ids.max() >= 0 else 0
            for k in range(n):
                m = ((ids == k) & (mask[b] > 0)).float()
                if m.sum() == 0:  # a turn without policy tokens carries no gradient
                    continue
                keys = turn_keys[b] if turn_keys is not None else None
                rows.append(b), turns.append(k), eps.append(e), masks.append(m)
                states.append(str(keys[k]) if keys is not None and k < len(keys) else "")
            ep_turns[e] = max(ep_turns[e], n)
    elif kind == "per_turn":
        if ep_ids is None:
            raise ValueError(f"{name}: a per_turn batch (step_ids set) needs metadata['episode_id'] to know "
                             "which rows form one episode; the multi-turn rollout writes it")
        ret = batch.metadata.get("episode_return")
        keys = batch.state_keys
        for b in range(batch.size):
            R = float(ret[b]) if ret is not None else float(R_B[b])
            e = episode_of(ep_ids[b], b, R)
            k = int(batch.step_ids[b])
            rows.append(b), turns.append(k), eps.append(e), masks.append(mask[b])
            states.append(str(keys[b]) if keys is not None else "")
            ep_turns[e] = max(ep_turns[e], k + 1)
    else:
        for b in range(batch.size):
            e = episode_of(("row", b), b, float(R_B[b]))
            rows.append(b), turns.append(0), eps.append(e), masks.append(mask[b])
            states.append("")
            ep_turns[e] = 1
    for e, n in enumerate(ep_turns):  # pad/trim turn rewards to the turns, the rest of R to the last turn
        r = (ep_turn_rewards[e] + [0.0] * n)[:n]
        if n:
            r[-1] += ep_return[e] - sum(r)
        ep_turn_rewards[e] = r
    T = batch.loss_mask.shape[1]
    stacked = torch.stack(masks) if masks else torch.zeros(0, T)
    return Steps(rows, turns, eps, states, stacked, ep_group, ep_return, ep_turn_rewards)


def scatter(batch: RolloutBatch, steps: Steps, values_S: torch.Tensor) -> torch.Tensor:
    """[B, T] advantages: each step's value on its action tokens, 0 elsewhere (loss_mask 0 included)."""
    out = torch.zeros_like(batch.loss_mask, dtype=torch.float32)
    if steps.size:
        idx = torch.tensor(steps.row, dtype=torch.long)
        out.index_add_(0, idx, values_S.float()[:, None] * steps.mask)
    return out * (batch.loss_mask > 0)


def normalise(values: torch.Tensor, ids: list, *, fnorm: str, eps: float) -> torch.Tensor:
    """(x - mean_id) / F over entries sharing an id; F = unbiased std + eps ("std") or 1 ("none").
    An id with one entry gets 0 (no relative signal)."""
    if fnorm not in ("std", "none"):
        raise ValueError(f"fnorm must be 'std' or 'none', got {fnorm!r}")
    index: dict = {}
    inv = torch.tensor([index.setdefault(i, len(index)) for i in ids], dtype=torch.long)
    if not len(ids):
        return values.new_zeros(0)
    n = len(index)
    v = values.double()
    count = torch.zeros(n, dtype=torch.float64).index_add_(0, inv, torch.ones_like(v))
    mean = torch.zeros(n, dtype=torch.float64).index_add_(0, inv, v) / count
    sq = torch.zeros(n, dtype=torch.float64).index_add_(0, inv, (v - mean[inv]) ** 2)
    std = torch.sqrt(sq / (count - 1).clamp(min=1))
    out = v - mean[inv]
    if fnorm == "std":
        out = out / (std[inv] + eps)
    return torch.where(count[inv] > 1, out, torch.zeros_like(out)).float()
