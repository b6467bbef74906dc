"""The execution sandbox (rewards/sandbox.py): every hostile program is contained and returns quickly."""

from __future__ import annotations

import os
import time

import pytest

from postrl.rewards.sandbox import run_python
from postrl.rewards.sandbox_isolation import protections


def test_a_normal_program_passes_its_tests_and_prints():
    r = run_python("def f(a, b):\n    return a + b\nprint(f(1, 2))", tests="assert f(2, 3) == 5")
    assert r.status == "passed" and r.passed
    assert r.stdout == "3\n" and r.returncode == 0 and not r.truncated


def test_a_failing_assert_is_failed_with_the_traceback_on_stderr():
    r = run_python("def f(a, b):\n    return a - b", tests="assert f(2, 3) == 5, 'f(2, 3)'")
    assert r.status == "failed"
    assert "AssertionError: f(2, 3)" in r.stderr


def test_an_exception_or_syntax_error_is_an_error():
    assert run_python("1 / 0").status == "error"
    r = run_python("def f(:\n    pass")
    assert r.status == "error" and "SyntaxError" in r.stderr and r.compile_error
    assert not run_python("1 / 0").compile_error


def test_an_infinite_loop_times_out_near_the_wall_clock_limit():
    t0 = time.monotonic()
    r = run_python("while True:\n    pass", timeout_s=1.0)
    assert r.status == "timeout"
    assert time.monotonic() - t0 < 3.0


def test_a_sleeping_program_is_killed_at_the_wall_clock_limit():
    r = run_python("import time\ntime.sleep(60)", timeout_s=0.5)
    assert r.status == "timeout" and r.reason == "wall-clock timeout after 0.5 s"
    assert r.seconds < 2.0


def test_the_cpu_limit_stops_a_busy_program_before_a_long_wall_clock_limit():
    r = run_python("while True:\n    pass", timeout_s=30.0, cpu_s=1)
    assert r.status == "timeout" and "CPU" in r.reason
    assert r.seconds < 5.0


def test_a_memory_bomb_fails_fast_with_memory_error():
    t0 = time.monotonic()
    r = run_python("blocks = []\nwhile True:\n    blocks.append(bytearray(10**7))", memory_mb=256, timeout_s=10)
    assert r.status == "error" and "MemoryError" in r.stderr
    assert time.monotonic() - t0 < 5.0


def test_socket_creation_is_refused():
    for code in ("import socket\nsocket.socket()", "import _socket\n_socket.socket()",
                 "import socket\nsocket.create_connection(('127.0.0.1', 80))"):
        r = run_python(code)
        assert r.status == "error" and "sandbox: socket" in r.stderr, code


@pytest.mark.skipif(protections().level == "none", reason="no user namespaces here")
def test_the_network_namespace_has_only_loopback():
    r = run_python("import socket\nprint([name for _, name in socket.if_nameindex()])", isolation="namespaces")
    assert r.passed and r.network_namespace
    assert r.stdout == "['lo']\n"


def test_an_environment_secret_is_not_inherited(monkeypatch):
    monkeypatch.setenv("POSTRL_TEST_SECRET", "hunter2")
    r = run_python("import os\nprint(sorted(os.environ))\nprint(os.environ.get('POSTRL_TEST_SECRET'))")
    assert r.passed
    assert r.stdout.splitlines() == ["['HOME', 'LC_ALL', 'PATH', 'TMPDIR']", "None"]
    assert "hunter2" not in r.stdout


def test_huge_output_is_drained_and_truncated_to_its_tail():
    r = run_python("import sys\nsys.stdout.write('a' * 10**7 + 'END')", max_output_bytes=1000, timeout_s=10)
    assert r.passed and r.truncated
    assert len(r.stdout) == 1000 and r.stdout.endswith("aEND")


def test_the_program_runs_in_a_fresh_directory_that_is_removed_afterwards():
    r = run_python("import os\nopen('scratch.txt', 'w').write('x')\nprint(os.getcwd())\nprint(os.listdir('.'))")
    cwd, listing = r.stdout.splitlines()
    assert r.passed and "postrl-sandbox-" in cwd
    assert sorted(eval(listing)) == ["program.py", "scratch.txt"]
    assert not os.path.exists(cwd)


def test_writes_and_deletes_outside_the_sandbox_are_refused(tmp_path):
    target, keep = tmp_path / "evil.txt", tmp_path / "keep.txt"
    keep.write_text("x")
    assert run_python(f"open({str(target)!r}, 'w').write('x')").status == "error"
    assert run_python(f"import os\nos.remove({str(keep)!r})").status == "error"
    assert run_python(f"import os\nos.symlink({str(keep)!r}, 'l')\nopen('l', 'w').write('y')").status == "error"
    assert not target.exists() and keep.read_text() == "x"


def test_new_processes_and_ctypes_are_refused():
    for code in ("import os\nos.fork()", "import subprocess\nsubprocess.run(['true'])", "import os\nos.system('true')",
                 "import ctypes", "import os\nos.execv('/bin/true', ['true'])"):
        r = run_python(code)
        assert r.status == "error" and "sandbox:" in r.stderr, code


def test_an_early_exit_does_not_skip_the_tests():
    for code in ("import sys\nsys.exit(0)", "exit()", "import os\nos._exit(0)",
                 "import sys\ndel sys.modules['posix']\nimport posix\nposix._exit(0)"):
        r = run_python(code, tests="assert False")
        assert r.status == "error", code
    assert run_python("import sys\nsys.exit(0)").passed  # with no tests, exit 0 is a normal end
    assert run_python("import sys\nsys.exit(3)").status == "error"


def test_the_tests_are_not_readable_by_the_program():
    # not on disk, not in a module global of the prelude (the program can import __main__)
    spy = "import os, __main__\nprint(sorted(os.listdir('.')))\nprint([k for k in vars(__main__) if 'test' in k.lower()])"
    r = run_python(spy, tests="assert 1 + 1 == 2")
    assert r.passed and r.stdout.splitlines() == ["['program.py']", "[]"]
    assert run_python("import sys\nprint(repr(sys.stdin.read()))").stdout == "''\n"


def test_the_file_size_limit_stops_a_disk_filler():
    r = run_python("open('big', 'wb').write(b'x' * (8 << 20))", max_file_mb=1)
    assert r.status == "error" and "File too large" in r.stderr


def test_bad_limits_are_rejected():
    with pytest.raises(ValueError, match="timeout_s"):
        run_python("pass", timeout_s=0)
    with pytest.raises(ValueError, match="isolation"):
        run_python("pass", isolation="maybe")
