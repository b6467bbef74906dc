"""PRLCoder line labels: mutate / refactor a reference solution line by line, label lines by execution.

PRLCoder (Ye et al., arXiv 2502.01715) builds line-level process supervision for code without
human labels: a teacher model mutates or refactors the reference code one statement at a time,
and compiling and running the result labels each line. Here the teacher is a fixed, documented
set of AST mutations (no LLM is available offline):

  mutations (usually break the program)      refactors (meant to keep its meaning)
  binop_swap      + -> -, - -> +, * -> +,     commute        a + b -> b + a, a * b -> b * a
                  // -> *, % -> //            mirror_compare a > b -> b < a (each comparison)
  compare_flip    > -> >= and <, >= -> > and  augassign      x += e <-> x = x + e
                  <=, == <-> != (likewise)    parenthesize   x = e -> x = (e), return (e)
  constant        an int literal c -> c+1, c-1
  swap_variable   a name read -> another local/parameter name of the program
  delete          a simple statement -> `pass` (kept as a line, so it can be labelled)

Every variant, refactors included, is labelled by running it with the problem's tests in the
sandbox (`rewards.sandbox`): an equivalent mutant counts as positive and a refactor that
breaks the program as negative. Labelling rule (prefix + reference continuation): the label of
line j of a program whose line i was changed is whether lines 1..j followed by the reference's
remaining lines pass the tests, so lines before i are True (the reference passes) and lines
i..n all carry the changed program's result. The reference itself is one more all-True example.

Deviations from the paper: the teacher is the operator list above, not an LLM; the labelling of
the lines after the changed one (the rule above) is this module's reading of "label each line by
the compile and execution result", which the abstract does not spell out; steps are the
program's stripped, non-blank lines (indentation is dropped, because `rewards.process` splits a
policy's completion into stripped steps at "\\n" and the PRM must score what it was trained on).

`task:code_line_labels` exposes the rows in TRL's stepwise format for `postrl prm`.
"""

from __future__ import annotations

import ast
import copy
import functools
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

from postrl.data.code_tasks import python_functions
from postrl.data.tasks import TASKS, hash_fraction

_BINOP_SWAP = {ast.Add: [ast.Sub], ast.Sub: [ast.Add], ast.Mult: [ast.Add], ast.FloorDiv: [ast.Mult],
               ast.Mod: [ast.FloorDiv], ast.Div: [ast.Mult]}
_COMPARE_FLIP = {ast.Gt: [ast.GtE, ast.Lt], ast.GtE: [ast.Gt, ast.LtE], ast.Lt: [ast.LtE, ast.Gt],
                 ast.LtE: [ast.Lt, ast.GtE], ast.Eq: [ast.NotEq], ast.NotEq: [ast.Eq]}
_MIRROR = {ast.Gt: ast.Lt, ast.Lt: ast.Gt, ast.GtE: ast.LtE, ast.LtE: ast.GtE, ast.Eq: ast.Eq, ast.NotEq: ast.NotEq}

_WORKERS = min(4, os.cpu_count() or 1)
MUTATIONS = ("binop_swap", "compare_flip", "constant", "swap_variable", "delete")
REFACTORS = ("commute", "mirror_compare", "augassign", "parenthesize")


# ------------------------------------------------------------------------------ one line's AST
def _parse_line(text: str) -> tuple[ast.stmt, bool] | None:
    """(statement, is_header) for one stripped source line; a block header (`for ...:`, `if ...:`)
    is parsed with a dummy body. None for lines that cannot stand alone (`else:`)."""
    try:
        return ast.parse(text).body[0], False
    except SyntaxError:
        pass
    try:
        return ast.parse(text + "\n    pass").body[0], True
    except SyntaxError:
        return None


def _unparse_line(node: ast.stmt, header: bool) -> str:
    text = ast.unparse(node)
    return text.split("\n")[0] if header else text


def _sites(tree: ast.AST, change: Callable[[ast.AST], Iterator[Callable[[ast.AST], None]]]) -> Iterator[ast.AST]:
    """A changed copy of `tree` for every edit `change` proposes at every node (ast.walk order)."""
    for k, node in enumerate(ast.walk(tree)):
        for edit in change(node):
            new = copy.deepcopy(tree)
            edit(list(ast.walk(new))[k])
            yield new


def _binop_swap(node):
    if isinstance(node, (ast.BinOp, ast.AugAssign)):
        for op in _BINOP_SWAP.get(type(node.op), []):
            yield lambda n, op=op: setattr(n, "op", op())


