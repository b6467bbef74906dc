"""Worker slots that outlive their Ray actors: a rollout or reward worker whose process dies is
re-created and its shard of the work redone.

A pool (`RolloutPool`, `RewardPool` in ray_runtime.py) keeps its actors in `WorkerSlots`. Each
result is fetched with `slots.get(i, worker, ref, redo)`: when the actor that ran it died
(`RayActorError`: the process was killed, crashed, or its node was lost), slot `i` gets a new actor
and `redo(new_actor)` submits the same shard again. What the redone shard needs beyond its
arguments, the pool's `redo` provides (a rollout worker first loads the weights version the shard
was sampled with, so the redone batch is the one the dead worker would have returned: sampling is
keyed on the seed and the global prompt index).

Re-creation is explicit rather than Ray's `max_restarts`, because a restarted actor runs its
constructor again and would silently sample with its initial weights. An exception raised by the
work itself (a reward function's bug: `RayTaskError`) is not a death and is raised as before.
A worker that hangs without dying is not detected here.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import ray

DEAD = (ray.exceptions.RayActorError,)


class WorkerSlots:
    """`n` actors made by `make()`; a dead one is replaced, at most `max_restarts` times per slot."""

    def __init__(self, make: Callable[[], Any], n: int, *, max_restarts: int, what: str):
        self.make, self.max_restarts, self.what = make, max_restarts, what
        self.workers = [make() for _ in range(n)]
        self.restarts = [0] * n

    def replace(self, i: int, dead, error: BaseException):
        """The live actor of slot `i`: a new one if `dead` still holds it (another result of the same
        dead actor may have replaced it already)."""
        if self.workers[i] is not dead:
            return self.workers[i]
        if self.restarts[i] >= self.max_restarts:
            raise RuntimeError(f"{self.what} {i} died {self.restarts[i] + 1} times; distributed.max_worker_restarts="
                               f"{self.max_restarts} allows no more re-creations (last error: {_first_line(error)})"
                               ) from error
        self.restarts[i] += 1
        warnings.warn(f"{self.what} {i} died ({type(error).__name__}: {_first_line(error)}); re-created it and "
                      f"redoing its shard (re-creation {self.restarts[i]} of at most {self.max_restarts})",
                      stacklevel=3)
        try:
            ray.kill(dead, no_restart=True)  # a merely unreachable actor must not come back as a twin
        except Exception:  # already gone
            pass
        self.workers[i] = self.make()
        return self.workers[i]

    def get(self, i: int, worker, ref, redo: Callable[[Any], Any]) -> Any:
        """`ray.get(ref)`, where `ref` was submitted to `worker` in slot `i`; if that actor died, the
        work is redone on slot `i`'s replacement by `redo(actor) -> ref`."""
        while True:
            try:
                return ray.get(ref)
            except DEAD as e:
                worker = self.replace(i, worker, e)
                ref = redo(worker)

    def total_restarts(self) -> int:
        return sum(self.restarts)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__
