"""Hostile generated code: every attack is contained, scored as a failure by `code_tests`, turned
into an error observation by the `python` tool, and the test process (the trainer) keeps running.

Three groups: (1) each program of `hostile_programs.HOSTILE` through the two real entry points,
at whatever isolation level this machine gives; (2) the kernel layers alone (`audit_hook=False`,
only where level "full" or "namespaces" works), so they are known to hold if the in-interpreter
audit hook is bypassed; (3) the audit hook alone (`isolation="none"`), the portable layer.
Plus the probe/fallback logic of sandbox_isolation.py and one `postrl train` step (slow).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from postrl.rewards import sandbox_isolation
from postrl.rewards.code_exec import code_tests
from postrl.rewards.sandbox import run_python
from postrl.rewards.sandbox_isolation import Protections, protections
from tests.rewards.hostile_programs import HOSTILE, PROJECT_FILE, program

SECRET_NAME, SECRET_VALUE = "POSTRL_FAKE_SECRET", "hunter2-not-a-real-key"
UNNAMED_SECRET = "swordfish-in-no-program-text"  # in the trainer's env; only a leak could print it
LEVEL = protections().level
KERNEL = pytest.mark.skipif(LEVEL != "full", reason=f"isolation level here is {LEVEL!r}, not 'full'")


@pytest.fixture
def trainer(tmp_path, monkeypatch):
    """The trainer's side: a secret in its environment, a sibling process that must survive, a
    listening localhost socket that must get no connection, and a path that must not appear."""
    monkeypatch.setenv(SECRET_NAME, SECRET_VALUE)
    monkeypatch.setenv("POSTRL_FAKE_SECRET_2", UNNAMED_SECRET)
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    target = tmp_path / "outside.txt"
    try:
        yield {"target": str(target), "port": server.getsockname()[1], "server": server, "sibling": sibling}
        assert sibling.poll() is None, "a sandboxed program killed a process of the trainer's user"
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected
        assert not target.exists()
    finally:
        sibling.kill()
        sibling.wait()
        server.close()


def _fill(name: str, trainer: dict) -> str:
    return program(name, target=trainer["target"], port=trainer["port"], secret_name=SECRET_NAME,
                   secret_value=SECRET_VALUE)


def _leftovers(marker: str) -> list[int]:
    """Pids whose command line holds `marker` (hex of a sandbox directory: it is in the config arg)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


# ------------------------------------------------------------------ (1) through code_tests and the tool
CONTAINED_EVERYWHERE = [n for n in HOSTILE if n != "disk_filler"]


@pytest.mark.parametrize("name", CONTAINED_EVERYWHERE)
def test_hostile_program_scores_zero_and_the_trainer_survives(name, trainer):
    t0 = time.monotonic()
    completion = f"```python\n{_fill(name, trainer)}```"
    assert code_tests([""], [completion], ["assert True"], timeout_s=1.0) == [0.0]
    assert code_tests([""], [completion], ["assert True"], mode="coderl", timeout_s=1.0)[0] < 0
    assert time.monotonic() - t0 < 6.0
    assert os.getpid() and threading.main_thread().is_alive()  # still here to assert


@pytest.mark.parametrize("name", CONTAINED_EVERYWHERE)
def test_hostile_program_is_an_error_observation_in_the_python_tool(name, trainer, monkeypatch):
    from postrl.data.loading import PromptRow
    from postrl.envs import load_env
    from postrl.envs import python_tool

    monkeypatch.setattr(python_tool, "SANDBOX_TIMEOUT_S", 1.0)
    env = load_env("python", {})()
    prompt = [{"role": "user", "content": "What is 2+2?"}]
    env.reset(PromptRow(index=0, prompt=prompt, answer="4", columns={"prompt": prompt, "answer": "4"}), 0)
    result = env.step(f"<call>python({_fill(name, trainer)!r})</call>")
    assert result.observation.startswith("error: "), result.observation
    assert not result.done and result.reward == 0.0
    assert UNNAMED_SECRET not in result.observation and "[project]" not in result.observation


def test_a_batch_of_every_hostile_program_runs_in_parallel_in_bounded_time(trainer):
    names = CONTAINED_EVERYWHERE
    completions = [f"```python\n{_fill(n, trainer)}```" for n in names]
    t0 = time.monotonic()
    scores = code_tests([""] * len(names), completions, ["assert True"] * len(names), timeout_s=1.0, workers=4)
    assert dict(zip(names, scores)) == dict.fromkeys(names, 0.0)
    assert time.monotonic() - t0 < 15.0


