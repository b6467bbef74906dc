"""Success replay (ARPO for GUI agents, arXiv 2505.16282): an all-failed group gets a stored success.

One mechanism for env episodes and for single completions (one completion = one episode):

* env episodes (`env.replay`): each step, before the batch is scored, in every prompt group whose
  episodes ALL failed (env return < threshold), the last episode's rows are replaced by a stored
  successful episode of the same dataset prompt; `__call__`, from trainers/rl.py;
* single completions (top-level `replay`): after scoring (trainers/collect.py), in every group
  whose completions all failed (total reward < threshold, before reward shaping), the last
  completion is replaced by a stored success of the same prompt, together with the rewards it
  was scored with (total and per function); `single_turn`.

Then this step's own successes are stored (`rollout/arpo.SuccessReplay`, FIFO of `capacity` per
prompt). The group then has a nonzero advantage. A stored episode is the exact batch rows it was
trained as (tokens, masks, behaviour log-probs, turn fields, metadata), so its ratio in the loss
is against the policy that sampled it: an off-policy sample, clipped like any other. It takes the
replaced episode's place, group (and episode id); `metadata["replayed"]` marks it.

The buffer is plain JSON and saved in the trainer state (`arpo_replay`), so a resumed run
replays exactly. The replacement draw uses a random.Random seeded by the step seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import fields
from typing import Any

import torch

from postrl.rewards import RewardResult
from postrl.rollout.arpo import SuccessReplay
from postrl.rollout.batch import RolloutBatch


class EpisodeReplay:
    def __init__(self, capacity: int = 8, threshold: float = 1.0):
        self.buffer = SuccessReplay(capacity=capacity, threshold=threshold)

    def __call__(self, batch: RolloutBatch, idx: list[int], seed: int) -> tuple[RolloutBatch, dict[str, float]]:
        """Env episodes, before scoring: the batch with all-failed groups' last episodes replaced; `replay/*`."""
        episodes = _episodes(batch)  # [(episode id, group, rows)] in batch order
        returns = [float(batch.metadata["episode_return"][rows[0]]) for _, _, rows in episodes]
        out, _, metrics = self._replay(batch, idx, seed, episodes, returns, keep_ids=True)
        return out, metrics

    def single_turn(self, batch: RolloutBatch, result: RewardResult, idx: list[int],
                    seed: int) -> tuple[RolloutBatch, RewardResult, dict[str, float]]:
        """Single completions, after scoring: each row is an episode whose return is its total reward;
        a replayed row brings the rewards it was stored with. Returns (batch, result, `replay/*`)."""
        episodes = [(b, int(batch.group_ids[b]), [b]) for b in range(batch.size)]
        names = list(result.per_function)
        rewards = [{"total": float(result.total[b]),
                    "per_function": {k: float(result.per_function[k][b]) for k in names}} for b in range(batch.size)]
        out, stored, metrics = self._replay(batch, idx, seed, episodes, [r["total"] for r in rewards],
                                            keep_ids=False, rewards=rewards)
        if not stored:
            return out, result, metrics
        rows = [stored[b]["reward"] if b in stored else rewards[b] for b in range(batch.size)]
        total = torch.tensor([r["total"] for r in rows], dtype=result.total.dtype)
        per_function = {k: torch.tensor([r["per_function"][k] for r in rows], dtype=result.per_function[k].dtype)
                        for k in names}
        return out, RewardResult(total, per_function), metrics

    def _replay(self, batch, idx, seed, episodes, returns, *, keep_ids: bool, rewards=None):
        """The common step: replace, then record. Returns (batch, {episode id: stored data}, metrics)."""
        groups: dict[str, list[dict]] = {}
        for k, ((eid, g, rows), ret) in enumerate(zip(episodes, returns)):
            ep = {"return": ret, "eid": eid, "group": g, "rows": rows}
            if rewards is not None:
                ep["reward"] = rewards[k]
            groups.setdefault(str(idx[g]), []).append(ep)
        last = {task: eps[-1] for task, eps in groups.items()}
        replaced = self.buffer.fill_failed(groups, random.Random(seed))
        fresh = {task: [{"return": ep["return"], "data": _dump(batch, ep["rows"]),
                         **({"reward": ep["reward"]} if "reward" in ep else {})}
                        for ep in eps if not ep.get("replayed")] for task, eps in groups.items()}
        out, stored = batch, {}
        if replaced:
            stored = {last[task]["eid"]: groups[task][j] for task, j in replaced.items()}
            pieces, flags = [], []
            for eid, g, rows in episodes:  # a replayed episode takes the replaced one's place and group
                piece = (_load(stored[eid]["data"], eid if keep_ids else None, g) if eid in stored
                         else batch.select(rows))
                pieces.append(piece)
                flags += [eid in stored] * piece.size
            out = RolloutBatch.concat(pieces)
            out.metadata["replayed"] = flags
        self.buffer.record(fresh)
        return out, stored, {"replay/replaced_groups": float(len(replaced)),
                             "replay/stored": float(sum(len(v) for v in self.buffer.buffers.values()))}

    def state_dict(self) -> dict[str, Any]:
        return self.buffer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state)


