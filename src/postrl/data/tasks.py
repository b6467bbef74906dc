"""Built-in synthetic tasks: small verifiable problems generated in code, nothing downloaded.

A task is a registered function `fn(split, **kwargs) -> list[dict]` returning rows in TRL's
conversational prompt-only format plus a reference answer and task columns:
`{"prompt": [{"role": "user", "content": ...}], "answer": str, ...}`.

Splits are decided by a stable hash of the problem text (sha1, not Python's salted `hash`), so a
problem is always in the same split whatever `seed` or `limit` is, and train and test never
share a problem. `seed` only orders the rows (and, for sampled problem spaces, picks them);
`limit` keeps the first `limit` rows of that order. Prompts and answers are printable ASCII so
the character-level tiny tokenizer covers them.
"""

from __future__ import annotations

import functools
import hashlib
import random

from postrl.data.arithmetic_hints import arithmetic_hints
from postrl.registry import Registry

TASKS = Registry("task")
"""name -> fn(split: str, **kwargs) -> list[dict] (rows with `prompt`, `answer` and task columns)."""

SPLITS = ("train", "test")


def hash_fraction(text: str) -> float:
    """A stable pseudo-random number in [0, 1) for `text` (sha1, so every run agrees)."""
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big") / 2**64


def split_of(text: str, test_fraction: float) -> str:
    """"test" for a stable `test_fraction` of all texts, else "train"."""
    return "test" if hash_fraction(text) < test_fraction else "train"


def select_split(rows: list[dict], split: str, *, seed: int, test_fraction: float,
                 limit: int | None) -> list[dict]:
    """The rows of `split` (by hash of the prompt text), in a seeded order, cut to `limit`."""
    _check_split(split)
    _check_fraction(test_fraction)
    kept = [r for r in rows if split_of(r["prompt"][-1]["content"], test_fraction) == split]
    random.Random(seed).shuffle(kept)
    return kept if limit is None else kept[:limit]


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


def _row(content: str, answer: str, **columns) -> dict:
    return {"prompt": [{"role": "user", "content": content}], "answer": answer, **columns}


# ---------------------------------------------------------------------------------- arithmetic
_LEVEL_4_SIZE = 20000  # level 4 has 2 * 1000**2 problems; a fixed sample of this many is plenty.


@functools.lru_cache(maxsize=None)
def _level_problems(level: int) -> tuple[tuple[str, str, float], ...]:
    """(content, answer, hash fraction) of every problem of one level; cached, as the trainer
    loads train and test (and tests load them many times) from the same problem space."""
    if level == 1:
        triples = [(a, "+", b) for a in range(10) for b in range(10)]
    elif level == 2:
        triples = [(a, "+", b) for a in range(100) for b in range(100)]
    elif level == 3:
        triples = [(a, op, b) for op in "+-" for a in range(100) for b in range(100)]
    elif level == 4:
        # Fixed sampling seed: the level-4 problem set is the same for every `seed`, which then
        # only changes the order, as for the enumerated levels.
        rng = random.Random(4)
        seen: set[tuple[int, str, int]] = set()
        while len(seen) < _LEVEL_4_SIZE:
            seen.add((rng.randrange(1000), rng.choice("+-"), rng.randrange(1000)))
        triples = sorted(seen)
    elif level == 5:
        triples = [(a, "*", b) for a in range(10) for b in range(100)]
    else:
        raise ValueError(f"unknown arithmetic level {level!r}; valid levels: 1, 2, 3, 4, 5")
    out = []
    for a, op, b in triples:
        text = f"{a}{op}{b}="
        out.append((text, str(a + b if op == "+" else a - b if op == "-" else a * b), hash_fraction(text)))
    return tuple(out)


@TASKS.register("arithmetic", paper="built-in synthetic task",
                summary="'12+34=' -> '46'; levels 1-5 from one-digit sums to 3-digit +/- and products")
