"""Built-in code task `task:python_functions`: tiny function-writing problems with assert tests.

Each problem asks for a Python function `f` ("Write a Python function f(a, b) that returns
3 * a + 2 * b.") and comes with a reference solution of 3-7 lines (intermediate variables, a
loop, an if) and four assert tests. Problems come from eight templates filled with small
constants; the tests' inputs are drawn from a stable hash of the problem text and their
expected values computed by running the reference (trusted code, in this process), so the
reference passes its tests by construction. Splits, `seed` and `limit` behave as for the other
built-in tasks (`tasks.select_split`). Rows: `prompt`, `answer` (the reference solution),
`tests`, `entry_point` ("f") and `kind` (the template).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Callable

from postrl.data.tasks import TASKS, _row, hash_fraction, select_split


@dataclass(frozen=True)
class _Template:
    kind: str
    describe: str
    """Problem statement after "Write a Python function ", formatted with the constants."""
    reference: str
    """The reference solution, formatted with the constants."""
    constants: list[dict]
    inputs: Callable[[random.Random, dict], tuple]
    """Arguments of one test call, from the test rng and the problem's constants."""


def _ints(rng: random.Random, n: int, lo: int = -9, hi: int = 20) -> tuple:
    return tuple(rng.randint(lo, hi) for _ in range(n))


def _int_list(rng: random.Random, boundary: int | None = None) -> tuple:
    xs = [rng.randint(-5, 25) for _ in range(rng.randint(0, 6))]
    if boundary is not None and rng.random() < 0.5:  # the threshold itself tells > from >=
        xs.insert(rng.randint(0, len(xs)), boundary)
    return (xs,)


def _clamp_input(rng: random.Random, c: dict) -> tuple:
    return (rng.choice([c["lo"], c["hi"], rng.randint(-15, 30), rng.randint(-15, 30)]),)


_COMPARE = {">": "greater than", "<": "less than", ">=": "at least", "<=": "at most"}

TEMPLATES = [
    _Template("linear", "f(a, b) that returns {k} * a + {c} * b.",
              "def f(a, b):\n    x = a * {k}\n    y = b * {c}\n    return x + y",
              [{"k": k, "c": c} for k in range(2, 10) for c in range(2, 10)], lambda r, c: _ints(r, 2)),
    _Template("sum_multiples", "f(n) that returns {c} plus the sum of i * {k} for i from 1 to n.",
              "def f(n):\n    total = {c}\n    for i in range(1, n + 1):\n        total += i * {k}\n    return total",
              [{"k": k, "c": c} for k in range(2, 10) for c in range(10)], lambda r, c: (r.randint(0, 12),)),
    _Template("max_scaled", "f(a, b) that returns {k} times the larger of a and b, plus {c}.",
              "def f(a, b):\n    if a > b:\n        m = a\n    else:\n        m = b\n    return m * {k} + {c}",
              [{"k": k, "c": c} for k in range(2, 6) for c in range(1, 10)], lambda r, c: _ints(r, 2)),
    _Template("count_compare", "f(xs) that returns how many numbers in the list xs are {word} {k}.",
              "def f(xs):\n    count = 0\n    for x in xs:\n        if x {op} {k}:\n            count += 1\n    return count",
              [{"k": k, "op": op, "word": w} for k in range(0, 21) for op, w in _COMPARE.items()],
              lambda r, c: _int_list(r, c["k"])),
    _Template("scaled_distance", "f(a, b) that returns {k} times the absolute difference of a and b.",
              "def f(a, b):\n    d = a - b\n    if d < 0:\n        d = -d\n    return d * {k}",
              [{"k": k} for k in range(2, 21)], lambda r, c: _ints(r, 2)),
    _Template("sum_parity", "f(xs) that returns {k} times the sum of the {parity} numbers in the list xs.",
              "def f(xs):\n    total = 0\n    for x in xs:\n        if x % 2 == {rest}:\n            total += x\n    return total * {k}",
              [{"k": k, "parity": p, "rest": rest} for k in range(2, 10) for p, rest in (("even", 0), ("odd", 1))],
              lambda r, c: _int_list(r)),
    _Template("count_digit", "f(n) that returns how many times the digit {d} appears in the non-negative integer n.",
              "def f(n):\n    count = 0\n    while n > 0:\n        if n % 10 == {d}:\n            count += 1\n"
              "        n = n // 10\n    return count",
              [{"d": d} for d in range(1, 10)], lambda r, c: (r.choice([r.randint(0, 99), r.randint(100, 99999)]),)),
    _Template("clamp", "f(x) that returns x limited to the range {lo} to {hi} (inclusive).",
              "def f(x):\n    if x < {lo}:\n        return {lo}\n    if x > {hi}:\n        return {hi}\n    return x",
              [{"lo": lo, "hi": lo + w} for lo in range(-5, 10) for w in (3, 6, 10)], _clamp_input),
]
KINDS = tuple(t.kind for t in TEMPLATES)


def _call(args: tuple) -> str:
    return f"f({', '.join(map(repr, args))})"


@functools.lru_cache(maxsize=None)
def _problems(num_tests: int) -> tuple[dict, ...]:
    """Every problem of every template (cached: train and test are cut from the same list)."""
    rows = []
    for t in TEMPLATES:
        for consts in t.constants:
            content = "Write a Python function " + t.describe.format(**consts)
            reference = t.reference.format(**consts)
            namespace: dict = {}
            exec(reference, namespace)  # our own reference code: computes the expected values
            rng = random.Random(int(hash_fraction("tests:" + content) * 2**32))
            calls: list[tuple[str, object]] = []
            for _ in range(50 * num_tests):  # bounded: a small input space may have fewer distinct calls
                args = t.inputs(rng, consts)
                if _call(args) not in [c for c, _ in calls]:
                    calls.append((_call(args), namespace["f"](*args)))
                if len(calls) == num_tests:
                    break
            tests = "\n".join(f"assert {call} == {expected!r}" for call, expected in calls)
            rows.append(_row(content, reference, tests=tests, entry_point="f", kind=t.kind))
    return tuple(rows)


@TASKS.register("python_functions", paper="built-in synthetic task",
                summary="write a small Python function f (a loop, an if, intermediate variables); "
                        "reference solution and assert tests")
def python_functions(split: str, *, kinds: list[str] | None = None, num_tests: int = 4, seed: int = 0,
                     test_fraction: float = 0.1, limit: int | None = None) -> list[dict]:
    """Function-writing problems, e.g. "Write a Python function f(n) that returns 3 plus the sum of
    i * 2 for i from 1 to n." with the reference

        def f(n):
            total = 3
            for i in range(1, n + 1):
                total += i * 2
            return total

    and tests "assert f(4) == 23" etc. (`num_tests` distinct calls, fewer if a template has fewer inputs). `kinds` keeps some templates (default all: linear,
    sum_multiples, max_scaled, count_compare, scaled_distance, sum_parity, count_digit, clamp;
    353 problems in all). Score completions with the `code_tests` reward (the `tests` column).
    """
    if kinds is not None:
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown or not kinds:
            raise ValueError(f"python_functions: unknown kinds {unknown or '(empty list)'}; valid kinds: "
                             f"{', '.join(KINDS)}")
    if num_tests < 1:
        raise ValueError(f"python_functions: num_tests must be >= 1, got {num_tests}")
    rows = [dict(r) for r in _problems(num_tests) if kinds is None or r["kind"] in kinds]
    return select_split(rows, split, seed=seed, test_fraction=test_fraction, limit=limit)
