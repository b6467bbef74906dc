"""PRLCoder line labels (data/prlcoder.py): variants by hand, labels by running, TRL stepwise rows."""

from __future__ import annotations

import time

import pytest

from postrl.data.prlcoder import code_line_labels, label_problem, line_variants, program_names, run_variants
from postrl.data.tasks import TASKS

REFERENCE = "def f(a, b):\n    x = a * 3\n    return x + b"
TESTS = "assert f(1, 2) == 5\nassert f(2, 0) == 6"


def test_line_variants_of_an_assignment():
    assert line_variants("x = a * 3", ["a", "b", "x"]) == [
        ("binop_swap", "x = a + 3"), ("constant", "x = a * 4"), ("constant", "x = a * 2"),
        ("swap_variable", "x = b * 3"), ("swap_variable", "x = x * 3"), ("commute", "x = 3 * a"),
        ("parenthesize", "x = (a * 3)"), ("delete", "pass")]


def test_line_variants_of_headers_and_augmented_assignments():
    assert line_variants("if x > 5:", ["x"]) == [
        ("compare_flip", "if x >= 5:"), ("compare_flip", "if x < 5:"), ("constant", "if x > 6:"),
        ("constant", "if x > 4:"), ("mirror_compare", "if 5 < x:")]  # a header is never deleted
    assert ("augassign", "total = total + i") in line_variants("total += i", ["i", "total"])
    assert ("augassign", "n //= 10") in line_variants("n = n // 10", ["n"])
    assert line_variants("else:", ["x"]) == [] and line_variants("def f(a, b):", ["a", "b"]) == []


def test_program_names_are_parameters_and_assigned_locals():
    assert program_names(REFERENCE) == ["a", "b", "x"]


def test_labels_follow_the_prefix_plus_reference_rule():
    examples = {(e["line"], e["completions"][max(e["line"], 0)]): e for e in label_problem(REFERENCE, TESTS)}
    ref = examples[(-1, "def f(a, b):")]
    assert ref["completions"] == ["def f(a, b):", "x = a * 3", "return x + b"] and ref["labels"] == [True] * 3
    # x = 3 * a keeps f: labels all True
    assert examples[(1, "x = 3 * a")]["labels"] == [True, True, True]
    # x = a + 3: f(1, 2) = 4 + 2 = 6 != 5 -> the changed line and every later line are False
    assert examples[(1, "x = a + 3")]["labels"] == [True, False, False]
    # return x - b: f(1, 2) = 3 - 2 = 1 != 5
    assert examples[(2, "return x - b")]["labels"] == [True, True, False]
    # return x + x: f(2, 0) = 12 != 6; f(1, 2) = 6 != 5
    assert examples[(2, "return x + x")]["passes"] is False
    assert examples[(2, "return (x + b)")]["labels"] == [True, True, True]  # a refactor


def test_truncate_ends_each_example_at_its_changed_line():
    examples = label_problem(REFERENCE, TESTS, truncate=True)
    changed = next(e for e in examples if e["completions"][-1] == "x = a + 3")
    assert changed["completions"] == ["def f(a, b):", "x = a + 3"] and changed["labels"] == [True, False]
    assert next(e for e in examples if e["line"] == -1)["labels"] == [True, True, True]


def test_a_reference_that_fails_its_tests_is_an_error():
    with pytest.raises(ValueError, match="fails its own tests"):
        label_problem(REFERENCE, "assert f(1, 2) == 99")


def test_the_harness_stops_a_looping_variant_and_keeps_going():
    t0 = time.monotonic()
    assert run_variants(["while True:\n    pass", "x = 1", "x = 2", "1 / 0"], "assert x == 1",
                        per_program_s=0.3) == [False, True, False, False]
    assert time.monotonic() - t0 < 3.0


def test_task_rows_are_trl_stepwise_and_split_like_the_problems():
    assert "code_line_labels" in TASKS.names()
    train = code_line_labels("train", limit=2)
    test = code_line_labels("test", limit=2)
    assert not {r["prompt"][-1]["content"] for r in train} & {r["prompt"][-1]["content"] for r in test}
    for r in train + test:
        assert len(r["completions"]) == len(r["labels"]) >= 3
        assert all(isinstance(s, str) and s.strip() == s and s and "\n" not in s for s in r["completions"])
        assert all(isinstance(x, bool) for x in r["labels"])
        k = r["line"]
        assert all(r["labels"][:max(k, 0)]) and set(r["labels"][max(k, 0):]) <= {r["passes"]}
    assert sum(r["line"] == -1 for r in train) == 2  # one reference per problem


def test_max_variants_keeps_the_reference_and_a_stable_subset():
    rows = code_line_labels("train", limit=2, max_variants=3)
    assert len(rows) == 2 * (1 + 3)
    assert rows == code_line_labels("train", limit=2, max_variants=3)
    with pytest.raises(ValueError, match="per_program_s"):
        code_line_labels("train", per_program_s=0)


def test_rows_load_in_postrl_prm_with_the_newline_separator():
    from postrl.trainers.prm import parse_row
    from postrl.trainers.prm_config import PrmConfig

    cfg = PrmConfig.model_validate({"data": {"source": "task:code_line_labels", "separator": "\n"}})
    for i, row in enumerate(code_line_labels("test", limit=2)):
        prompt, steps, labels = parse_row(i, row, cfg, "task:code_line_labels[test]")
        assert steps == row["completions"] and labels == row["labels"]
