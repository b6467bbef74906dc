"""Built-in step-labelled data: multi-step arithmetic chains, some with one corrupted step.

`task:arithmetic_steps` serves two commands. For `postrl prm` its rows are TRL's stepwise
supervision format: `prompt`, `completions` (the steps) and `labels` (one bool per step). For
`postrl train`, `stepwise: false` gives the same prompts with only their `answer` (the correct result).

    prompt "3+4-2+1="   steps "3+4=7", "7-2=5", "5+1=6"   answer "6"

A corrupted chain writes a wrong result on one step and carries the wrong value on, so that step
is the first error: labels are True before it and False from it on (PRM800K-style first-error
labelling; later steps are computed correctly from a wrong value and are still labelled False).
The default error is a carry slip (off by 10): correct values stay in 0..max_value, so the wrong
result is visible on its own line, which the tiny model learns in a few dozen steps. Off-by-1/2
results (`error: result`) and miscopied operands (`error: copy`) need the model to check the
arithmetic or compare lines; the tiny model from scratch does not learn those in minutes
(docs/process_rewards.md has the numbers). Which chains are corrupted, at which step and by how
much is decided by a stable hash of the problem, so every run builds the same data; train and
test never share a problem (hash split, as the other tasks).
"""

from __future__ import annotations

import functools
import random

from postrl.data.tasks import TASKS, _check_fraction, _check_split, hash_fraction

ERRORS = ("carry", "result", "copy")
_SAMPLE = 20000  # chains drawn once (fixed seed) per shape; `seed` only orders them


@functools.lru_cache(maxsize=None)
def _chains(num_steps: int, max_value: int) -> tuple[tuple[int, tuple[tuple[str, int], ...]], ...]:
    """(start, ((op, operand), ...)) chains whose correct values all stay in 0..max_value."""
    rng = random.Random(f"arithmetic_steps:{num_steps}:{max_value}")
    seen: set = set()
    tries = 0
    while len(seen) < _SAMPLE and tries < 40 * _SAMPLE:
        tries += 1
        value = start = rng.randint(0, max_value)
        ops = []
        for _ in range(num_steps):
            op, b = rng.choice("+-"), rng.randint(1, max(1, max_value))
            value = value + b if op == "+" else value - b
            if not 0 <= value <= max_value:
                break
            ops.append((op, b))
        if len(ops) == num_steps:
            seen.add((start, tuple(ops)))
    return tuple(sorted(seen))


def steps_row(start: int, ops, corrupt_fraction: float, error: str = "carry") -> dict:
    """One row: the prompt, its steps and labels (maybe corrupted), the correct answer."""
    prompt = str(start) + "".join(f"{op}{b}" for op, b in ops) + "="
    h = hash_fraction("corrupt:" + prompt)
    bad = int(hash_fraction("where:" + prompt) * len(ops)) if h < corrupt_fraction else None
    pick = int(hash_fraction("delta:" + prompt) * 4)
    delta = (10, -10, 10, -10)[pick] if error == "carry" else (1, -1, 2, -2)[pick]
    steps, labels, value, true_value = [], [], start, start
    for k, (op, b) in enumerate(ops):
        if k == bad and error == "copy":
            value += delta  # the step starts from a miscopied value; its own arithmetic is right
        result = value + b if op == "+" else value - b
        true_value = true_value + b if op == "+" else true_value - b
        if k == bad and error in ("result", "carry"):
            result += delta
        steps.append(f"{value}{op}{b}={result}")
        labels.append(bad is None or k < bad)
        value = result
    return {"prompt": [{"role": "user", "content": prompt}], "completions": steps, "labels": labels,
            "answer": str(true_value)}


@TASKS.register("arithmetic_steps", paper="built-in synthetic step-labelled data (TRL stepwise supervision)",
                summary="'3+4-2=' with steps '3+4=7','7-2=5' and per-step labels; some chains have one wrong step")
def arithmetic_steps(split: str, *, steps: int = 3, max_value: int = 9, corrupt_fraction: float = 0.5,
                     error: str = "carry", stepwise: bool = True, seed: int = 0, test_fraction: float = 0.1,
                     limit: int | None = None) -> list[dict]:
    """Rows `{prompt, completions, labels, answer}` of `steps`-step +/- chains over 0..max_value.

    A stable `corrupt_fraction` of chains has one wrong result (off by 1 or 2, at a hashed step,
    carried on); labels: True before the first error, False from it on. `answer`: the correct
    final value. At most 20,000 distinct chains per (steps, max_value), split by prompt hash.
    error: carry = off by 10 (a carry slip; the result leaves 0..max_value, which a tiny model
    sees), result = off by 1 or 2, copy = the step starts from a miscopied value (its own
    arithmetic right). stepwise=False: rows `{prompt, answer}` only (prompts for `postrl train`).
    """
    _check_split(split)
    _check_fraction(test_fraction)
    if steps < 1:
        raise ValueError(f"arithmetic_steps: steps must be >= 1, got {steps}")
    if max_value < 1:
        raise ValueError(f"arithmetic_steps: max_value must be >= 1, got {max_value}")
    if not 0.0 <= corrupt_fraction <= 1.0:
        raise ValueError(f"arithmetic_steps: corrupt_fraction must be in [0, 1], got {corrupt_fraction}")
    if error not in ERRORS:
        raise ValueError(f"arithmetic_steps: error must be one of {', '.join(ERRORS)}, got {error!r}")
    rows = [steps_row(start, ops, corrupt_fraction, error) for start, ops in _chains(steps, max_value)]
    kept = [r for r in rows if (hash_fraction(r["prompt"][0]["content"]) < test_fraction) == (split == "test")]
    random.Random(seed).shuffle(kept)
    kept = kept if limit is None else kept[:limit]
    # postrl train passes every column to the reward functions, whose TRL signature already has a
    # `completions` argument: prompt-only rows for RL
    return kept if stepwise else [{"prompt": r["prompt"], "answer": r["answer"]} for r in kept]