def test_huge_output_reaches_the_trainer_only_as_its_tail():
    r = run_python("while True:\n    print('x' * 10 ** 6)", timeout_s=1.0, max_output_bytes=4096)
    assert r.status == "timeout" and r.truncated and len(r.stdout) == 4096


def test_a_fork_bomb_leaves_no_process_behind():
    r = run_python("import os\nprint(os.getcwd(), flush=True)\nwhile True:\n    os.fork()", timeout_s=1.0)
    assert r.status == "error" and "sandbox: os.fork is not allowed" in r.stderr
    assert _leftovers(r.stdout.strip().encode().hex()) == []


# ------------------------------------------------------------------ (2) the kernel layers, hook off
@KERNEL
def test_kernel_fork_bomb_is_capped_by_rlimit_nproc_and_dies_with_the_namespace():
    bomb = ("import os, time\nprint(os.getcwd(), flush=True)\nn = 0\ntry:\n    while True:\n"
            "        if os.fork() == 0:\n            time.sleep(60)\n        n += 1\n"
            "except OSError as e:\n    print(n, e.errno, flush=True)\ntime.sleep(60)\n")
    t0 = time.monotonic()
    r = run_python(bomb, audit_hook=False, timeout_s=1.5, max_processes=16)
    assert r.status == "timeout" and time.monotonic() - t0 < 4.0
    cwd, result = r.stdout.splitlines()[:2]
    assert result == "15 11"  # 15 children + itself = 16 processes, then EAGAIN
    deadline = time.monotonic() + 3.0
    while _leftovers(cwd.encode().hex()) and time.monotonic() < deadline:
        time.sleep(0.05)  # the kernel tears the pid namespace down asynchronously
    assert _leftovers(cwd.encode().hex()) == []


@pytest.mark.skipif(LEVEL == "none", reason="no pid namespace here")
@pytest.mark.parametrize("level", ["full", "namespaces"])
def test_kernel_signals_cannot_reach_the_trainer(level, trainer):
    if level == "full" and LEVEL != "full":
        pytest.skip(f"isolation level here is {LEVEL!r}")
    spy = ("import os, signal\nprint(os.getppid(), os.getpgrp(), flush=True)\n"
           "kills = (lambda: os.kill(os.getppid(), 9), lambda: os.killpg(os.getpgrp(), 9), lambda: os.kill(-1, 9))\n"
           "for kill in kills:\n    try:\n        kill()\n    except OSError as e:\n"
           "        print(e.errno, flush=True)\n")
    r = run_python(spy, isolation=level, audit_hook=False, timeout_s=2.0)
    # pid 1 of its namespace is its parent; the trainer has no pid there; the group signal kills the
    # program itself (and the launcher, at worst), never anything outside its own session
    assert r.stdout.splitlines()[0] == "1 0"
    assert r.status == "error" and r.reason == "killed by SIGKILL"


@KERNEL
def test_kernel_private_root_hides_the_project_and_is_read_only(trainer):
    spy = (f"import os\nprint(os.path.exists({PROJECT_FILE!r}), os.path.exists('/proc'), "
           f"os.path.exists('/etc/passwd'))\nprint(os.environ.get({SECRET_NAME!r}), os.getuid())\n"
           f"for path in ({trainer['target']!r}, '/tmp/x', '/usr/x', '/x'):\n"
           "    try:\n        open(path, 'w')\n    except OSError as e:\n        print(e.errno)\n"
           "for call in (lambda: os.chroot('/'), lambda: os.setuid(0)):\n"
           "    try:\n        call()\n    except OSError as e:\n        print(e.errno)\n")
    r = run_python(spy, audit_hook=False)
    assert r.passed, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == ["False False False", f"None {1 if os.geteuid() == 0 else 0}"]  # ns uid 1 = nobody
    assert lines[2] in ("2", "30") and lines[3:6] == ["30", "30", "30"]  # ENOENT / EROFS
    assert lines[6:] == ["1", "1"]  # EPERM: no capabilities