def _compare_flip(node):
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            for alt in _COMPARE_FLIP.get(type(op), []):
                yield lambda n, i=i, alt=alt: n.ops.__setitem__(i, alt())


def _constant(node):
    if isinstance(node, ast.Constant) and type(node.value) is int:
        for delta in (1, -1):
            yield lambda n, d=delta: setattr(n, "value", n.value + d)


def _commute(node):
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        def edit(n):
            n.left, n.right = n.right, n.left
        yield edit


def _mirror_compare(node):
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _MIRROR:
        def edit(n):
            n.left, n.comparators, n.ops = n.comparators[0], [n.left], [_MIRROR[type(n.ops[0])]()]
        yield edit


def _swap_variable(names: list[str]):
    def change(node):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in names:
            for other in names:
                if other != node.id:
                    yield lambda n, other=other: setattr(n, "id", other)
    return change


def line_variants(line: str, names: list[str]) -> list[tuple[str, str]]:
    """(operator, new stripped line) for every mutation and refactor of one stripped line, without
    duplicates or no-op variants, in a fixed order."""
    parsed = _parse_line(line)
    if parsed is None:
        return []
    stmt, header = parsed
    out: list[tuple[str, str]] = []
    for name, change in (("binop_swap", _binop_swap), ("compare_flip", _compare_flip), ("constant", _constant),
                         ("swap_variable", _swap_variable(names)), ("commute", _commute),
                         ("mirror_compare", _mirror_compare)):
        out += [(name, _unparse_line(new, header)) for new in _sites(stmt, change)]
    if isinstance(stmt, ast.AugAssign):
        out.append(("augassign", f"{ast.unparse(stmt.target)} = {ast.unparse(ast.BinOp(stmt.target, stmt.op, stmt.value))}"))
    if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.value, ast.BinOp)
            and ast.unparse(stmt.value.left) == ast.unparse(stmt.targets[0])):
        out.append(("augassign", f"{ast.unparse(stmt.targets[0])} {_op_text(stmt.value.op)}= "
                                 f"{ast.unparse(stmt.value.right)}"))
    if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.Return)) and stmt.value is not None:
        head = line[:line.index("return") + 6] if isinstance(stmt, ast.Return) else line[:len(line) - len(
            ast.get_source_segment(line, stmt.value) or "")].rstrip()
        out.append(("parenthesize", f"{head} ({ast.unparse(stmt.value)})"))
    if not header:
        out.append(("delete", "pass"))
    seen, unique = {line, _unparse_line(stmt, header)}, []
    for name, text in out:
        if text not in seen:
            seen.add(text)
            unique.append((name, text))
    return unique


def _op_text(op: ast.operator) -> str:
    return ast.unparse(ast.BinOp(ast.Name("a"), op, ast.Name("b")))[2:-2]


def program_names(code: str) -> list[str]:
    """Parameters and assigned local names of the program's functions (swap_variable candidates)."""
    tree = ast.parse(code)
    names = {a.arg for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) for a in n.args.args}
    names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return sorted(names)


# ---------------------------------------------------------------------------- label by running
_HARNESS = '''
import json, signal

class _Timeout(Exception):
    pass

def _alarm(signum, frame):
    raise _Timeout()

signal.signal(signal.SIGALRM, _alarm)
_results = []
for _source in json.loads({programs!r}):
    signal.setitimer(signal.ITIMER_REAL, {limit!r})
    try:
        exec(compile(_source, "mutant.py", "exec"), {{"__name__": "__mutant__"}})
        _ok = True
    except BaseException:  # a failed assert, an error, a timeout: the variant does not pass
        _ok = False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    _results.append(_ok)
print(json.dumps(_results))
'''


def run_variants(programs: list[str], tests: str, *, per_program_s: float = 0.5) -> list[bool]:
    """Whether each program passes `tests`: all of them in ONE sandboxed process (these are our own
    mutants, not policy output; a per-program interval timer stops infinite loops), which costs one
    interpreter start per problem instead of one per variant."""
    from postrl.rewards.sandbox import run_python  # here: importing postrl.rewards loads torch

    sources = [p + "\n" + tests for p in programs]
    harness = _HARNESS.format(programs=json.dumps(sources), limit=per_program_s)
    result = run_python(harness, timeout_s=5.0 + per_program_s * len(programs), memory_mb=512,
                        max_output_bytes=1 << 20)
    if not result.passed:
        raise RuntimeError(f"PRLCoder labelling harness failed ({result.reason}): {result.stderr[-500:]}")
    flags = json.loads(result.stdout.strip().splitlines()[-1])
    if len(flags) != len(programs):
        raise RuntimeError(f"PRLCoder labelling harness returned {len(flags)} results for {len(programs)} programs")
    return flags