def build_replay(cfg) -> EpisodeReplay | None:
    """The success replay of `env.replay` (episodes) or top-level `replay` (single completions), or None."""
    spec = cfg.env.replay if cfg.env is not None else cfg.replay
    return None if spec is None else EpisodeReplay(capacity=spec.capacity, threshold=spec.threshold)


def check_config(cfg) -> None:
    """Refuse, by key, settings the single-completion replay cannot work with."""
    if cfg.replay is None:
        return
    if cfg.env is not None:
        raise ValueError("replay is the success replay of single completions; with env: (episodes) set "
                         "env.replay instead, not both")
    if cfg.rollout.n < 2:
        raise ValueError(f"replay replaces one completion of an all-failed group, which leaves no sample of the "
                         f"policy with rollout.n={cfg.rollout.n}; set rollout.n >= 2")
    if cfg.rollout.inject_reference is not None:
        raise ValueError(f"replay and rollout.inject_reference={cfg.rollout.inject_reference!r} both replace the "
                         "last completion of a group; drop one of them")


def _episodes(batch: RolloutBatch) -> list[tuple[int, int, list[int]]]:
    """(episode id, group, its rows) per episode, in the order of their first row."""
    rows: dict[int, list[int]] = {}
    for b, eid in enumerate(batch.metadata["episode_id"]):
        rows.setdefault(eid, []).append(b)
    return [(eid, int(batch.group_ids[r[0]]), r) for eid, r in rows.items()]


def _dump(batch: RolloutBatch, rows: list[int]) -> dict[str, Any]:
    """Rows of `batch` as JSON data: every set field (tensors with their dtype) and the metadata."""
    sub = batch.select(rows)
    out: dict[str, Any] = {}
    for f in fields(RolloutBatch):
        v = getattr(sub, f.name)
        if v is None:
            continue
        if isinstance(v, torch.Tensor):
            out[f.name] = {"dtype": str(v.dtype).removeprefix("torch."), "data": v.tolist()}
        else:
            out[f.name] = v
    # env_info and other metadata may hold values JSON cannot: stored as their str()
    return json.loads(json.dumps(out, default=str))


def _load(data: dict[str, Any], episode_id: int | None, group: int) -> RolloutBatch:
    """Stored rows as a batch in group `group`; `episode_id` (env episodes) replaces the stored one."""
    kw = {}
    for name, v in data.items():
        if isinstance(v, dict) and name != "metadata":
            kw[name] = torch.tensor(v["data"], dtype=getattr(torch, v["dtype"]))
        else:
            kw[name] = json.loads(json.dumps(v))  # a copy: the buffer keeps its own
    batch = RolloutBatch(**kw)
    batch.group_ids = torch.full_like(batch.group_ids, group)
    if episode_id is not None:
        batch.metadata["episode_id"] = [episode_id] * batch.size
    return batch
