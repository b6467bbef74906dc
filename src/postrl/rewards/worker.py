"""A user reward function in its own process, so that a call that hangs cannot hang the trainer.

`WorkerFn(name, kwargs, timeout_s)` is called like the function itself (keyword arguments, TRL's
signature). The first call starts `python worker.py` (this file, run as a script so that the
`postrl.rewards` package and torch are not imported there), which loads `name` with
`user_code.load_attr` and answers calls over its stdin/stdout pipes (length-prefixed pickles; the
function's own prints go to stderr). A call that has not answered after `timeout_s` seconds gets
`CallTimeout`, and the worker's whole process group is killed (SIGKILL): a busy loop, a sleep or a
stuck child process all end there. The next call starts a fresh worker.

Costs, measured on the 2-core CPU box: starting a worker 40-70 ms plus the import of the user's
module (paid again after each timeout); a call adds two pickles and two pipe copies of the batch's
prompts, completions, token ids and columns: 0.1 ms for 64 completions of 50 tokens, 2.3 ms for
512 of 200 (a step's rollout takes seconds). The function's module-level state lives in the
worker (it survives between calls, not a timeout; its `random` is not the trainer's seeded one),
and a worker holds its own memory: a function that needs the trainer's own objects (say a model
on its GPU) should run in the trainer's process (`rewards[i].timeout_s: null`, no limit then).
The worker ignores SIGINT (the trainer decides what Ctrl-C does) and dies with the trainer
(PR_SET_PDEATHSIG on Linux, which fires when the thread that started it ends: a later call then
starts a new worker; elsewhere it exits at its next read when the trainer's pipe closes).
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from typing import Any

_HEADER = struct.Struct(">Q")
START_TIMEOUT_S = 60.0
"""Seconds a new worker may take to import the user's module (at least the call timeout)."""


class CallTimeout(Exception):
    """The function did not return within the timeout; its worker was killed."""


class CallFailed(Exception):
    """The function raised (the message is the worker's description of the exception), or its
    worker died."""


class WorkerDied(CallFailed):
    """The worker process ended during the call (os._exit, a crash, the out-of-memory killer)."""


class WorkerStartError(CallFailed):
    """The worker could not start or load the function (a setup problem, not a failed call)."""


