"""The first code a sandboxed child interpreter runs (passed by `sandbox.py` as `python -I -S -B -c`).

It is not imported by postrl: `sandbox.py` reads this file's text and hands it to a fresh
interpreter, with its config as `sys.argv[1]` (marshal, hex). In order, before any untrusted
code runs, it
  1. lowers the resource limits (CPU seconds, address space, file size, processes, open files,
     core size; soft = hard, so the program cannot raise them again),
  2. replaces `socket.socket` with a refusal and installs an audit hook (hooks cannot be removed)
     that refuses sockets, new processes (fork, exec, spawn, subprocess, os.system), signals,
     ctypes, changing resource limits, writes / deletes / renames outside the sandbox directory,
     and reads / directory listings outside it and the standard library (the directories on
     `sys.path` at start-up; the portable stand-in for the private root of sandbox_launcher.py),
  3. runs `program.py`, then the tests read from stdin (if any), in one `__main__` namespace,
and exits with a code `sandbox.py` maps to a status:
  0 the program (and every test) ran to the end    1 an AssertionError escaped (a test failed)
  2 any other exception (traceback on stderr)       3 a refused operation escaped (stderr says which)
  4 the program exited (SystemExit / os._exit) before the tests finished
  5 the program does not compile (SyntaxError), so nothing ran
An audit hook runs inside the same interpreter as the program, so it stops accidental and naive
misuse, not a determined attacker (see docs/code_rewards.md for what is and is not isolated).
"""

import marshal
import resource
import sys

_CONFIG = marshal.loads(bytes.fromhex(sys.argv[1]))  # marshal, not json: no import cost per run
for _name, _value in _CONFIG["limits"].items():
    _limit = getattr(resource, _name)
    # Soft CPU limit -> SIGXCPU (reported as a timeout); the hard one a second later -> SIGKILL.
    _hard = _value + 1 if _name == "RLIMIT_CPU" else _value
    resource.setrlimit(_limit, (_value, _hard))

import builtins  # noqa: E402  (after the limits: nothing below runs unbounded)
import os  # noqa: E402
import traceback  # noqa: E402

_ROOT = os.path.realpath(_CONFIG["root"])
# Readable besides the sandbox directory: the standard library (sys.path under -I -S: the zip, the
# stdlib and lib-dynload) and the harmless devices.
_READABLE = tuple(os.path.realpath(p) for p in sys.path if p)
_DEVICES = {os.devnull, "/dev/zero", "/dev/random", "/dev/urandom"}
_REFUSED_PREFIXES = ("socket.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "ctypes.")
_REFUSED = {"os.system", "os.fork", "os.forkpty", "os.kill", "os.killpg", "signal.pthread_kill",
            "resource.setrlimit", "resource.prlimit", "os.startfile", "pty.spawn"}
_REFUSED_IMPORTS = {"_posixsubprocess", "_ctypes", "posix"}  # posix: a fresh copy restores _exit
# Events whose path arguments must stay inside the sandbox directory (index of each path arg).
_WRITE_EVENTS = {"os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.chmod": (0,),
                 "os.chown": (0,), "os.truncate": (0,), "os.utime": (0,), "os.rename": (0, 1),
                 "os.link": (0, 1), "os.symlink": (1,), "os.setxattr": (0,), "os.removexattr": (0,),
                 "os.chflags": (0,), "os.lchflags": (0,), "shutil.rmtree": (0,)}
# Events whose first argument is a path the program reads (open: any mode; sqlite3: its database).
_READ_EVENTS = {"open", "os.listdir", "os.scandir", "sqlite3.connect"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class SandboxRefusal(PermissionError):
    """An operation the sandbox does not allow."""


def _under(real: str, parent: str) -> bool:
    return real == parent or real.startswith(parent + os.sep)


def _inside(path) -> bool:
    if isinstance(path, int):  # an open file descriptor: it was checked when it was opened
        return True
    real = os.path.realpath(os.fsdecode(path))
    return _under(real, _ROOT) or real == os.devnull


def _readable(path) -> bool:
    if isinstance(path, int):
        return True
    real = os.path.realpath(os.fsdecode(path if path is not None else "."))
    return _under(real, _ROOT) or real in _DEVICES or any(_under(real, p) for p in _READABLE)


def _writes(mode, flags) -> bool:
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return True
    return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)


def _audit(event: str, args: tuple) -> None:
    if event in _REFUSED or event.startswith(_REFUSED_PREFIXES):
        raise SandboxRefusal(f"sandbox: {event} is not allowed")
    if event == "import" and args and args[0] in _REFUSED_IMPORTS:
        raise SandboxRefusal(f"sandbox: importing {args[0]} is not allowed")
    if event == "open" and len(args) >= 3 and _writes(args[1], args[2]) and not _inside(args[0]):
        raise SandboxRefusal(f"sandbox: writing {args[0]!r} outside the sandbox directory is not allowed")
    if event in _READ_EVENTS and args and not _readable(args[0]):
        raise SandboxRefusal(f"sandbox: {event} of {args[0]!r} outside the sandbox directory and the standard "
                             "library is not allowed")
    paths = _WRITE_EVENTS.get(event)
    if paths is not None:
        for i in paths:
            if i < len(args) and args[i] is not None and not _inside(args[i]):
                raise SandboxRefusal(f"sandbox: {event} on {args[i]!r} outside the sandbox directory "
                                     "is not allowed")


def _refused_exit(*args, **kwargs):
    raise SandboxRefusal("sandbox: os._exit is not allowed; return or raise instead")


def _refused_socket(*args, **kwargs):
    raise SandboxRefusal("sandbox: socket.__new__ is not allowed")


import socket  # noqa: E402  (imported before the hook refuses _socket, then disarmed)

os._exit = _refused_exit  # an early os._exit(0) would skip the tests and look like a pass
sys.modules["posix"]._exit = _refused_exit
if _CONFIG.get("audit", True):  # off only in the tests of the kernel-enforced layers
    socket.socket = socket.create_connection = _refused_socket
    sys.addaudithook(_audit)


def _main() -> int:
    # The tests come on stdin, never on disk where the program could read them, and live only in
    # this frame (not in a module global the program could import); the program sees an empty stdin.
    tests = sys.stdin.read() if _CONFIG["tests"] else None
    sys.stdin.close()
    sys.stdin = open(os.devnull, encoding="utf-8")
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    with open("program.py", encoding="utf-8") as f:
        sources = [("program.py", f.read())] + ([("tests.py", tests)] if tests is not None else [])
    del tests
    sys.argv = ["program.py"]
    for k, (filename, source) in enumerate(sources):
        try:
            code = compile(source, filename, "exec")
        except (SyntaxError, ValueError):  # ValueError: a null byte in the source
            traceback.print_exc()
            return 5 if k == 0 else 2
        try:
            exec(code, namespace)
        except SystemExit as e:
            if k + 1 < len(sources):  # an exit before the tests ran is not a pass
                print(f"sandbox: the program exited ({e.code!r}) before the tests finished", file=sys.stderr)
                return 4
            if e.code is None or e.code == 0:
                return 0
            print(f"sandbox: the program exited with {e.code!r}", file=sys.stderr)
            return 2
        except AssertionError:
            traceback.print_exc()
            return 1
        except SandboxRefusal:
            traceback.print_exc()
            return 3
        except BaseException:  # noqa: BLE001  (any failure of untrusted code is reported, not raised)
            traceback.print_exc()
            return 2
    return 0


_code = _main()
sys.stdout.flush()
sys.stderr.flush()
raise SystemExit(_code)
