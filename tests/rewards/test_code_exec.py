"""code_tests and its helpers (rewards/code_exec.py), with hand-computed rewards."""

from __future__ import annotations

import pytest

from postrl.rewards import REWARDS
from postrl.rewards.code_exec import CODERL_REWARDS, extract_code, split_tests

TESTS = "assert f(1, 2) == 3\nassert f(0, 0) == 0\nassert f(-1, 5) == 4\nassert f(2, 2) == 4"
GOOD = "def f(a, b):\n    return a + b"
HALF = "def f(a, b):\n    return a + b if a > 0 else 99"  # passes tests 1 and 4 of 4


def test_extract_code_prefers_the_last_python_block():
    text = "Here:\n```text\nnot code\n```\n```python\nx = 1\n```\nand\n```py\nx = 2\n```\nbye"
    assert extract_code(text) == "x = 2\n"
    assert extract_code("```\ny = 3\n```") == "y = 3\n"  # untagged block
    assert extract_code("def g():\n    return 1") == "def g():\n    return 1"  # raw code
    assert extract_code("```python\ndef g():\n    return 1") == "def g():\n    return 1"  # cut at max tokens


def test_split_tests_keeps_setup_in_front_of_later_asserts():
    assert split_tests("xs = [2, 1]\nassert f(xs) == 1\nys = []\nassert f(ys) == 0") == [
        "xs = [2, 1]\nassert f(xs) == 1", "xs = [2, 1]\nys = []\nassert f(ys) == 0"]
    assert split_tests(["assert a", "assert b"]) == ["assert a", "assert b"]
    with pytest.raises(ValueError, match="do not parse"):
        split_tests("assert (", where="row 3")
    with pytest.raises(ValueError, match="no assert"):
        split_tests("x = 1")


def test_binary_rewards_one_only_when_every_test_passes():
    fn = REWARDS["code_tests"]
    completions = [f"```python\n{GOOD}\n```", HALF, "def f(a, b):\n  return (", "no code at all"]
    assert fn(None, completions, tests=[TESTS] * 4) == [1.0, 0.0, 0.0, 0.0]


def test_fraction_counts_passed_asserts():
    fn = REWARDS["code_tests"]
    # HALF: f(1,2)=3 ok, f(0,0)=99 wrong, f(-1,5)=99 wrong, f(2,2)=4 ok -> 2/4
    out = fn(None, [GOOD, HALF, "def f(a, b):\n    return 0"], tests=[TESTS] * 3, mode="fraction")
    # constant 0: only f(0,0) == 0 holds -> 1/4
    assert out == [1.0, 0.5, 0.25]


def test_coderl_mode_distinguishes_compile_runtime_and_test_failures():
    fn = REWARDS["code_tests"]
    completions = [GOOD, HALF, "def f(a, b):\n    return a / 0", "def f(a, b)\n    return a"]
    assert fn(None, completions, tests=[TESTS] * 4, mode="coderl") == [
        CODERL_REWARDS["passed"], CODERL_REWARDS["failed"], CODERL_REWARDS["runtime_error"],
        CODERL_REWARDS["compile_error"]] == [1.0, -0.3, -0.6, -1.0]


def test_rows_without_tests_are_not_applicable_and_hostile_code_scores_zero():
    fn = REWARDS["code_tests"]
    hostile = ["import sys\nsys.exit(0)", "while True:\n    pass", "import socket\nsocket.socket()"]
    out = fn(None, [GOOD, *hostile], tests=[None] + [TESTS] * 3, timeout_s=1.0)
    assert out == [None, 0.0, 0.0, 0.0]


def test_conversational_completions_and_bad_settings():
    fn = REWARDS["code_tests"]
    msgs = [[{"role": "assistant", "content": f"```python\n{GOOD}\n```"}]]
    assert fn(None, msgs, tests=[TESTS]) == [1.0]
    with pytest.raises(ValueError, match="mode"):
        fn(None, [GOOD], tests=[TESTS], mode="partial")
    with pytest.raises(ValueError, match="tests of completion 0"):
        fn(None, [GOOD], tests=["assert ("])
