"""A user reward function in a worker process: same answers, a hard per-call timeout, restarts."""

import os
import textwrap
import time

import pytest

from postrl.rewards.worker import CallFailed, CallTimeout, WorkerDied, WorkerFn, WorkerStartError

FUNCTIONS = textwrap.dedent('''
    import os, subprocess, time

    CALLS = 0

    def counted(prompts, completions, **kwargs):
        """Module state survives between calls; its print must not corrupt the pipe protocol."""
        global CALLS
        CALLS += 1
        print("a reward function printing to stdout")
        return [float(len(c)) + CALLS / 100 for c in completions]

    def scaled(prompts, completions, scale=1.0, **kwargs):
        return [scale * len(c) for c in completions]

    def spin(prompts, completions, **kwargs):
        while True:
            pass

    def child_then_sleep(prompts, completions, pid_file, **kwargs):
        child = subprocess.Popen(["sleep", "600"])
        with open(pid_file, "w") as f:
            f.write(str(child.pid))
        time.sleep(600)

    def raises(prompts, completions, **kwargs):
        return [1.0 / (c != "b") for c in completions]

    def exits(prompts, completions, **kwargs):
        os._exit(3)

    def returns_a_generator(prompts, completions, **kwargs):
        return (1.0 for _ in completions)
''')


@pytest.fixture
def fns(tmp_path):
    path = tmp_path / "worker_fns.py"
    path.write_text(FUNCTIONS)
    return lambda name, timeout=5.0, **kw: WorkerFn(f"{path}:{name}", kw, timeout)


def test_answers_like_the_function_and_keeps_module_state(fns):
    w = fns("counted")
    assert w(prompts=["p"], completions=["abc"]) == [3.01]
    assert w(prompts=["p", "p"], completions=["a", "bb"]) == [1.02, 2.02]  # CALLS is 2 in the worker
    assert w.starts == 1
    assert fns("scaled", scale=2.0)(prompts=["p"], completions=["abc"]) == [6.0]  # config kwargs bound there
    w.close()


def test_a_busy_loop_is_stopped_at_the_timeout_and_the_next_call_restarts(fns):
    w = fns("spin", timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(CallTimeout):
        w(prompts=["p"], completions=["a"])
    assert time.monotonic() - t0 < 3.0  # 0.5 s limit + kill and reap
    first = w._proc
    assert first.poll() is not None  # killed, not left spinning
    with pytest.raises(CallTimeout):
        w(prompts=["p"], completions=["a"])
    assert w._proc is not first and w.starts == 2


def test_the_timeout_kills_processes_the_function_started(fns, tmp_path):
    pid_file = tmp_path / "child.pid"
    with pytest.raises(CallTimeout):
        fns("child_then_sleep", timeout=1.0, pid_file=str(pid_file))(prompts=["p"], completions=["a"])
    pid = int(pid_file.read_text())
    for _ in range(50):  # killed with the worker's process group; reaped by init
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        if open(f"/proc/{pid}/stat").read().split()[2] == "Z":
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the function's child process {pid} survived the timeout")


def test_an_exception_comes_back_with_type_message_and_line(fns):
    line = FUNCTIONS.splitlines().index("    return [1.0 / (c != \"b\") for c in completions]") + 1
    with pytest.raises(CallFailed, match=rf"ZeroDivisionError: float division by zero \(at .*worker_fns.py line {line} "):
        fns("raises")(prompts=["p", "p"], completions=["a", "b"])


def test_a_worker_that_dies_is_reported_and_replaced(fns):
    w = fns("exits")
    with pytest.raises(WorkerDied, match="exit code 3"):
        w(prompts=["p"], completions=["a"])
    with pytest.raises(WorkerDied):
        w(prompts=["p"], completions=["a"])
    assert w.starts == 2


def test_an_unpicklable_result_is_an_error_not_a_hang(fns):
    with pytest.raises(CallFailed, match="cannot be sent back"):
        fns("returns_a_generator")(prompts=["p"], completions=["a"])


def test_a_function_the_worker_cannot_load_is_a_start_error(fns):
    with pytest.raises(WorkerStartError, match="no attribute 'missing'; callables defined there: .*counted"):
        fns("missing")(prompts=["p"], completions=["a"])
