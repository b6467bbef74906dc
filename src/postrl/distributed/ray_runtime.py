"""Ray scale-out: rollout workers, reward workers and the learner as Ray actors.

Each pool stands in for the in-process object the trainer already uses:

- `RolloutPool` is an engine (`generate`, `sync_weights`, plus `submit` for asynchronous rollouts):
  every replica generates a contiguous shard of the prompts with that shard's `first_index`, and
  since sampling is batch-invariant the concatenation is exactly one in-process engine's batch;
- `RewardPool` is a `RewardSet`: each worker scores a contiguous shard of the completions (reward
  functions score completions one by one, TRL's contract, so sharding changes nothing);
- `LearnerGroup` is a `Learner`: every method runs on all ranks (one torch.distributed group when
  there are several) and rank 0's result is returned.

Large arguments (weights, batches) are `ray.put` once and passed by reference, so sending them to
N workers costs one copy in the object store, not N. Calls from the driver to one actor run in
submission order, so a weight sync queued behind a generation never changes the weights under it.
Errors raised in a worker are re-raised in the driver by `ray.get` as the worker's exception type,
with its message and remote traceback. A rollout or reward worker whose process dies is re-created
and its shard redone, up to `distributed.max_worker_restarts` times per worker (ray_restart.py); a
dead learner rank stops the run (resume from the last checkpoint).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from typing import Any

import ray
import torch

from postrl.distributed.ray_restart import DEAD, WorkerSlots
from postrl.distributed.ray_workers import LearnerWorker, RewardWorker, RolloutWorker
from postrl.rewards.combine import RewardResult
from postrl.rollout.batch import RolloutBatch
from postrl.rollout.pipeline import shard_bounds

# Environment the workers need that a remote node would not have: offline switches and caches.
_FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME",
                  "HF_HUB_CACHE", "TOKENIZERS_PARALLELISM")


def start_ray(dist) -> None:
    """Join `dist.ray_address`, or start a local cluster big enough for every actor. Idempotent."""
    needed = dist.worker_cpus * (dist.rollout_workers + dist.reward_workers + dist.learner_procs)
    if ray.is_initialized():
        have = ray.cluster_resources().get("CPU", 0)
        if dist.ray_address is None and have < needed:  # actors would wait for CPUs forever
            raise RuntimeError(f"the running Ray cluster has {have:g} CPUs but distributed asks for "
                               f"{needed:g} (worker_cpus x all workers); call "
                               "postrl.distributed.ray_runtime.shutdown() first")
        return
    kwargs: dict[str, Any] = {}
    if dist.ray_address is None:
        # Logical CPUs are scheduling slots, not cores: a 2-core machine may hold 5 one-CPU actors,
        # they just share the cores (each limits its threads to worker_cpus).
        kwargs["num_cpus"] = max(os.cpu_count() or 1, math.ceil(needed))
    ray.init(address=dist.ray_address, include_dashboard=False, logging_level=logging.WARNING,
             runtime_env={"env_vars": worker_env(dist)}, **kwargs)


def worker_env(dist) -> dict[str, str]:
    """Environment variables of every worker process."""
    threads = str(max(1, int(dist.worker_cpus)))
    env = {k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ}
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, PYTHONPATH=os.pathsep.join(_user_paths()))
    return env


def _user_paths() -> list[str]:
    """sys.path entries outside the interpreter's own directories (where `module:function` rewards
    live, e.g. the working directory), then any PYTHONPATH: a worker imports what the driver can."""
    own = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    out: list[str] = []
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    for entry in sys.path + extra:
        path = os.path.realpath(entry or os.getcwd())
        if not os.path.isdir(path) or any(path == p or path.startswith(p + os.sep) for p in own):
            continue
        if path not in out:
            out.append(path)
    return out


def shutdown() -> None:
    """Stop the cluster (or disconnect from a remote one); every actor ends with it."""
    if ray.is_initialized():
        ray.shutdown()


def get_all(refs: list) -> list:
    """Results of `refs`; the first failure raises at once, not after the others (which may be
    ranks blocked in a collective waiting for the failed one)."""
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        ray.get(done)
    return ray.get(list(refs))


def _spans(n: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous [lo, hi) blocks of range(n), sizes differing by at most 1; empty ones dropped."""
    bounds = shard_bounds(n, parts)
    return [(lo, hi) for lo, hi in zip(bounds, bounds[1:]) if hi > lo] or [(0, 0)]


