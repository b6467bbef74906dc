"""The sandbox launcher: put the child interpreter in its own namespaces and a private root, then exec it.

Like `sandbox_prelude.py`, this is not imported by postrl: `sandbox.py` hands its text to a fresh
`python -I -S -B -c` (the launcher, C) with its config as `sys.argv[1]` (`marshal`, hex: unlike
json it costs no import, and this runs once per sandboxed program). It uses ctypes, which
is why it never runs the untrusted program itself: that only happens after an `exec` into a fresh
interpreter (the prelude), so none of this module's state survives into the program.

    trainer ── C launcher (host pid namespace; PR_SET_PDEATHSIG=SIGKILL, so it dies with the trainer)
                 ├─ H helper: stays in the host user namespace to write C's uid/gid maps, then exits
                 └─ G init, pid 1 of a new pid namespace: builds the private root, reaps orphans;
                      when it exits the kernel SIGKILLs everything left in the namespace
                      └─ P: drops to the unprivileged uid, no_new_privs, exec -> sandbox_prelude.py

Namespaces (one unshare call, the user namespace first so it owns the others): user, mount, pid,
network (only a loopback, down), IPC, UTS. Uid maps: when the trainer is root, ns uid 0 = host 0
(G needs it to reach the interpreter, which may sit under a 0700 $HOME) and ns uid 1 = host
`nobody` (65534), which P switches to (`switch_uid`), so the kernel enforces RLIMIT_NPROC (it does
not for host uid 0) and the program has no owner rights on host files (host uid 0 owns /usr, /etc,
/ ... and keeps an owner's rights without any capability); otherwise ns uid 0 = the trainer's uid.
The capability bounding set is emptied in G, so P's exec gains no capabilities even as ns root.

level "full" also gives P a private root: a tmpfs holding read-only binds of /usr, the /lib*
and /bin links, the interpreter's own directories, /etc/ld.so.cache and /dev/{null,zero,random,
urandom}, plus the working directory, a fresh size-limited tmpfs at the same path as the host
sandbox directory (`program.py` copied in). `pivot_root` swaps it in and the old root is
detached, so the project, $HOME, /etc and /proc do not exist for the program.
level "namespaces" skips the private root (for kernels where the mounts fail); it switches uid
only if `sandbox_isolation.py` found the interpreter readable by nobody.

Exit: C exits the way P did (same code, or killed by the same signal); 6 and a message on stderr
if the setup failed, before any untrusted code ran.
"""

import ctypes
import marshal
import os
import signal
import sys

_CONFIG = marshal.loads(bytes.fromhex(sys.argv[1]))
SETUP_FAILED = 6
NOBODY = 65534
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = 1024, 2048, 4096, 16384, 1 << 18, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 24, 38, 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
# statvfs flag -> mount flag: a bind of a mount whose flags are locked (inherited into a user
# namespace) may only be remounted read-only if those flags are repeated.
_LOCKED = {1: MS_RDONLY, 2: MS_NOSUID, 4: MS_NODEV, 8: MS_NOEXEC, 1024: MS_NOATIME, 2048: MS_NODIRATIME,
           4096: MS_RELATIME}
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}


class SetupError(Exception):
    """A step of the setup failed; nothing untrusted has run."""


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)}")


def _mount(source, target, fstype, flags, data=None) -> None:
    enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {source or ''} on {target}")


def _die_with_parent() -> None:
    parent = os.getppid()
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # the parent died before the prctl: nobody would kill us
        os._exit(SETUP_FAILED)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _map_ids(pid: int, root: bool) -> None:
    """Run by H, in the host user namespace: write the maps of C's new user namespace."""
    if root:
        # Host root may map several ids: ns 0 -> 0 for the setup, ns 1 -> nobody for the program.
        _write(f"/proc/{pid}/uid_map", f"0 0 1\n1 {NOBODY} 1\n")
        _write(f"/proc/{pid}/gid_map", f"0 0 1\n1 {NOBODY} 1\n")
    else:
        # An unprivileged user may map only itself, and must give up setgroups first.
        _write(f"/proc/{pid}/setgroups", "deny")
        _write(f"/proc/{pid}/uid_map", f"0 {os.geteuid()} 1\n")
        _write(f"/proc/{pid}/gid_map", f"0 {os.getegid()} 1\n")


def _unshare(root: bool) -> None:
    """C: enter the new namespaces; a forked helper still outside writes the id maps."""
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    me = os.getpid()
    helper = os.fork()
    if helper == 0:
        code = 1
        try:
            os.close(go_w)
            if os.read(go_r, 1) == b"u":
                _map_ids(me, root)
                code = 0
        except OSError as e:
            os.write(2, f"sandbox setup: writing the id maps failed: {e}\n".encode())
        os.write(done_w, bytes([code]))
        os._exit(code)
    os.close(go_r)
    os.close(done_w)
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    unshared = _libc.unshare(flags)
    err = ctypes.get_errno()
    os.write(go_w, b"u" if unshared == 0 else b"x")
    os.close(go_w)
    answer = os.read(done_r, 1)
    os.close(done_r)
    os.waitpid(helper, 0)
    if unshared != 0:
        raise SetupError(f"unshare(user, mount, pid, net, ipc, uts): {os.strerror(err)}")
    if answer != b"\x00":
        raise SetupError("the helper could not write the uid/gid maps of the new user namespace")