# ------------------------------------------------------------------------------- trainer side
class WorkerFn:
    """`name` (`module:function` or `path/file.py:function`) with `kwargs` bound, run in a worker."""

    def __init__(self, name: str, kwargs: dict[str, Any], timeout_s: float, signature=None):
        self.name, self.kwargs, self.timeout_s = name, dict(kwargs), float(timeout_s)
        if signature is not None:  # the wrapped function's, so inspect.signature(self) reads it
            self.__signature__ = signature
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._finalizer = None
        self.starts = 0
        """Workers started so far (1 + the restarts after timeouts and crashes)."""

    def __call__(self, **call: Any) -> Any:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            try:
                _write(self._proc.stdin, pickle.dumps(call, protocol=pickle.HIGHEST_PROTOCOL))
            except (BrokenPipeError, OSError):
                self._stop()
                raise WorkerDied(f"ended its worker process before the call ({self._exit_text()})") from None
            return self._answer(time.monotonic() + self.timeout_s, "call")

    def close(self) -> None:
        with self._lock:
            self._stop()

    def __getstate__(self):  # a RewardSet can still be pickled (e.g. sent to a process) before a call
        return {k: v for k, v in self.__dict__.items() if k not in ("_proc", "_lock", "_finalizer")}

    def __setstate__(self, state):
        self.__dict__.update(state, _proc=None, _lock=threading.Lock(), _finalizer=None)

    def _start(self) -> None:
        self._stop()
        # -P (3.11+): do not put this file's directory first on sys.path (its modules would shadow)
        flags = ["-P"] if sys.version_info >= (3, 11) else []
        self._proc = subprocess.Popen([sys.executable, *flags, os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, cwd=os.getcwd(), start_new_session=True)
        self._finalizer = weakref.finalize(self, _kill, self._proc)  # also runs at interpreter exit
        self.starts += 1
        init = {"sys_path": list(sys.path), "name": self.name, "kwargs": self.kwargs, "ppid": os.getpid()}
        try:
            _write(self._proc.stdin, pickle.dumps(init))
            self._answer(time.monotonic() + max(START_TIMEOUT_S, self.timeout_s), "start")
        except CallTimeout:
            raise WorkerStartError(f"its worker process did not load {self.name!r} within "
                                   f"{max(START_TIMEOUT_S, self.timeout_s):g} s") from None
        except CallFailed as e:
            raise WorkerStartError(f"its worker process could not load it: {e}") from None

    def _answer(self, deadline: float, what: str) -> Any:
        try:
            data = _read(self._proc.stdout, deadline)
        except TimeoutError:
            self._stop()
            raise CallTimeout(what) from None
        except EOFError:
            self._stop()
            raise WorkerDied(f"ended its worker process during the {what} ({self._exit_text()}; e.g. "
                             "os._exit, a crash or the out-of-memory killer)") from None
        status, value = pickle.loads(data)
        if status == "error":
            raise CallFailed(value)
        return value

    def _exit_text(self) -> str:
        code = self._proc.poll() if self._proc is not None else None
        return f"exit code {code}" if code is not None else "no exit code"

    def _stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # kills and reaps; a finalizer runs at most once
        self._finalizer = None


def _kill(proc: subprocess.Popen) -> None:
    """Kill the worker and every process it started (its own process group), then reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
    for stream in (proc.stdin, proc.stdout):
        try:
            stream.close()
        except OSError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _write(stream, data: bytes) -> None:
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read(stream, deadline: float | None = None) -> bytes:
    """One length-prefixed message; TimeoutError after `deadline` (time.monotonic), EOFError at EOF."""
    fd = stream.fileno()
    header = _read_exact(fd, _HEADER.size, deadline)
    return _read_exact(fd, _HEADER.unpack(header)[0], deadline)


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


# -------------------------------------------------------------------------------- worker side
def describe_exception(e: BaseException) -> str:
    """`Type: message (at file line N in fn)`: the innermost frame, i.e. where the user code failed."""
    import traceback

    frames = traceback.extract_tb(e.__traceback__)
    where = f" (at {frames[-1].filename} line {frames[-1].lineno} in {frames[-1].name})" if frames else ""
    return f"{type(e).__name__}: {e}{where}"


def _die_with_parent(ppid: int) -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != ppid:  # the trainer died before prctl took effect
        os._exit(0)


def _serve() -> None:
    channel = os.fdopen(os.dup(1), "wb")  # the protocol's own descriptor
    os.dup2(2, 1)  # the function's prints go to stderr, never into the protocol
    inp = sys.stdin.buffer
    init = pickle.loads(_read(inp))
    sys.path[:] = init["sys_path"]  # the trainer's (run as a script, ours starts with this directory)
    _die_with_parent(init["ppid"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import functools

        from postrl.user_code import load_attr

        fn = functools.partial(load_attr(init["name"], f"reward {init['name']!r}"), **init["kwargs"])
        reply: tuple = ("ready", None)
    except BaseException as e:  # noqa: BLE001 - everything goes back to the trainer as text
        reply = ("error", describe_exception(e))
    _write(channel, pickle.dumps(reply))
    if reply[0] == "error":
        return
    while True:
        try:
            call = pickle.loads(_read(inp))
        except EOFError:  # the trainer closed the pipe
            return
        try:
            reply = ("ok", fn(**call))
        except BaseException as e:  # noqa: BLE001 - SystemExit included: report it, keep serving
            reply = ("error", describe_exception(e))
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # noqa: BLE001
            data = pickle.dumps(("error", f"returned a value that cannot be sent back to the trainer "
                                          f"({type(e).__name__}: {e}); return a list of floats"))
        _write(channel, data)


if __name__ == "__main__":
    _serve()