# ------------------------------------------------------------------------------------- rollout
class RolloutPool:
    """`distributed.rollout_workers` engine replicas behind the engine interface."""

    def __init__(self, cfg):
        d = cfg.distributed
        actor = ray.remote(num_cpus=d.worker_cpus, num_gpus=d.worker_gpus)(RolloutWorker)
        self.slots = WorkerSlots(lambda: actor.remote(cfg), d.rollout_workers, max_restarts=d.max_worker_restarts,
                                 what="rollout worker")
        self.workers = self.slots.workers  # the same list: a re-created worker replaces its entry
        self.version = 0
        self._weights: tuple | None = None  # (ObjectRef, version) of the last sync, for re-created workers
        self._unchecked_syncs: list = []
        get_all([w.ready.remote() for w in self.workers])  # a model that fails to load fails here

    def submit(self, prompt_ids: list[list[int]], params, seed: int = 0, *, first_index: int = 0) -> "PendingBatch":
        """Start generating; `.result()` of the handle gives the batch `generate` would return."""
        spans = _spans(len(prompt_ids), len(self.workers))
        shards = []
        for i, (w, (lo, hi)) in enumerate(zip(self.workers, spans)):
            args = (prompt_ids[lo:hi], params, seed, first_index + lo)
            shards.append((i, w, w.generate.remote(*args), args))
        syncs, self._unchecked_syncs = self._unchecked_syncs, []
        return PendingBatch(self, shards, [lo for lo, _ in spans], syncs, self._weights)

    def generate(self, prompt_ids: list[list[int]], params, seed: int = 0, *, first_index: int = 0) -> RolloutBatch:
        return self.submit(prompt_ids, params, seed, first_index=first_index).result()

    def sync_weights(self, weights) -> None:
        """Give every replica `weights` (an nn.Module, a state dict, or an ObjectRef to one).

        Returns without waiting: the loads are queued behind in-flight generations, and a failed
        load is raised by the next batch's `result()`.
        """
        if isinstance(weights, torch.nn.Module):
            weights = {k: v.detach().cpu() for k, v in weights.state_dict().items()}
        ref = weights if isinstance(weights, ray.ObjectRef) else ray.put(weights)  # one copy for all
        self.version += 1
        self._weights = (ref, self.version)  # kept alive: a re-created worker loads it
        self._unchecked_syncs += [w.load_weights.remote(ref, self.version) for w in self.workers]

    def _get(self, i: int, worker, ref, args: tuple, weights: tuple | None) -> RolloutBatch:
        """A shard's batch; if its worker died, redone by the replacement with the same weights."""
        def redo(new):
            if weights is not None:  # None: no sync yet, and a new worker starts from the same initial weights
                self._unchecked_syncs.append(new.load_weights.remote(*weights))
            out = new.generate.remote(*args)
            if self._weights is not None and self._weights is not weights:  # back to the newest for later calls
                self._unchecked_syncs.append(new.load_weights.remote(*self._weights))
            return out

        return self.slots.get(i, worker, ref, redo)

    def close(self) -> None:
        for w in self.workers:
            ray.kill(w)
        self.workers.clear()  # in place: the slots hold the same list


class PendingBatch:
    """A rollout batch being generated by the pool's workers: per shard (slot, worker, ref, args),
    and the weights (ObjectRef, version) it is sampled with."""

    def __init__(self, pool: RolloutPool, shards: list, offsets: list[int], syncs: list, weights: tuple | None):
        self.pool, self.shards, self.offsets, self.syncs, self.weights = pool, shards, offsets, syncs, weights

    def result(self) -> RolloutBatch:
        for ref in self.syncs:  # queued before the generation, so already done: only raises a failure
            try:
                ray.get(ref)
            except DEAD:  # that worker's shard is redone below, after loading these weights
                pass
        parts = [self.pool._get(i, w, ref, args, self.weights) for i, w, ref, args in self.shards]
        for lo, part in zip(self.offsets, parts):
            part.group_ids = part.group_ids + lo  # worker group ids are shard-local
        return RolloutBatch.concat(parts)