def arithmetic(split: str, *, level: int | list[int] = 2, seed: int = 0, test_fraction: float = 0.1,
               limit: int | None = None, hints: bool = False, per_level: int | None = None) -> list[dict]:
    """Integer arithmetic written as `a+b=`; the answer is the result as a string.

    level 1: a+b, a,b in 0..9 (100 problems)       level 2: a+b, a,b in 0..99 (10,000; the demo)
    level 3: a+b or a-b, a,b in 0..99 (20,000)     level 4: a+b or a-b, a,b in 0..999 (a fixed
    sample of 20,000)                              level 5: a*b, a in 0..9, b in 0..99 (1,000)
    Differences may be negative ("3-7=" -> "-4"). A list of levels takes the union; a problem in
    several listed levels (e.g. "3+4=" is in 1, 2 and 3) appears once, under the first listed.
    `per_level` keeps at most that many problems of each listed level (after the split and the
    shuffle), for a mix of difficulties in fixed proportions (levels differ in size by 200x).
    Extra column: `level`; with `hints: true` also `hint_1`..`hint_3`, tiered hints (the method,
    the first step, all but the last character of the answer) for `scaf_grpo` (data/arithmetic_hints.py).
    """
    _check_split(split)
    _check_fraction(test_fraction)
    levels = [level] if isinstance(level, int) else list(level)
    if not levels:
        raise ValueError("arithmetic: level must be an int in 1..5 or a non-empty list of them")
    want_test = split == "test"
    kept, seen = [], set()
    for lv in levels:
        for text, answer, frac in _level_problems(lv):
            if (frac < test_fraction) == want_test and text not in seen:
                seen.add(text)
                kept.append((text, answer, lv))
    random.Random(seed).shuffle(kept)
    if per_level is not None:
        if per_level < 1:
            raise ValueError(f"arithmetic: per_level must be >= 1 (or unset), got {per_level}")
        taken = {lv: 0 for lv in levels}
        capped = []
        for problem in kept:
            taken[problem[2]] += 1
            if taken[problem[2]] <= per_level:
                capped.append(problem)
        kept = capped
    if limit is not None:
        kept = kept[:limit]
    return [_row(text, answer, level=lv, **(arithmetic_hints(text, answer) if hints else {}))
            for text, answer, lv in kept]


# ----------------------------------------------------------------------------------- countdown
def _random_expression(numbers: list[int], rng: random.Random) -> tuple[str, int] | None:
    """Combine `numbers` pairwise in random order with random ops; None if a step is invalid.

    Every intermediate value must be a positive integer (exact division only), as in TinyZero's
    generator, so the expression reads like something a model could find step by step.
    """
    items = [(str(n), n, True) for n in numbers]  # (text, value, is_atom)
    while len(items) > 1:
        i, j = rng.sample(range(len(items)), 2)
        (ta, va, atom_a), (tb, vb, atom_b) = items[i], items[j]
        op = rng.choice("+-*/")
        if op == "/":
            if va % vb:
                return None
            value = va // vb
        else:
            value = va + vb if op == "+" else va - vb if op == "-" else va * vb
        if value <= 0:
            return None
        # Parenthesise compound operands so the text evaluates to `value` under normal precedence.
        ta = ta if atom_a else f"({ta})"
        tb = tb if atom_b else f"({tb})"
        items = [it for k, it in enumerate(items) if k not in (i, j)] + [(f"{ta}{op}{tb}", value, False)]
    return items[0][0], items[0][1]


@TASKS.register("countdown", paper="TinyZero Countdown task (Pan et al., 2025)",
                summary="reach a target from given numbers with + - * /, each number used once")
def countdown(split: str, *, num_count: int = 3, max_number: int = 20, max_target: int = 100,
              size: int = 20000, seed: int = 0, test_fraction: float = 0.1,
              limit: int | None = None) -> list[dict]:
    """Countdown: "Use 3 7 9 to make 30." -> an expression such as "(3*7)+9".

    `size` distinct problems (both splits together; fewer if 50 * size draws do not find that
    many) are generated from `seed`: `num_count` numbers in 1..max_number, and a target obtained
    by a random expression over all of them whose intermediate values are positive integers and
    whose value is in 1..max_target.
    The answer is that expression (one valid solution; others may exist, so rewards should check
    the expression against `numbers` and `target`, not compare strings). Extra columns:
    `numbers` (list[int]) and `target` (int).
    """
    _check_split(split)
    if num_count < 2 or max_number < 1 or max_target < 1:
        raise ValueError("countdown: need num_count >= 2, max_number >= 1 and max_target >= 1")
    rng = random.Random(seed)
    rows, seen = [], set()
    attempts = 0
    while len(rows) < size and attempts < 50 * size:
        attempts += 1
        numbers = [rng.randint(1, max_number) for _ in range(num_count)]
        made = _random_expression(numbers, rng)
        if made is None or made[1] > max_target:
            continue
        expr, target = made
        nums = " ".join(map(str, numbers))
        content = f"Use {nums} to make {target}."
        if content in seen:
            continue
        seen.add(content)
        rows.append(_row(content, expr, numbers=numbers, target=target))
    return select_split(rows, split, seed=seed, test_fraction=test_fraction, limit=limit)