@KERNEL
def test_kernel_network_namespace_has_no_route_to_the_trainer(trainer):
    spy = (f"import socket\nprint([n for _, n in socket.if_nameindex()])\n"
           f"socket.create_connection(('127.0.0.1', {trainer['port']}), timeout=1)\n")
    r = run_python(spy, audit_hook=False)
    assert r.stdout == "['lo']\n" and r.status == "error"
    assert "OSError" in r.stderr or "Error" in r.stderr.splitlines()[-1]


@KERNEL
def test_kernel_disk_filler_stops_at_the_working_directory_size():
    filler = ("i = 0\ntry:\n    while True:\n        open('f%d' % i, 'wb').write(b'x' * (1 << 20))\n        i += 1\n"
              "except OSError as e:\n    print(i, e.errno)\n")
    r = run_python(filler, audit_hook=False, max_disk_mb=8, max_file_mb=4)
    n, errno = map(int, r.stdout.split())
    assert r.passed and errno == 28 and 6 <= n <= 8  # ENOSPC after ~8 MB


@KERNEL
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/python3") or not shutil.which("setpriv"),
                    reason="needs root (to become another user), setpriv and a system /usr/bin/python3")
def test_kernel_layers_for_a_trainer_that_is_not_root():
    # The launcher's other branch: an unprivileged user may only map itself (ns uid 0), so no uid
    # switch; the namespaces, private root, dropped capabilities and per-sandbox NPROC still hold.
    work = Path(tempfile.mkdtemp(prefix="postrl-sandbox-test-"))  # not under pytest's 0700 root-only tmp
    try:
        (work / "program.py").write_text("")
        os.chown(work, 65534, 65534)
        marker = sandbox_isolation.__file__
        inner = ["/usr/bin/python3", "-I", "-S", "-B", "-c", sandbox_isolation._PROBE, json.dumps([marker])]
        argv = sandbox_isolation.command("full", "/usr/bin/python3", str(work), inner, disk_mb=8, probe=True)
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
        out = subprocess.run(as_nobody, cwd=work, capture_output=True, text=True, timeout=30,
                             env={"PATH": "/usr/bin:/bin"})
    finally:
        shutil.rmtree(work)
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout)
    assert facts["uid"] == 0 and facts["pid"] == 2 and facts["interfaces"] == ["lo"]
    assert facts["root_switch"] == "pivot_root" and facts["visible"] == []
    assert not facts["capabilities"] and facts["nproc_enforced"] and facts["workdir_mb"] == 8