# ------------------------------------------------------------------------------------- rewards
class RewardPool:
    """A drop-in `RewardSet` whose reward functions run in `num_workers` actors."""

    def __init__(self, specs, num_workers: int, *, num_cpus: float = 1.0, max_restarts: int = 3):
        if num_workers < 1:
            raise ValueError(f"RewardPool needs at least one worker, got {num_workers}")
        actor = ray.remote(num_cpus=num_cpus)(RewardWorker)
        self.slots = WorkerSlots(lambda: actor.remote(list(specs)), num_workers, max_restarts=max_restarts,
                                 what="reward worker")
        self.workers = self.slots.workers
        # also waits for every worker: an unknown reward or a failed import is raised here
        self.names: list[str] = get_all([w.names.remote() for w in self.workers])[0]

    def __call__(self, prompts: list, completions: list, completion_ids: list | None,
                 columns: dict[str, list]) -> RewardResult:
        B = len(completions)
        for key, col in [("prompts", prompts), *columns.items()]:  # before slicing hides a mismatch
            if len(col) != B:
                raise ValueError(f"column {key!r} has {len(col)} values for {B} completions")
        shards = []
        for i, (w, (lo, hi)) in enumerate(zip(self.workers, _spans(B, len(self.workers)))):
            args = (prompts[lo:hi], completions[lo:hi], None if completion_ids is None else completion_ids[lo:hi],
                    {k: v[lo:hi] for k, v in columns.items()})
            shards.append((i, w, w.score.remote(*args), args))
        # a dead worker's shard is rescored by its replacement (which loads the same reward functions;
        # state a user function keeps between calls is not carried over)
        parts = [self.slots.get(i, w, ref, lambda new, a=args: new.score.remote(*a)) for i, w, ref, args in shards]
        failed = None  # on_error: skip_group flags, False for a part that flagged nothing
        if any(p.failed is not None for p in parts):
            failed = torch.cat([p.failed if p.failed is not None else torch.zeros(len(p.total), dtype=torch.bool)
                                for p in parts])
        return RewardResult(total=torch.cat([p.total for p in parts]),
                            per_function={n: torch.cat([p.per_function[n] for p in parts]) for n in self.names},
                            failed=failed)

    def take_failure_counts(self) -> dict[str, float]:
        """The workers' reward failures since the last take, summed (rewards/guard.py)."""
        out: dict[str, float] = {}
        for counts in get_all([w.take_failure_counts.remote() for w in self.workers]):
            for k, v in counts.items():
                out[k] = out.get(k, 0.0) + v
        return out

    def close(self) -> None:
        for w in self.workers:
            ray.kill(w)
        self.workers.clear()  # in place: the slots hold the same list


# ------------------------------------------------------------------------------------- learner
class LearnerGroup:
    """`distributed.learner_procs` learner ranks with the Learner's methods (rank 0's results).

    With more than one rank they form a torch.distributed group (gloo on CPU, NCCL on GPU) whose
    rendezvous is rank 0's node and a free port it picks; each rank's `Learner` gets the
    `DataParallel` of its rank. Methods mutate nothing on the driver's side: `train_on_batch`
    fills `old_logprobs` on the workers' copies of the batch, not on the caller's.
    """

    def __init__(self, cfg):
        d = cfg.distributed
        actor = ray.remote(num_cpus=d.worker_cpus, num_gpus=d.worker_gpus)(LearnerWorker)
        self.workers = [actor.remote(cfg, rank, d.learner_procs) for rank in range(d.learner_procs)]
        addr, port = ray.get(self.workers[0].address.remote()) if d.learner_procs > 1 else (None, None)
        get_all([w.setup.remote(addr, port) for w in self.workers])  # all ranks join the group together

    def _call(self, method: str, *args, **kwargs) -> list:
        payload = ray.put((args, kwargs))  # one copy of the batch for every rank
        return [w.call.remote(method, payload) for w in self.workers]

    def _all(self, method: str, *args, **kwargs) -> Any:
        return get_all(self._call(method, *args, **kwargs))[0]

    def logprobs(self, batch: RolloutBatch, *, reference: bool = False) -> torch.Tensor:
        return self._all("logprobs", batch, reference=reference)

    def train_on_batch(self, batch: RolloutBatch, advantages: torch.Tensor, spec, *, epochs: int = 1,
                       mini_batches: int = 1, seed: int = 0) -> dict[str, float]:
        return self._all("train_on_batch", batch, advantages, spec, epochs=epochs,
                         mini_batches=mini_batches, seed=seed)

    def weights_ref(self) -> ray.ObjectRef:
        """Rank 0's full CPU weights, left in the object store: `RolloutPool.sync_weights(ref)`
        sends them to the replicas without a round trip through the driver."""
        return self._call("state_dict")[0]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._all("state_dict")

    def num_parameters(self) -> tuple[int, int]:
        return self._all("num_parameters")

    def save_checkpoint(self, run_dir, step: int, *, tokenizer, state: dict[str, Any], keep_last: int,
                        extra_dirs=None):
        """Written by rank 0 on its node (the run directory must be shared storage across nodes)."""
        if extra_dirs:  # writers are driver-side closures (the critic), which config validation refuses on Ray
            raise NotImplementedError("the Ray learner cannot write extra checkpoint parts: "
                                      f"{', '.join(extra_dirs)}")
        return self._all("save_checkpoint", run_dir, step, tokenizer=tokenizer, state=state, keep_last=keep_last)

    def load_checkpoint(self, path) -> dict[str, Any]:
        return self._all("load_checkpoint", path)

    def close(self) -> None:
        for w in self.workers:
            ray.kill(w)
        self.workers = []
