"""Execution-based code rewards: pull the program out of a completion and run its tests in the sandbox.

`extract_code` finds the program (the last ```python fenced block, else the last fenced block,
else the raw text); `split_tests` turns a `tests` column into assert tests (setup statements
kept in front of the asserts that follow them); `code_tests` (a `REWARDS` entry) scores each
completion by running it with its row's tests in `sandbox.run_python`, several runs at once on a
small thread pool (each run is a separate process, so threads only wait on them).
"""

from __future__ import annotations

import ast
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from postrl.rewards.builtin import completion_text
from postrl.rewards.registry import REWARDS
from postrl.rewards.sandbox import SandboxResult, run_python

# An opening fence with an optional language tag, then the body up to the closing fence or the
# end of the text (a completion cut at max_new_tokens leaves its last block open).
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_PYTHON_TAGS = {"python", "py", "python3"}

CODERL_REWARDS = {"passed": 1.0, "failed": -0.3, "runtime_error": -0.6, "compile_error": -1.0}
"""CodeRL's return per outcome (sec. 3.2 of arXiv 2207.01780): +1 all unit tests pass, -0.3 a test
fails, -0.6 a runtime error, -1 a compile error. Quoted from memory of the paper; could not be
re-checked offline. A timeout counts as a runtime error."""


def extract_code(text: str) -> str:
    """The program in a completion: the last ```python (or py/python3) block, else the last fenced
    block of any language, else the whole text (a model asked for raw code). Never raises."""
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(text)]
    python = [body for tag, body in blocks if tag in _PYTHON_TAGS]
    if python:
        return python[-1]
    if blocks:
        return blocks[-1][1]
    return text


def split_tests(tests: Any, where: str = "tests") -> list[str]:
    """One source string per test from a `tests` value (a string of statements, or a list of them).

    Every top-level `assert` is one test; any other statement (setup such as `xs = [3, 1]`) is
    put in front of every later test, so each test can run on its own. A string that does not
    parse is a data error naming `where`.
    """
    sources = [tests] if isinstance(tests, str) else list(tests)
    out: list[str] = []
    setup: list[str] = []
    for src in sources:
        if not isinstance(src, str):
            raise ValueError(f"{where}: a test must be a string of Python statements, got {type(src).__name__}")
        try:
            tree = ast.parse(src)
        except SyntaxError as e:
            raise ValueError(f"{where}: the tests do not parse as Python ({e.msg}, line {e.lineno}); "
                             "write them as assert statements, e.g. 'assert f(1, 2) == 3'") from None
        for node in tree.body:
            segment = ast.get_source_segment(src, node)
            if isinstance(node, ast.Assert):
                out.append("\n".join([*setup, segment]))
            else:
                setup.append(segment)
    if not out:
        raise ValueError(f"{where}: no assert statements found; code_tests needs at least one 'assert ...'")
    return out


def _coderl(result: SandboxResult) -> float:
    if result.passed:
        return CODERL_REWARDS["passed"]
    if result.compile_error:
        return CODERL_REWARDS["compile_error"]
    if result.status == "failed":
        return CODERL_REWARDS["failed"]
    return CODERL_REWARDS["runtime_error"]


@REWARDS.register("code_tests", paper="CodeRL: Mastering Code Generation through Pretrained Models and Deep "
                  "Reinforcement Learning", arxiv="2207.01780",
                  summary="run the completion's code with the row's assert tests in the sandbox: 1/0, fraction "
                          "passed, or CodeRL's -1/-0.6/-0.3/+1")
def code_tests(prompts: list, completions: list, tests: list, *,
               mode: Literal["binary", "fraction", "coderl"] = "binary", timeout_s: float = 5.0,
               memory_mb: int = 512, workers: int = 4, **kwargs) -> list[float | None]:
    """Unit-test reward for code: the program from `extract_code`, run with the row's `tests`.

        binary    r = 1 if the program and every test run to the end, else 0 (one sandbox run)
        fraction  r = (1/K) sum_k 1[program + test_k passes]   K asserts, one run each (setup
                  statements before an assert are run with it)
        coderl    r = +1 pass, -0.3 an assert fails, -0.6 runtime error or timeout, -1 compile
                  error (CodeRL sec. 3.2; values not re-checked offline)
    None where the row's tests are None. The `tests` column holds assert statements (a string or a
    list of strings). Each run: `timeout_s` wall clock, `memory_mb` address space, no network
    (sandbox.run_python); `workers` runs at a time. Defaults (5 s, 512 MB) are this project's
    choice: small function problems finish in well under a second.
    """
    if mode not in ("binary", "fraction", "coderl"):
        raise ValueError(f"code_tests: mode must be 'binary', 'fraction' or 'coderl', got {mode!r}")
    if workers < 1:
        raise ValueError(f"code_tests: workers must be >= 1, got {workers}")
    programs = [extract_code(completion_text(c)) for c in completions]
    jobs: list[tuple[int, str, str]] = []  # (completion index, program, test source)
    for i, (program, row_tests) in enumerate(zip(programs, tests)):
        if row_tests is None:
            continue
        split = split_tests(row_tests, where=f"code_tests: tests of completion {i}")  # checks them too
        if mode == "fraction":
            jobs += [(i, program, t) for t in split]
        else:
            jobs.append((i, program, row_tests if isinstance(row_tests, str) else "\n".join(row_tests)))

    def run(job: tuple[int, str, str]) -> SandboxResult:
        return run_python(job[1], tests=job[2], timeout_s=timeout_s, memory_mb=memory_mb)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(run, jobs))

    per_row: dict[int, list[SandboxResult]] = {}
    for (i, _, _), result in zip(jobs, results):
        per_row.setdefault(i, []).append(result)
    out: list[float | None] = []
    for i in range(len(completions)):
        runs = per_row.get(i)
        if runs is None:
            out.append(None)
        elif mode == "binary":
            out.append(1.0 if runs[0].passed else 0.0)
        elif mode == "coderl":
            out.append(_coderl(runs[0]))
        else:
            out.append(sum(r.passed for r in runs) / len(runs))
    return out

