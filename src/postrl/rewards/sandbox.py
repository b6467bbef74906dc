"""The execution sandbox: run an untrusted Python program (and its tests) in a contained child process.

`run_python(code, tests=..., timeout_s=..., memory_mb=...) -> SandboxResult` is the one entry
point; code rewards (`code_tests`) and PRLCoder's label construction call it. Each run gets:
  - a separate process (`python -I -S -B`: no site-packages, no user site, PYTHON* variables
    ignored, the script directory not on sys.path) in its own session / process group;
  - a fresh temporary directory as cwd (deleted afterwards) and a scrubbed environment: only a
    minimal PATH, and HOME/TMPDIR pointing at that directory — nothing is inherited;
  - resource limits set in the child before the program runs (`sandbox_prelude.py`): CPU seconds,
    address space, file size, number of processes, open files, no core dumps;
  - a wall-clock timeout that SIGKILLs the whole process group;
  - stdout/stderr drained continuously and only the last `max_output_bytes` of each kept;
  - kernel isolation, the strongest level that works here (`sandbox_isolation.py` probes it once
    and logs what it found; `sandbox_launcher.py` applies it): user, mount, pid, network, IPC and
    UTS namespaces, a private read-only root without the project, $HOME or /etc, a size-limited
    tmpfs working directory, no capabilities and (trainer = root) the unprivileged uid nobody;
  - always, an audit hook that refuses sockets, subprocesses, fork/exec, signals, ctypes, and
    reads or writes outside the sandbox directory and the standard library.
What this does not isolate is listed in docs/code_rewards.md.
"""

from __future__ import annotations

import marshal
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from postrl.rewards.sandbox_isolation import LEVELS, MIN_PATH, SETUP_FAILED, command, interpreter, protections

Status = Literal["passed", "failed", "timeout", "error"]

_PRELUDE = (Path(__file__).with_name("sandbox_prelude.py")).read_text(encoding="utf-8")
# Exit codes of sandbox_prelude.py -> (status, reason).
_EXIT = {1: ("failed", "a test (assert) failed"), 2: ("error", "the program raised an exception"),
         3: ("error", "the program tried an operation the sandbox refuses"),
         4: ("error", "the program exited before the tests finished"),
         5: ("error", "the program does not compile"),
         SETUP_FAILED: ("error", "the sandbox could not be set up (see stderr); nothing ran")}
COMPILE_ERROR = 5
"""`SandboxResult.returncode` of a program that does not compile (a SyntaxError before anything ran)."""


@dataclass(frozen=True)
class SandboxResult:
    """The outcome of one sandboxed run."""

    status: Status
    """passed: ran to the end (tests included) with exit 0; failed: an assert failed; timeout:
    wall-clock or CPU limit hit; error: anything else (exception, memory, refused operation,
    non-zero exit, killed by a signal)."""
    reason: str
    """One line saying why (e.g. "wall-clock timeout after 2.0 s", "the program raised an exception")."""
    stdout: str
    """The last `max_output_bytes` of stdout (decoded as UTF-8, invalid bytes replaced)."""
    stderr: str
    """The last `max_output_bytes` of stderr (the traceback of a failure ends up here)."""
    returncode: int | None
    """The child's exit code; negative for a signal; None if it could not be started."""
    seconds: float
    """Wall-clock seconds from start to the end of the child."""
    truncated: bool
    """True if stdout or stderr was longer than `max_output_bytes` and only its tail was kept."""
    network_namespace: bool
    """True if the child ran in its own network namespace (no interfaces up)."""
    isolation: str = "none"
    """The kernel isolation level it ran at: "full", "namespaces" or "none" (sandbox_isolation.py)."""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def compile_error(self) -> bool:
        """True if the program did not compile, so none of it ran."""
        return self.returncode == COMPILE_ERROR


