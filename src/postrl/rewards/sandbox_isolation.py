"""Which kernel isolation the sandbox gets on this machine, and the command line that applies it.

Three levels, strongest first (`sandbox_launcher.py` does the work inside the child):
  full        user + mount + pid + network + IPC + UTS namespaces, a private root (pivot_root into
              a tmpfs with read-only system and interpreter directories: no project files, no
              $HOME, no /etc, no /proc), a size-limited tmpfs working directory, capabilities
              dropped, no_new_privs, and when the trainer is root an unprivileged uid (nobody)
  namespaces  the same namespaces and dropped capabilities, but the host filesystem, and the
              trainer's uid unless nobody can read the interpreter (for kernels where the mounts
              of "full" fail)
  none        no namespaces: only what `sandbox_prelude.py` does inside the interpreter (audit
              hook, resource limits) plus the scrubbed environment, temp dir and group kill
`protections(python)` probes them once per interpreter by running a small program through each
level, strongest first, and keeps the first that works; what it found is MEASURED inside the
child (its uid and pid, the network interfaces it sees, whether a project file is visible,
whether chroot and an over-limit fork are refused), logged once, and returned as `Protections`.
"""

from __future__ import annotations

import json
import logging
import marshal
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

Level = Literal["full", "namespaces", "none"]
LEVELS: tuple[Level, ...] = ("full", "namespaces", "none")
MIN_PATH = "/usr/local/bin:/usr/bin:/bin"
LAUNCHER = Path(__file__).with_name("sandbox_launcher.py").read_text(encoding="utf-8")
SETUP_FAILED = 6
"""Exit code of the launcher when a namespace or mount step failed (nothing untrusted ran)."""
NOBODY = 65534
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
_FILES = ("/etc/ld.so.cache",)  # the dynamic linker's index: without it libraries outside /lib are not found
_log = logging.getLogger("postrl.sandbox")
_PROBE_LOCK = threading.Lock()

_INFO = r"""
import json, os, sys, sysconfig
exe = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
libdir = sysconfig.get_config_var("LIBDIR") if sysconfig.get_config_var("Py_ENABLE_SHARED") else None
print(json.dumps({"executable": exe, "paths": [p for p in sys.path if p], "libdir": libdir}))
"""

_PROBE = r"""
import json, os, resource, socket, sys
facts = {"uid": os.getuid(), "pid": os.getpid(), "root_switch": sys.argv[2] if len(sys.argv) > 2 else "none"}
facts["visible"] = [m for m in json.loads(sys.argv[1]) if os.path.exists(m)]
try:
    facts["interfaces"] = sorted(name for _, name in socket.if_nameindex())
except OSError:
    facts["interfaces"] = None
try:
    os.chroot("/")  # needs CAP_SYS_CHROOT: refused when the capabilities are gone
    facts["capabilities"] = True
except OSError:
    facts["capabilities"] = False
resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
try:
    child = os.fork()
except OSError:
    facts["nproc_enforced"] = True
else:
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    facts["nproc_enforced"] = False
st = os.statvfs(".")
facts["workdir_mb"] = st.f_blocks * st.f_frsize >> 20
print(json.dumps(facts))
"""


@dataclass(frozen=True)
class Protections:
    """What a sandboxed run gets on this machine (measured by `protections`)."""

    level: Level
    """The strongest level that worked: "full", "namespaces" or "none"."""
    reason: str
    """Why a stronger level was not used ("" at "full")."""
    network_namespace: bool
    """The child saw only a loopback interface (its own network namespace)."""
    pid_namespace: bool
    """The child was pid 2 of its own pid namespace: it cannot see or signal the trainer, and every
    process it starts dies when the namespace's init does."""
    private_root: str | None
    """"pivot_root" or "chroot" when the child ran in a private root (None: the host filesystem)."""
    project_files_hidden: bool
    """A project file (this module's source) did not exist for the child."""
    uid: int
    """The host uid the program runs as: 65534 (nobody) when the trainer is root and the namespaces
    allow the switch (always at "full"; at "namespaces" only if nobody can read the interpreter)."""
    capabilities_dropped: bool
    """chroot("/") was refused: the child holds no capabilities."""
    nproc_enforced: bool
    """A fork over RLIMIT_NPROC=1 was refused, so `max_processes` is enforced (the kernel does not
    enforce it for host uid 0)."""
    workdir_limit_mb: int | None
    """Size of the working directory's own tmpfs (None: a directory on the host's temp disk)."""
    always: tuple[str, ...] = ("separate process in its own session, killed as a group at the wall-clock limit",
                               "environment scrubbed to PATH, HOME, TMPDIR, LC_ALL",
                               "fresh temporary working directory, removed afterwards",
                               "rlimits: CPU seconds, address space, file size, processes, open files, no core",
                               "stdout/stderr drained and cut to their tail",
                               "audit hook: no sockets, processes, signals, ctypes; no reads or writes outside "
                               "the working directory and the standard library")

    def summary(self) -> str:
        """One line for the log."""
        parts = [f"level={self.level}", f"network_namespace={self.network_namespace}",
                 f"pid_namespace={self.pid_namespace}", f"private_root={self.private_root}",
                 f"project_files_hidden={self.project_files_hidden}", f"uid={self.uid}",
                 f"capabilities_dropped={self.capabilities_dropped}", f"nproc_enforced={self.nproc_enforced}",
                 f"workdir_limit_mb={self.workdir_limit_mb}"]
        return "sandbox protections: " + ", ".join(parts) + (f" ({self.reason})" if self.reason else "")

    def as_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=None)