def _bind_ro(source: str, target: str) -> None:
    _mount(source, target, None, MS_BIND | MS_REC)
    locked = 0
    st_flags = os.statvfs(target).f_flag
    for bit, flag in _LOCKED.items():
        if st_flags & bit:
            locked |= flag
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | locked)


def _private_root(cfg: dict, root: bool) -> str:
    """G: build the new root on a tmpfs and pivot into it. Returns how the root was switched."""
    work = cfg["work"]
    with open(os.path.join(work, "program.py"), "rb") as f:
        program = f.read()
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates back to the host
    new = os.path.join(work, ".root")
    os.mkdir(new, 0o700)
    _mount("postrl-sandbox", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    for link, target in cfg["links"].items():
        os.symlink(target, new + link)
    for path in cfg["binds"]:
        inside = new + path
        if os.path.isdir(path):
            os.makedirs(inside, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(inside), exist_ok=True)
            open(inside, "wb").close()
        _bind_ro(path, inside)
    for dev in cfg["devices"]:
        os.makedirs(os.path.dirname(new + dev), exist_ok=True)
        open(new + dev, "wb").close()
        _mount(dev, new + dev, None, MS_BIND)  # keeps the host's device node usable (tmpfs here is nodev)
    # The working directory: a fresh tmpfs (bounds the disk the program can fill) at the same path.
    os.makedirs(new + work, 0o755, exist_ok=True)
    owner = "uid=1,gid=1," if root else ""
    _mount("postrl-work", new + work, "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={int(cfg['disk_mb'])}m,nr_inodes={int(cfg['disk_inodes'])},{owner}mode=0700")
    with open(new + work + "/program.py", "wb") as f:
        f.write(program)
    if root:
        os.chown(new + work + "/program.py", 1, 1)
    how = "pivot_root"
    old = new + "/.old"
    os.mkdir(old)
    number = _PIVOT_ROOT.get(os.uname().machine)
    if number is not None and _libc.syscall(number, os.fsencode(new), os.fsencode(old)) == 0:
        os.chdir("/")
        _check(_libc.umount2(b"/.old", MNT_DETACH), "umount the old root")
        os.rmdir("/.old")
    else:
        # No pivot_root here: chroot, which is escapable only with CAP_SYS_CHROOT, dropped below.
        os.chdir(new)
        os.chroot(new)
        os.rmdir("/.old")
        how = "chroot"
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    return how


def _drop_bounding_set() -> None:
    cap = 0
    while _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    if cap == 0:
        raise SetupError("prctl(PR_CAPBSET_DROP) failed: cannot drop capabilities")


def _program(cfg: dict, root: bool, how: str | None) -> None:
    """P: become unprivileged, then exec the prelude (or the probe). Never returns."""
    if root and cfg["switch_uid"]:
        os.setgroups([])
        os.setresgid(1, 1, 1)
        os.setresuid(1, 1, 1)  # leaving uid 0 clears every capability
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    _die_with_parent()  # after the uid change, which would clear it
    os.chdir(cfg["work"])
    argv = cfg["argv"] + ([how or "none"] if cfg.get("probe") else [])  # the probe reports the root switch
    os.execv(argv[0], argv)


def _exit_by_signal(sig: int) -> None:
    """Leave killed by `sig`, as P was, so the trainer sees the same status as without namespaces."""
    import resource
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # re-raising SIGXCPU must not dump core
    if sig not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot be caught: already default
        signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)  # a signal that does not kill (none of P's fatal ones): exit with its code


def _init(cfg: dict, root: bool) -> None:
    """G, pid 1: set up, start P, reap until P ends, then leave (the kernel kills the rest)."""
    try:
        _die_with_parent()
        how = _private_root(cfg, root) if cfg["level"] == "full" else None
        if root and cfg["switch_uid"] and how is None:  # the program's host directory, for ns uid 1
            for name in (cfg["work"], os.path.join(cfg["work"], "program.py")):
                os.chown(name, 1, 1)
        _drop_bounding_set()
    except (SetupError, OSError) as e:
        os.write(2, f"sandbox setup failed: {e}\n".encode())
        os._exit(SETUP_FAILED)
    child = os.fork()
    if child == 0:
        try:
            _program(cfg, root, how)
        except (SetupError, OSError) as e:
            os.write(2, f"sandbox setup failed: {e}\n".encode())
        os._exit(SETUP_FAILED)
    while True:  # pid 1 inherits every orphan in the namespace: reap them until P is done
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(SETUP_FAILED)
        if pid == child:
            break
    # pid 1 cannot kill itself with a signal: hand P's signal to C as 128 + signal number.
    os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


def _main() -> None:
    root = os.geteuid() == 0
    try:
        _die_with_parent()
        _unshare(root)
    except (SetupError, OSError) as e:
        os.write(2, f"sandbox setup failed: {e}\n".encode())
        os._exit(SETUP_FAILED)
    init = os.fork()  # the first child after unshare(CLONE_NEWPID) is pid 1 of the new namespace
    if init == 0:
        _init(_CONFIG, root)
    _, status = os.waitpid(init, 0)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
    if code > 128 and code - 128 in signal.valid_signals():
        _exit_by_signal(code - 128)  # P was killed by a signal (e.g. SIGXCPU): so is C
    os._exit(code)


_main()
