"""Where each step's rollout batch comes from, and how stale it may be.

`Rollouts` asks an engine for the batch of step s with the weights of update s - k, where
k = `distributed.max_off_policy_steps` (0: synchronous). With k > 0 the batches of steps
s+1..s+k are being generated while step s trains: in a background thread on an in-process
replica of the policy (local backend) or on Ray rollout workers. Engine calls are FIFO, so a
weight sync queued after a generation never changes the weights under it, and the schedule is
deterministic: the same seed gives the same batches whatever the timing.

Prompts are drawn from the sampler when a batch is requested; requested-but-unused steps are part
of the checkpoint (`pending`), so a resumed run re-requests exactly those prompts.

Under local data parallelism (`ShardedEngine`) every learner process generates its contiguous
shard of the prompts (sampling is batch-invariant, so the union equals one process's batch) and
the shards are all-gathered.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import torch

from postrl.learner.checkpoint import load_state_strict
from postrl.rollout.batch import RolloutBatch
from postrl.rollout.engines import SamplingParams


def shard_bounds(n: int, parts: int) -> list[int]:
    """Boundaries of `parts` contiguous blocks of range(n) whose sizes differ by at most 1:
    block r is [bounds[r], bounds[r+1]). Rollout workers and learner ranks split prompts this way."""
    return [n * r // parts for r in range(parts + 1)]


class Rollouts:
    def __init__(self, engine, *, weights: Callable[[], Any], lag: int = 0, background: bool = False,
                 shares_model: bool = False):
        """`weights`: returns the learner's current full weights (a state dict, or a Ray object ref);
        `shares_model`: the engine samples from the learner's own module (nothing to sync)."""
        self.engine, self.weights, self.lag, self.shares_model = engine, weights, lag, shares_model
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="rollout") if background else None
        self._pending: dict[int, tuple[list[int], Any]] = {}  # step -> (prompt rows, future/handle)

    def request(self, step: int, idx: list[int], prompt_ids: list[list[int]], params: SamplingParams,
                seed: int) -> None:
        if step in self._pending:
            return
        if self._pool is not None:
            fut = self._pool.submit(self.engine.generate, prompt_ids, params, seed)
        elif hasattr(self.engine, "submit"):  # Ray pool: returns a handle immediately
            fut = self.engine.submit(prompt_ids, params, seed)
        else:
            fut = _Deferred(lambda: self.engine.generate(prompt_ids, params, seed))
        self._pending[step] = (list(idx), fut)

    def get(self, step: int) -> tuple[list[int], RolloutBatch]:
        idx, fut = self._pending.pop(step)
        return idx, fut.result()

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams, seed: int) -> RolloutBatch:
        """Generate now, outside the step schedule, with the weights that sampled the current step:
        loop features (dynamic-sampling refills, greedy baselines). Synchronous rollouts only."""
        if self.lag:
            raise RuntimeError("Rollouts.generate needs synchronous rollouts (distributed.max_off_policy_steps = 0)")
        return self.engine.generate(prompt_ids, params, seed)

    def pending(self) -> dict[int, list[int]]:
        """Requested steps not yet trained on, with their prompt rows (saved in checkpoints)."""
        return {s: idx for s, (idx, _) in sorted(self._pending.items())}

    def sync(self) -> None:
        """Push the learner's new weights to the engine (queued behind in-flight generations)."""
        if self.shares_model:
            return
        state = self.weights()
        if self._pool is not None:
            snapshot = {k: v.detach().clone() for k, v in state.items()}  # training goes on meanwhile
            self._pool.submit(self.engine.sync_weights, snapshot)
        else:
            self.engine.sync_weights(state)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class _Deferred:
    """Synchronous mode: generate when the batch is needed, with the weights of that moment."""

    def __init__(self, fn):
        self.fn = fn

    def result(self):
        return self.fn()


class Replica:
    """An engine on a private copy of the policy, for asynchronous rollouts or a sharded learner."""

    def __init__(self, model, make_engine: Callable[[Any], Any]):
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.engine = make_engine(self.model)

    def generate(self, prompt_ids, params, seed=0, *, first_index=0) -> RolloutBatch:
        return self.engine.generate(prompt_ids, params, seed, first_index=first_index)

    def sync_weights(self, state: dict[str, torch.Tensor]) -> None:
        load_state_strict(self.model, state, what="weight sync to the rollout replica")


class ShardedEngine:
    """Each data-parallel rank generates its shard of the prompts; the batch is all-gathered."""

    def __init__(self, engine, dp):
        self.engine, self.dp = engine, dp

    def generate(self, prompt_ids, params, seed=0, *, first_index=0) -> RolloutBatch:
        bounds = shard_bounds(len(prompt_ids), self.dp.world)
        lo, hi = bounds[self.dp.rank], bounds[self.dp.rank + 1]
        mine = self.engine.generate(prompt_ids[lo:hi], params, seed, first_index=first_index + lo)
        parts = self.dp.all_gather_objects(mine)
        for r, part in enumerate(parts):
            part.group_ids = part.group_ids + bounds[r]
        return RolloutBatch.concat([p for p in parts if p.size])

    def sync_weights(self, state) -> None:
        self.engine.sync_weights(state)