def interpreter(python: str) -> dict:
    """The real interpreter behind `python` (a venv's python resolves to its base) and the
    directories it imports the standard library from under `-I -S`."""
    try:
        out = subprocess.run([python, "-I", "-S", "-c", _INFO], capture_output=True, text=True, timeout=30,
                             env={"PATH": MIN_PATH}, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"sandbox: cannot run the interpreter {python!r}: {e}") from None
    if out.returncode != 0:
        raise RuntimeError(f"sandbox: cannot run the interpreter {python!r}: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout)


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


@lru_cache(maxsize=None)
def _private_root_spec(python: str) -> dict:
    """binds / links / devices of the private root for `python` (computed once). Raises ValueError
    if the interpreter's own directories would expose the project or $HOME ("full" is not used)."""
    info = interpreter(python)
    links, binds = {}, []
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            links[d] = os.readlink(d)
        elif os.path.isdir(d):
            binds.append(d)
    system = [os.path.realpath(b) for b in binds]
    wanted = [info["executable"], *info["paths"], *([info["libdir"]] if info["libdir"] else [])]
    extra: list[str] = []
    for path in sorted({os.path.realpath(p) for p in wanted if os.path.exists(p)}, key=len):
        if not any(_under(path, s) for s in system + extra):
            extra.append(path)
    try:
        cwd = os.getcwd()
    except OSError:  # the trainer's directory was deleted
        cwd = "/"
    secret = [os.path.realpath(p) for p in (cwd, str(Path.home()), str(Path(__file__).parents[1]))]
    for path in extra:
        for s in secret:
            if _under(s, path):
                raise ValueError(f"the interpreter directory {path} contains {s}; binding it would expose it")
    return {"binds": binds + extra + [f for f in _FILES if os.path.isfile(f)],
            "links": links, "devices": [d for d in _DEVICES if os.path.exists(d)]}


def _readable_by_others(info: dict) -> bool:
    """Whether `nobody` can run the interpreter where it is (level "namespaces" has no private root
    to bind it into): every directory on the way searchable, the files readable, by others."""
    for path in [info["executable"], *info["paths"], *([info["libdir"]] if info["libdir"] else [])]:
        if not os.path.exists(path):
            continue
        node = Path(path)
        for parent in [node, *node.parents]:
            mode = parent.stat().st_mode
            need = 0o005 if parent.is_dir() else 0o004
            if mode & need != need:
                return False
    return True


def command(level: Level, python: str, work: str, inner: list[str], *, disk_mb: int,
            probe: bool = False) -> list[str]:
    """The argv that runs `inner` (an interpreter command line) at `level` in the directory `work`."""
    if level == "none":
        return inner
    info = interpreter(python)
    cfg = {"level": level, "work": work, "argv": inner, "disk_mb": int(disk_mb), "probe": probe,
           "disk_inodes": 4096 + 64 * int(disk_mb), "links": {}, "binds": [], "devices": [],
           "switch_uid": level == "full" or _readable_by_others(info)}
    if level == "full":
        cfg.update(_private_root_spec(python))
    return [interpreter(python)["executable"], "-I", "-S", "-B", "-c", LAUNCHER, marshal.dumps(cfg).hex()]


def _probe(level: Level, python: str) -> tuple[dict | None, str]:
    """Run the probe program at `level`: (facts, "") or (None, why it failed)."""
    exe = interpreter(python)["executable"]
    work = tempfile.mkdtemp(prefix="postrl-sandbox-probe-")
    try:
        Path(work, "program.py").write_text("", encoding="utf-8")
        markers = [os.path.realpath(__file__), "/etc/passwd"]
        inner = [exe, "-I", "-S", "-B", "-c", _PROBE, json.dumps(markers)]
        if level == "full":
            try:
                _private_root_spec(python)
            except ValueError as e:
                return None, str(e)
        argv = command(level, python, work, inner, disk_mb=8, probe=True)
        try:
            out = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                                 env={"PATH": MIN_PATH, "HOME": work, "TMPDIR": work, "LC_ALL": "C.UTF-8"},
                                 start_new_session=True)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, f"{level}: {e}"
        if out.returncode != 0:
            lines = out.stderr.strip().splitlines()
            return None, f"{level}: {lines[-1] if lines else f'exit code {out.returncode}'}"
        return json.loads(out.stdout.strip().splitlines()[-1]), ""
    finally:
        shutil.rmtree(work, ignore_errors=True)


def protections(python: str | None = None, strongest: Level = "full") -> Protections:
    """The strongest level at or below `strongest` that works here, with what it was measured to
    give. Probed once per (interpreter, strongest) and logged once (a warning below "full")."""
    with _PROBE_LOCK:  # code_tests starts several runs at once: probe (and log) only once
        return _protections(python or sys.executable, strongest)


@lru_cache(maxsize=None)
def _protections(python: str, strongest: Level) -> Protections:
    reasons: list[str] = []
    for level in LEVELS[LEVELS.index(strongest):]:
        facts, why = _probe(level, python)
        if facts is None:
            reasons.append(why)
            continue
        found = Protections(
            level=level, reason="; ".join(reasons), network_namespace=facts["interfaces"] == ["lo"],
            pid_namespace=facts["pid"] == 2 and level != "none",
            private_root=facts["root_switch"] if facts["root_switch"] != "none" else None,
            project_files_hidden=os.path.realpath(__file__) not in facts["visible"],
            uid=NOBODY if os.geteuid() == 0 and level != "none" and facts["uid"] == 1 else os.geteuid(),
            capabilities_dropped=not facts["capabilities"], nproc_enforced=facts["nproc_enforced"],
            workdir_limit_mb=facts["workdir_mb"] if level == "full" else None)
        (_log.info if level == "full" else _log.warning)(found.summary())
        return found
    raise RuntimeError("sandbox: even the plain interpreter could not run the probe: " + "; ".join(reasons))
