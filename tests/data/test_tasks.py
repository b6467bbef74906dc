import ast
import operator
import re
import string
from fractions import Fraction

import pytest

from postrl.data.tasks import TASKS, arithmetic, countdown

PRINTABLE = set(string.printable) - set("\x0b\x0c\r")


def content(row):
    return row["prompt"][-1]["content"]


def solve(problem: str) -> int:
    """The result of "a+b=", "a-b=" or "a*b=" (a, b non-negative integers)."""
    a, op, b = re.fullmatch(r"(\d+)([-+*])(\d+)=", problem).groups()
    return {"+": operator.add, "-": operator.sub, "*": operator.mul}[op](int(a), int(b))


def exact_eval(expr: str) -> Fraction:
    """Evaluate + - * / over integers exactly (no floats, no names, no calls)."""
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}

    def ev(node):
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        raise ValueError(f"unexpected syntax in {expr!r}")

    return ev(ast.parse(expr, mode="eval").body)


def test_tasks_are_registered():
    assert {"arithmetic", "countdown"} <= set(TASKS.names())
    assert TASKS["arithmetic"] is arithmetic


def test_arithmetic_same_arguments_give_same_rows():
    assert arithmetic("train", level=3, seed=5) == arithmetic("train", level=3, seed=5)


def test_arithmetic_seed_changes_order_not_content():
    a, b = arithmetic("train", seed=0), arithmetic("train", seed=1)
    assert [content(r) for r in a] != [content(r) for r in b]
    assert sorted(map(content, a)) == sorted(map(content, b))


def test_arithmetic_row_format():
    row = arithmetic("train", level=2)[0]
    assert set(row) == {"prompt", "answer", "level"}
    assert row["prompt"][0]["role"] == "user" and len(row["prompt"]) == 1
    a, b = content(row)[:-1].split("+")
    assert content(row) == f"{int(a)}+{int(b)}=" and row["answer"] == str(int(a) + int(b))


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_arithmetic_answers_are_correct(level):
    rows = arithmetic("train", level=level, limit=2000) + arithmetic("test", level=level, limit=500)
    for row in rows:
        assert row["level"] == level
        assert str(solve(content(row))) == row["answer"]
        assert set(content(row) + row["answer"]) <= PRINTABLE


def test_arithmetic_enumerates_small_levels():
    sizes = {lv: len(arithmetic("train", level=lv)) + len(arithmetic("test", level=lv)) for lv in (1, 2, 3, 5)}
    assert sizes == {1: 100, 2: 10000, 3: 20000, 5: 1000}


def test_arithmetic_operand_ranges():
    for row in arithmetic("train", level=5):
        a, b = map(int, content(row)[:-1].split("*"))
        assert 0 <= a <= 9 and 0 <= b <= 99
    for row in arithmetic("train", level=4, limit=500):
        assert all(0 <= int(x) <= 999 for x in content(row)[:-1].replace("-", "+").split("+"))


def test_arithmetic_train_and_test_are_disjoint():
    train = {content(r) for r in arithmetic("train", level=3)}
    test = {content(r) for r in arithmetic("test", level=3)}
    assert train and test and not train & test
    assert 0.05 < len(test) / (len(train) + len(test)) < 0.15  # test_fraction=0.1


def test_split_membership_is_stable_under_seed_and_limit():
    test_all = {content(r) for r in arithmetic("test", level=2)}
    for kwargs in ({"seed": 3}, {"limit": 50}, {"seed": 7, "limit": 10}):
        assert {content(r) for r in arithmetic("test", level=2, **kwargs)} <= test_all
        assert not {content(r) for r in arithmetic("train", level=2, **kwargs)} & test_all


def test_limit_keeps_the_first_rows():
    assert arithmetic("train", limit=7) == arithmetic("train")[:7]


def test_level_list_mixes_levels():
    rows = arithmetic("train", level=[1, 5])
    assert {r["level"] for r in rows} == {1, 5}
    assert {r["level"] for r in rows[:100]} == {1, 5}  # shuffled together, not one after the other
    for row in rows:
        assert str(solve(content(row))) == row["answer"]


def test_level_list_keeps_each_problem_once():
    rows = arithmetic("train", level=[1, 2]) + arithmetic("test", level=[1, 2])
    texts = [content(r) for r in rows]
    assert len(texts) == len(set(texts)) == 10000
    assert next(r for r in rows if content(r) == "3+4=")["level"] == 1


@pytest.mark.parametrize("task", [arithmetic, countdown])
def test_unknown_split_names_valid_splits(task):
    with pytest.raises(ValueError, match="valid splits: train, test"):
        task("validation")


def test_unknown_level_names_valid_levels():
    with pytest.raises(ValueError, match="valid levels"):
        arithmetic("train", level=6)


def test_countdown_same_arguments_give_same_rows():
    assert countdown("train", size=300, seed=2) == countdown("train", size=300, seed=2)


def test_countdown_answers_reach_target_using_each_number_once():
    rows = countdown("train", size=500) + countdown("test", size=500)
    assert len(rows) > 400
    for row in rows:
        expr, numbers, target = row["answer"], row["numbers"], row["target"]
        assert exact_eval(expr) == target and 1 <= target <= 100
        used = [int(t) for t in expr.replace("(", " ").replace(")", " ").replace("+", " ")
                .replace("-", " ").replace("*", " ").replace("/", " ").split()]
        assert sorted(used) == sorted(numbers)
        assert len(numbers) == 3 and all(1 <= n <= 20 for n in numbers)
        assert set(content(row) + expr) <= PRINTABLE
        assert " ".join(map(str, numbers)) in content(row) and str(target) in content(row)


def test_countdown_options_are_respected():
    for row in countdown("train", num_count=4, max_number=9, max_target=50, size=200):
        assert len(row["numbers"]) == 4 and max(row["numbers"]) <= 9
        assert 1 <= row["target"] <= 50 and exact_eval(row["answer"]) == row["target"]


def test_countdown_train_and_test_are_disjoint_and_stable():
    train = {content(r) for r in countdown("train", size=2000)}
    test = {content(r) for r in countdown("test", size=2000)}
    assert train and test and not train & test
    # Another seed generates other problems, but a shared problem lands in the same split.
    other_train = {content(r) for r in countdown("train", size=2000, seed=1)}
    assert not other_train & test


def test_per_level_caps_each_level_in_order():
    full = arithmetic("train", level=[1, 2], seed=3)
    capped = arithmetic("train", level=[1, 2], seed=3, per_level=5)
    want = [r for r in full if r["level"] == 1][:5] + [r for r in full if r["level"] == 2][:5]
    assert sorted(r["prompt"][0]["content"] for r in capped) == sorted(r["prompt"][0]["content"] for r in want)
    assert [r["level"] for r in capped].count(1) == 5 and len(capped) == 10
    # the shuffled order is kept: capped rows appear in the order of the full list
    order = [r["prompt"][0]["content"] for r in full]
    positions = [order.index(r["prompt"][0]["content"]) for r in capped]
    assert positions == sorted(positions)
    with pytest.raises(ValueError, match="per_level must be >= 1"):
        arithmetic("train", level=2, per_level=0)
