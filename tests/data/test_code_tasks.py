"""task:python_functions (data/code_tasks.py): statements, references and tests agree, splits are stable."""

from __future__ import annotations

import ast
import re

import pytest

from postrl.data.code_tasks import KINDS, python_functions
from postrl.data.tasks import TASKS
from postrl.rewards import REWARDS


def content(row):
    return row["prompt"][-1]["content"]


def spec(text: str):
    """An independent reading of the problem statement (not the reference) as a Python function."""
    n = [int(x) for x in re.findall(r"-?\d+", text)]
    if "* a +" in text:
        return lambda a, b: n[0] * a + n[1] * b
    if "plus the sum of i *" in text:
        return lambda m: n[0] + sum(i * n[1] for i in range(1, m + 1))
    if "the larger of a and b" in text:
        return lambda a, b: n[0] * max(a, b) + n[1]
    if "how many numbers in the list xs are" in text:
        word = re.search(r"are (greater than|less than|at least|at most)", text).group(1)
        cmp = {"greater than": int.__gt__, "less than": int.__lt__, "at least": int.__ge__, "at most": int.__le__}[word]
        return lambda xs: sum(cmp(x, n[0]) for x in xs)
    if "absolute difference" in text:
        return lambda a, b: n[0] * abs(a - b)
    if "sum of the even" in text or "sum of the odd" in text:
        rest = 0 if "even" in text else 1
        return lambda xs: n[0] * sum(x for x in xs if x % 2 == rest)
    if "the digit" in text:
        return lambda m: str(m).count(str(n[0])) if m > 0 else 0
    if "limited to the range" in text:
        return lambda x: min(max(x, n[0]), n[1])
    raise AssertionError(f"no spec for {text!r}")


def test_registered_with_every_template_and_disjoint_splits():
    assert "python_functions" in TASKS.names()
    train, test = python_functions("train"), python_functions("test")
    assert len(train) + len(test) == 353
    assert not {content(r) for r in train} & {content(r) for r in test}
    assert {r["kind"] for r in train} == set(KINDS)
    assert python_functions("train", seed=3) != train and sorted(map(content, python_functions("train", seed=3))) == \
        sorted(map(content, train))


def test_hand_computed_problem():
    row = next(r for r in python_functions("train") + python_functions("test")
               if content(r) == "Write a Python function f(a, b) that returns 3 * a + 2 * b.")
    assert row["answer"] == "def f(a, b):\n    x = a * 3\n    y = b * 2\n    return x + y"
    assert set(row) == {"prompt", "answer", "tests", "entry_point", "kind"} and row["kind"] == "linear"
    for line in row["tests"].splitlines():  # e.g. "assert f(4, -1) == 10": 3*4 + 2*(-1) = 10
        a, b, want = map(int, re.fullmatch(r"assert f\((-?\d+), (-?\d+)\) == (-?\d+)", line).groups())
        assert want == 3 * a + 2 * b


def test_every_test_agrees_with_the_problem_statement():
    for row in python_functions("train") + python_functions("test"):
        f = spec(content(row))
        tests = ast.parse(row["tests"]).body
        assert len(tests) == 4, content(row)
        for t in tests:
            call, expected = t.test.left, t.test.comparators[0]
            args = [ast.literal_eval(a) for a in call.args]
            assert f(*args) == ast.literal_eval(expected), (content(row), ast.unparse(t))


def test_references_are_several_lines_and_pass_in_the_sandbox():
    rows = python_functions("test")
    assert all(3 <= len(r["answer"].splitlines()) <= 7 for r in rows)
    one_per_kind = list({r["kind"]: r for r in rows}.values())
    out = REWARDS["code_tests"](None, [r["answer"] for r in one_per_kind], tests=[r["tests"] for r in one_per_kind])
    assert out == [1.0] * len(one_per_kind)


def test_kinds_limit_and_errors():
    rows = python_functions("train", kinds=["clamp"], limit=5)
    assert len(rows) == 5 and {r["kind"] for r in rows} == {"clamp"}
    with pytest.raises(ValueError, match="valid kinds"):
        python_functions("train", kinds=["sorting"])
    with pytest.raises(ValueError, match="num_tests"):
        python_functions("train", num_tests=0)
    with pytest.raises(ValueError, match="split"):
        python_functions("dev")