def label_problem(reference: str, tests: str, *, truncate: bool = False,
                  per_program_s: float = 0.5) -> list[dict]:
    """Step-labelled examples for one problem: the reference (all True) and one per line variant.

    Each: `completions` (stripped non-blank lines), `labels`, `line` (index of the changed
    line, -1 for the reference), `operator` (the mutation/refactor, "reference" for the
    reference) and `passes` (the whole program's result). `truncate=True` ends each variant's
    example at its changed line instead of keeping the reference continuation.
    """
    lines = [line for line in reference.split("\n") if line.strip()]
    names = program_names(reference)
    candidates: list[tuple[int, str, list[str]]] = [(-1, "reference", lines)]
    for i, line in enumerate(lines):
        indent = line[:len(line) - len(line.lstrip())]
        for op, new in line_variants(line.strip(), names):
            candidates.append((i, op, lines[:i] + [indent + new] + lines[i + 1:]))
    flags = run_variants(["\n".join(prog) for _, _, prog in candidates], tests, per_program_s=per_program_s)
    if not flags[0]:
        raise ValueError(f"PRLCoder: the reference solution fails its own tests:\n{reference}\n{tests}")
    out = []
    for (i, op, prog), ok in zip(candidates, flags):
        steps = [p.strip() for p in prog]
        labels = [True] * len(steps) if i < 0 else [True] * i + [ok] * (len(steps) - i)
        if truncate and i >= 0:
            steps, labels = steps[:i + 1], labels[:i + 1]
        out.append({"completions": steps, "labels": labels, "line": i, "operator": op, "passes": ok})
    return out


@functools.lru_cache(maxsize=8)
def _labelled(split: str, kinds: tuple[str, ...] | None, seed: int, test_fraction: float, limit: int | None,
              truncate: bool, per_program_s: float) -> tuple[dict, ...]:
    problems = python_functions(split, kinds=list(kinds) if kinds else None, seed=seed,
                                test_fraction=test_fraction, limit=limit)

    def label(problem: dict) -> list[dict]:
        return label_problem(problem["answer"], problem["tests"], truncate=truncate, per_program_s=per_program_s)

    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:  # each problem is one sandbox process
        labelled = list(pool.map(label, problems))
    return tuple({"prompt": p["prompt"], **ex, "kind": p["kind"], "tests": p["tests"]}
                 for p, examples in zip(problems, labelled) for ex in examples)


@TASKS.register("code_line_labels", paper="Process-Supervised Reinforcement Learning for Code Generation "
                "(PRLCoder)", summary="task:python_functions references mutated/refactored line by line, each line "
                "labelled by running the tests (TRL stepwise format, for postrl prm)")
def code_line_labels(split: str, *, kinds: list[str] | None = None, seed: int = 0, test_fraction: float = 0.1,
                     limit: int | None = None, truncate: bool = False, per_program_s: float = 0.5,
                     max_variants: int | None = None) -> list[dict]:
    """Rows `{prompt, completions, labels, line, operator, passes, kind, tests}` for `postrl prm`.

    Problems are `task:python_functions`' (same split by prompt hash, `kinds`, `seed`, and
    `limit` counts problems, not rows); each gives the reference and every line variant (about
    20-40 per problem), labelled in the sandbox (one process per problem; `per_program_s` stops a
    looping mutant). `max_variants` keeps a stable hash-chosen subset of the variants of each
    problem (the reference always stays). Labelling runs once per process and arguments (cached).
    """
    if per_program_s <= 0:
        raise ValueError(f"code_line_labels: per_program_s must be positive, got {per_program_s}")
    if max_variants is not None and max_variants < 0:
        raise ValueError(f"code_line_labels: max_variants must be >= 0, got {max_variants}")
    rows = [dict(r) for r in _labelled(split, tuple(kinds) if kinds else None, seed, test_fraction, limit,
                                       truncate, per_program_s)]
    if max_variants is not None:
        rows = _subsample(rows, max_variants)
    return rows


def _subsample(rows: list[dict], max_variants: int) -> list[dict]:
    """At most `max_variants` variants per problem, chosen by a stable hash; the reference stays."""
    by_prompt: dict[str, list[dict]] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt"][-1]["content"], []).append(r)
    out = []
    for content, group in by_prompt.items():
        refs = [r for r in group if r["line"] < 0]
        variants = sorted((r for r in group if r["line"] >= 0),
                          key=lambda r: hash_fraction(f"{content}|{r['line']}|{r['operator']}|{r['completions']}"))
        out += refs + variants[:max_variants]
    return out
