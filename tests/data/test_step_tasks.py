"""The step-labelled arithmetic task (data/step_tasks.py)."""

from __future__ import annotations

import pytest

from postrl.data import TASKS
from postrl.data.step_tasks import arithmetic_steps, steps_row


def _value(step: str) -> tuple[int, int]:
    """(what the step's operands give, what it wrote) of 'a+b=c' / 'a-b=c' (a may be negative)."""
    lhs, written = step.split("=")
    sign = -1 if lhs.startswith("-") else 1
    body = lhs[1:] if sign < 0 else lhs
    op = "+" if "+" in body else "-"
    a, b = body.split(op)
    a = sign * int(a)
    return (a + int(b) if op == "+" else a - int(b)), int(written)


def test_labels_are_true_until_the_first_wrong_result_and_the_answer_is_correct():
    rows = arithmetic_steps("train", limit=300)
    corrupted = 0
    for r in rows:
        right = [got == wrote for got, wrote in map(_value, r["completions"])]
        first = right.index(False) if False in right else len(right)
        assert r["labels"] == [k < first for k in range(len(right))]
        corrupted += first < len(right)
        # the chain carries the written values on: each step starts from the previous written result
        for prev, nxt in zip(r["completions"], r["completions"][1:]):
            assert nxt.startswith(prev.split("=")[1])
        start = r["prompt"][0]["content"]
        assert r["completions"][0].startswith(start[0]) and start.endswith("=")
    assert 0.35 < corrupted / len(rows) < 0.65  # corrupt_fraction 0.5


def test_copy_errors_start_a_step_from_a_miscopied_value():
    row = steps_row(3, (("+", 4), ("-", 2)), corrupt_fraction=1.0, error="copy")
    bad = row["labels"].index(False)
    assert all(got == wrote for got, wrote in map(_value, row["completions"]))  # every line's arithmetic is right
    assert row["answer"] == "5" and row["labels"][bad:] == [False] * (2 - bad)


def test_splits_are_disjoint_and_deterministic():
    train = {r["prompt"][0]["content"] for r in arithmetic_steps("train")}
    test = {r["prompt"][0]["content"] for r in arithmetic_steps("test")}
    assert train and test and not train & test
    assert arithmetic_steps("test", seed=1) != arithmetic_steps("test", seed=2)
    assert sorted(map(str, arithmetic_steps("test", seed=1))) == sorted(map(str, arithmetic_steps("test", seed=2)))
    assert len(arithmetic_steps("train", steps=4, limit=5)[0]["completions"]) == 4
    assert "arithmetic_steps" in TASKS


@pytest.mark.parametrize("kwargs, match", [({"steps": 0}, "steps must be >= 1"),
                                           ({"corrupt_fraction": 2.0}, "corrupt_fraction"),
                                           ({"error": "typo"}, "error must be")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        arithmetic_steps("train", **kwargs)


def test_prompt_only_rows_for_rl_have_no_completions_column():
    full, prompts = arithmetic_steps("test", limit=5), arithmetic_steps("test", limit=5, stepwise=False)
    assert prompts == [{"prompt": r["prompt"], "answer": r["answer"]} for r in full]