@pytest.mark.skipif(LEVEL == "none", reason="no launcher (PR_SET_PDEATHSIG) at level none")
def test_a_killed_trainer_leaves_no_sandbox_behind(tmp_path):
    trainer_code = ("from postrl.rewards.sandbox import run_python\n"
                    "run_python('import os, time\\nprint(os.getcwd(), flush=True)\\ntime.sleep(60)', timeout_s=60)\n")
    tmp = tmp_path / "tmp"  # the trainer's own TMPDIR: its sandbox is the only one in there
    tmp.mkdir()
    trainer = subprocess.Popen([sys.executable, "-c", trainer_code], start_new_session=True,
                               env={**os.environ, "TMPDIR": str(tmp)})
    try:
        deadline, marker = time.monotonic() + 20, None
        while marker is None and time.monotonic() < deadline:  # find the sandbox by its directory
            for d in tmp.glob("postrl-sandbox-*"):
                if not d.name.startswith("postrl-sandbox-probe-") and _leftovers(str(d).encode().hex()):
                    marker = str(d).encode().hex()
            time.sleep(0.05)
        assert marker is not None and trainer.poll() is None and len(_leftovers(marker)) >= 3  # C, G, P
        trainer.kill()  # SIGKILL: no cleanup code runs in the trainer
        trainer.wait()
        deadline = time.monotonic() + 5
        while _leftovers(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _leftovers(marker) == []
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()


# ------------------------------------------------------------------ (3) the audit hook alone
@pytest.mark.parametrize("name", ["read_project_file", "list_project_dir", "env_secret_of_parent", "write_outside",
                                  "socket", "kill_parent", "fork_bomb"])
def test_the_audit_hook_alone_refuses(name, trainer):
    r = run_python(_fill(name, trainer), isolation="none", timeout_s=2.0)
    assert r.status == "error" and "sandbox: " in r.stderr, r.stderr
    assert UNNAMED_SECRET not in r.stdout + r.stderr and "[project]" not in r.stdout + r.stderr


def test_the_audit_hook_still_allows_the_standard_library_and_the_working_directory():
    code = ("import json, decimal, collections, os, linecache\nopen('a.txt', 'w').write('x')\n"
            "print(open('a.txt').read(), sorted(os.listdir('.')), len(linecache.getlines(json.__file__)) > 10)")
    r = run_python(code, isolation="none")
    assert r.passed and r.stdout == "x ['a.txt', 'program.py'] True\n"


# ------------------------------------------------------------------ the probe and its fallback
def test_protections_are_measured_and_consistent():
    p = protections()
    assert p.level in ("full", "namespaces", "none") and p.summary().startswith(f"sandbox protections: level={p.level}")
    if p.level == "full":
        assert p.network_namespace and p.pid_namespace and p.project_files_hidden and p.capabilities_dropped
        assert p.private_root in ("pivot_root", "chroot") and p.workdir_limit_mb == 8 and p.reason == ""
        assert p.nproc_enforced and (p.uid == 65534) == (os.geteuid() == 0)
    none = protections(strongest="none")
    assert none.level == "none" and not none.network_namespace and not none.pid_namespace
    assert not none.project_files_hidden and none.private_root is None


def test_a_failing_private_root_falls_back_to_namespaces_and_says_why(monkeypatch):
    if LEVEL == "none":
        pytest.skip("no user namespaces here")

    def refuse(python):
        raise ValueError("binds refused for this test")

    monkeypatch.setattr(sandbox_isolation, "_private_root_spec", refuse)
    sandbox_isolation._protections.cache_clear()
    try:
        p = protections()
    finally:
        sandbox_isolation._protections.cache_clear()
    assert p.level == "namespaces" and p.reason == "binds refused for this test"
    assert p.network_namespace and p.pid_namespace and not p.project_files_hidden


def test_the_probe_runs_and_logs_once_for_concurrent_first_calls(caplog):
    sandbox_isolation._protections.cache_clear()
    with caplog.at_level(logging.INFO, logger="postrl.sandbox"):
        threads = [threading.Thread(target=protections) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        protections()
    assert [r.getMessage() for r in caplog.records] == [protections().summary()]


def test_requiring_a_level_that_is_not_available_is_an_error_naming_why(monkeypatch):
    weak = Protections(level="none", reason="full: unshare: Operation not permitted", network_namespace=False,
                       pid_namespace=False, private_root=None, project_files_hidden=False, uid=0,
                       capabilities_dropped=False, nproc_enforced=False, workdir_limit_mb=None)
    monkeypatch.setattr("postrl.rewards.sandbox.protections", lambda python=None: weak)
    with pytest.raises(RuntimeError, match="isolation='full' but only 'none' works here .*Operation not permitted"):
        run_python("pass", isolation="full")
    assert run_python("print(1)").isolation == "none"  # "auto" runs with what there is


# ------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_a_train_step_whose_reward_runs_hostile_code_completes(tmp_path, trainer):
    from postrl.cli import main

    names = ["kill_everything", "killpg_parent", "kill_parent", "fork_bomb", "memory_bomb", "env_secret",
             "env_secret_of_parent", "read_project_file", "write_outside", "shell_fork_bomb", "infinite_loop",
             "huge_output"]
    reward = f"{Path(__file__).with_name('hostile_programs.py')}:hostile_code_reward"
    cfg = {"name": "hostile", "model": {"name_or_path": "tiny", "tiny": {"hidden_size": 32, "num_layers": 2,
                                        "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 64}},
           "data": {"source": "task:arithmetic"},
           "rewards": [{"name": reward, "kwargs": {"names": names, "target": trainer["target"]}}],
           "rollout": {"n": 4, "max_new_tokens": 8},
           "train": {"steps": 1, "prompts_per_step": 3, "micro_batch_size": 12},
           "eval": {"limit": 2, "before": False}, "checkpoint": {"every": 1, "keep_last": 1},
           "logging": {"progress": False}}
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    step = [r for r in rows if "reward/hostile_code_reward/mean" in r]
    assert len(step) == 1 and step[0]["step"] == 1
    assert step[0]["reward/hostile_code_reward/mean"] == 0.0  # 12 hostile programs, all contained
    assert step[0]["reward/hostile_code_reward/errors"] == 0.0  # scored, not crashed
