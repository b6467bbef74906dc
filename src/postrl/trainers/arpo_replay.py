"""Success replay for episode groups (ARPO for GUI agents, arXiv 2505.16282), between rollout and scoring.

Each step, before the batch is scored: in every prompt group whose episodes ALL failed (env
return < `env.replay.threshold`), the last episode's rows are replaced by a stored successful
episode of the same dataset prompt (`rollout/arpo.SuccessReplay`, FIFO of `capacity` per prompt);
then this step's own successes are stored. The group then has a nonzero advantage. The stored
episode is the exact batch rows it was trained as (tokens, masks, behaviour log-probs, turn
fields, metadata), so its ratio in the loss is against the policy that sampled it: an
off-policy sample, clipped like any other. It takes the replaced episode's id and group.

The buffer is plain JSON and saved in the trainer state (`arpo_replay`), so a resumed run
replays exactly. The replacement draw uses a random.Random seeded by the step seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import fields
from typing import Any

import torch

from postrl.rollout.arpo import SuccessReplay
from postrl.rollout.batch import RolloutBatch


class EpisodeReplay:
    def __init__(self, capacity: int = 8, threshold: float = 1.0):
        self.buffer = SuccessReplay(capacity=capacity, threshold=threshold)

    def __call__(self, batch: RolloutBatch, idx: list[int], seed: int) -> tuple[RolloutBatch, dict[str, float]]:
        """The batch with all-failed groups' last episodes replaced; metrics `replay/*`."""
        episodes = _episodes(batch)  # [(episode id, group, rows)] in batch order
        groups: dict[str, list[dict]] = {}
        for eid, g, rows in episodes:
            groups.setdefault(str(idx[g]), []).append({"return": float(batch.metadata["episode_return"][rows[0]]),
                                                       "eid": eid, "group": g, "rows": rows})
        last = {task: eps[-1] for task, eps in groups.items()}
        replaced = self.buffer.fill_failed(groups, random.Random(seed))
        fresh = {task: [{"return": ep["return"], "data": _dump(batch, ep["rows"])}
                        for ep in eps if not ep.get("replayed")] for task, eps in groups.items()}
        out = batch
        if replaced:
            stored = {last[task]["eid"]: _load(groups[task][j]["data"], last[task]["eid"], last[task]["group"])
                      for task, j in replaced.items()}
            out = RolloutBatch.concat([stored[eid] if eid in stored else batch.select(rows)
                                       for eid, _, rows in episodes])
            out.metadata["replayed"] = [eid in stored for eid in out.metadata["episode_id"]]
        self.buffer.record(fresh)
        return out, {"replay/replaced_groups": float(len(replaced)),
                     "replay/stored": float(sum(len(v) for v in self.buffer.buffers.values()))}

    def state_dict(self) -> dict[str, Any]:
        return self.buffer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state)


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


def _load(data: dict[str, Any], episode_id: int, group: int) -> RolloutBatch:
    kw = {}
    for name, v in data.items():
        if isinstance(v, dict) and name != "metadata":
            kw[name] = torch.tensor(v["data"], dtype=getattr(torch, v["dtype"]))
        else:
            kw[name] = json.loads(json.dumps(v))  # a copy: the buffer keeps its own
    batch = RolloutBatch(**kw)
    batch.group_ids = torch.full_like(batch.group_ids, group)
    batch.metadata["episode_id"] = [episode_id] * batch.size
    return batch