def run_python(code: str, *, tests: str | None = None, timeout_s: float = 5.0, memory_mb: int = 512,
               cpu_s: int | None = None, max_output_bytes: int = 16_384, max_file_mb: int = 16,
               max_processes: int = 64, max_open_files: int = 64, max_disk_mb: int = 64,
               isolation: Literal["auto", "full", "namespaces", "none"] = "auto",
               python: str | None = None, audit_hook: bool = True) -> SandboxResult:
    """Run `code` (then `tests`, in the same namespace) in a contained child interpreter.

    timeout_s: wall-clock limit; the whole process group is killed at it.
    memory_mb: address-space limit (RLIMIT_AS); an allocation beyond it raises MemoryError.
    cpu_s: CPU-seconds limit (RLIMIT_CPU), default ceil(timeout_s).
    max_output_bytes: bytes of stdout and of stderr kept (the tail; the rest is drained, dropped).
    max_file_mb: largest file the program may write (RLIMIT_FSIZE).
    max_processes: RLIMIT_NPROC (threads count too), a backstop behind the audit hook that
        refuses fork/exec; enforced per sandbox at level "full", not enforced for host root below it.
    max_disk_mb: size of the working directory's tmpfs at level "full" (elsewhere only
        `max_file_mb` per file bounds the disk).
    isolation: "auto" uses the strongest level that works here (`protections()`); "full" or
        "namespaces" require at least that level (RuntimeError naming why it is unavailable);
        "none" uses no namespaces (audit hook and rlimits only).
    python: the interpreter (default: this one; a venv's python runs as its base interpreter,
        which is the same thing under -I -S).
    audit_hook: False only to test the kernel-enforced layers on their own; never in training.
    """
    sizes = (timeout_s, memory_mb, max_output_bytes, max_file_mb, max_disk_mb, max_processes, max_open_files)
    if min(sizes) <= 0:
        raise ValueError("run_python: timeout_s, memory_mb, max_output_bytes, max_file_mb, max_disk_mb, "
                         f"max_processes and max_open_files must be positive, got {', '.join(map(str, sizes))}")
    if isolation not in ("auto", *LEVELS):
        raise ValueError(f"run_python: isolation must be 'auto', 'full', 'namespaces' or 'none', got {isolation!r}")
    python = python or sys.executable
    level = isolation
    if isolation in ("auto", "full", "namespaces"):
        found = protections(python)
        if isolation == "auto":
            level = found.level
        elif LEVELS.index(found.level) > LEVELS.index(isolation):
            raise RuntimeError(f"run_python: isolation={isolation!r} but only {found.level!r} works here "
                               f"({found.reason}); use isolation='auto' to run with what is available")
    cpu = cpu_s if cpu_s is not None else max(1, math.ceil(timeout_s))
    limits = {"RLIMIT_CPU": int(cpu), "RLIMIT_AS": int(memory_mb) << 20, "RLIMIT_FSIZE": int(max_file_mb) << 20,
              "RLIMIT_NPROC": int(max_processes), "RLIMIT_NOFILE": int(max_open_files), "RLIMIT_CORE": 0}

    root = tempfile.mkdtemp(prefix="postrl-sandbox-")
    try:
        Path(root, "program.py").write_text(code, encoding="utf-8")
        # The tests go in on stdin, not into the program's directory, where it could read them.
        config = marshal.dumps({"root": root, "limits": limits, "tests": tests is not None, "audit": audit_hook}).hex()
        inner = [interpreter(python)["executable"], "-I", "-S", "-B", "-c", _PRELUDE, config]
        argv = command(level, python, root, inner, disk_mb=max_disk_mb)
        env = {"PATH": MIN_PATH, "HOME": root, "TMPDIR": root, "LC_ALL": "C.UTF-8"}
        return _supervise(argv, root, env, timeout_s, max_output_bytes, level, tests or "")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _supervise(argv: list[str], cwd: str, env: dict, timeout_s: float, keep: int, level: str,
               stdin: str) -> SandboxResult:
    netns = level != "none"
    start = time.monotonic()
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, close_fds=True)
    except OSError as e:
        return SandboxResult("error", f"could not start the interpreter: {e}", "", "", None,
                             time.monotonic() - start, False, netns, level)
    # On a thread: tests longer than the pipe buffer must not block us before the timeout runs.
    threading.Thread(target=_feed, args=(proc.stdin, stdin.encode("utf-8")), daemon=True).start()
    out, err = _Tail(proc.stdout, keep), _Tail(proc.stderr, keep)
    try:
        timed_out = not _wait_unreaped(proc.pid, start + timeout_s)
    finally:
        # The child is exited-but-unreaped (or still running), so its pid, which is also the group
        # id, cannot have been reused: killing the group hits only the program and its descendants.
        _kill_group(proc.pid)
        proc.wait()
    seconds = time.monotonic() - start
    out.join()
    err.join()
    status, reason = _classify(proc.returncode, timed_out, timeout_s)
    return SandboxResult(status, reason, out.text(), err.text(), proc.returncode, seconds,
                         out.truncated or err.truncated, netns, level)


def _classify(returncode: int, timed_out: bool, timeout_s: float) -> tuple[Status, str]:
    if timed_out:
        return "timeout", f"wall-clock timeout after {timeout_s:g} s"
    if returncode == 0:
        return "passed", "ran to the end"
    if returncode in _EXIT:
        return _EXIT[returncode]
    if returncode == -signal.SIGXCPU:
        return "timeout", "CPU-time limit reached (SIGXCPU)"
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        hint = " (file-size limit)" if returncode == -signal.SIGXFSZ else ""
        return "error", f"killed by {name}{hint}"
    return "error", f"exit code {returncode}"


def _feed(pipe, data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except (BrokenPipeError, OSError):  # the child died before reading: its status says why
        pass


def _wait_unreaped(pid: int, deadline: float) -> bool:
    """Wait until the child exits (True) or `deadline` passes (False), without reaping it.

    Polls `waitid(WNOWAIT)` with a sleep that grows from 1 ms to 20 ms: a quick program costs at
    most a few ms of latency, and the zombie keeps its pid (the group id) from being reused."""
    pause = 0.001
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
            return True
        now = time.monotonic()
        if now >= deadline:
            return False
        time.sleep(min(pause, deadline - now))
        pause = min(pause * 2, 0.02)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Tail:
    """Drains a pipe on a thread (so a chatty child never blocks on a full pipe) keeping its last bytes."""

    def __init__(self, pipe, keep: int):
        self.keep, self.truncated = keep, False
        self._buf = bytearray()
        self._pipe = pipe
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while chunk := self._pipe.read1(65536):
            self._buf += chunk
            if len(self._buf) > self.keep:
                del self._buf[:len(self._buf) - self.keep]
                self.truncated = True
        self._pipe.close()

    def join(self) -> None:
        # The group is dead, so EOF comes at once; the bound only guards a descendant that left the
        # group while holding the pipe (it cannot fork under the audit hook, but be safe).
        self._thread.join(timeout=2.0)

    def text(self) -> str:
        return bytes(self._buf).decode("utf-8", errors="replace")
