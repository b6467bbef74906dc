"""Calling many environments at once, each with its own deadline.

Sync `step`/`reset` calls run in daemon threads (an env stuck past its deadline is abandoned,
and a daemon thread cannot keep the process alive); `async def astep` calls run together on one
event loop in their own thread, each under `asyncio.wait_for`. A call that misses its deadline
gives `TIMED_OUT`; an exception raised by the env is returned (the caller adds context and
re-raises). The env objects are only touched by their own call, so no locking is needed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable

TIMED_OUT = object()
"""Marker for a call that did not finish before its deadline."""


def call_all(calls: list[tuple[Callable[[], Any] | None, Callable[[], Any] | None]],
             timeouts: list[float | None]) -> list[Any]:
    """Run every call concurrently; `calls[i]` = (sync fn, async fn) with exactly one set.

    Returns, per call, its result, the exception it raised, or `TIMED_OUT`.
    """
    n = len(calls)
    results: list[Any] = [TIMED_OUT] * n  # written by the workers
    out: list[Any] = [TIMED_OUT] * n  # read once per call when it is judged: a late finish changes nothing
    start = time.monotonic()
    deadlines = [None if t is None else start + t for t in timeouts]

    def run_sync(i: int, fn: Callable[[], Any]) -> None:
        try:
            results[i] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the caller with context
            results[i] = e

    threads: list[tuple[int, threading.Thread]] = []
    for i, (sync_fn, _) in enumerate(calls):
        if sync_fn is not None:
            th = threading.Thread(target=run_sync, args=(i, sync_fn), daemon=True, name=f"env-step-{i}")
            th.start()
            threads.append((i, th))
    async_ids = [i for i, (sync_fn, _) in enumerate(calls) if sync_fn is None]
    loop_thread = None
    if async_ids:
        async def one(i: int) -> None:
            try:
                coro = calls[i][1]()
                results[i] = await (asyncio.wait_for(coro, timeouts[i]) if timeouts[i] is not None else coro)
            except asyncio.TimeoutError:
                results[i] = TIMED_OUT
            except BaseException as e:  # noqa: BLE001
                results[i] = e

        async def gather() -> None:
            await asyncio.gather(*(one(i) for i in async_ids))

        # its own thread: the caller may already be inside a running event loop (a notebook)
        loop_thread = threading.Thread(target=lambda: asyncio.run(gather()), daemon=True, name="env-astep")
        loop_thread.start()
    for i, th in threads:
        th.join(None if deadlines[i] is None else max(0.0, deadlines[i] - time.monotonic()))
        out[i] = TIMED_OUT if th.is_alive() else results[i]
    if loop_thread is not None:
        # an astep that blocks the loop (time.sleep in async code) cannot be cancelled: stop
        # waiting at the last deadline, plus a moment for cancellations to land
        last = [deadlines[i] for i in async_ids]
        loop_thread.join(None if None in last else max(0.0, max(last) - time.monotonic()) + 0.5)
        for i in async_ids:
            out[i] = results[i]  # still TIMED_OUT if the loop never got to it
    return out


def has_astep(env: Any) -> bool:
    """The env defines `astep` (the rollout awaits it instead of calling `step`)."""
    return callable(getattr(env, "astep", None))
