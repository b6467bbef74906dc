"""Tiered arithmetic hints: hand-checked texts, and tiers 2 + 3 spelling out every answer."""

import re

import pytest

from postrl.data import load_records
from postrl.data.arithmetic_hints import arithmetic_hints
from postrl.data.tasks import arithmetic


def test_hints_for_a_sum_a_negative_difference_a_product_and_a_one_digit_sum():
    assert arithmetic_hints("47+38=", "85") == {
        "hint_1": "Add the ones digits first and carry 1 if their sum is 10 or more, then add the tens digits "
                  "with the carry.",
        "hint_2": "The ones digits give 7+8=15: the result ends in 5, carry 1.",
        "hint_3": "The answer starts with 8."}
    assert arithmetic_hints("263-727=", "-464") == {
        "hint_1": "727 is larger than 263, so the result is negative: compute 727-263 and put a minus sign in front.",
        "hint_2": "The result ends in 4 and is negative.",
        "hint_3": "The answer starts with -46."}
    assert arithmetic_hints("8*91=", "728") == {
        "hint_1": "Multiply 91 by 8 one digit at a time from the ones digit, carrying the tens of each product "
                  "to the next digit.",
        "hint_2": "The result ends in 8.",
        "hint_3": "The answer starts with 72."}
    assert arithmetic_hints("4+3=", "7") == {"hint_1": "Add the two digits.",
                                             "hint_2": "The ones digits give 4+3=7: the result ends in 7, carry 0.",
                                             "hint_3": "The answer is a single digit."}
    assert arithmetic_hints("512-108=", "404")["hint_1"].endswith("then subtract the tens digits, then the "
                                                                  "hundreds digits.")
    with pytest.raises(ValueError, match="not of the form"):
        arithmetic_hints("12/3=", "4")


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_tier_three_and_the_last_digit_of_tier_two_give_the_answer(level):
    for row in arithmetic("train", level=level, limit=400, hints=True):
        last = re.search(r"ends in (\d)", row["hint_2"]).group(1)
        start = re.fullmatch(r"The answer starts with (-?\d+)\.", row["hint_3"])
        sign = "-" if "negative" in row["hint_2"] or "minus" in row["hint_3"] else ""
        assert (start.group(1) if start else sign) + last == row["answer"], row
        assert all(h.isascii() and h.isprintable() for h in (row["hint_1"], row["hint_2"], row["hint_3"]))


def test_hints_are_an_opt_in_task_option():
    plain, _ = load_records("task:arithmetic", task_kwargs={"level": 1, "limit": 3})
    hinted, _ = load_records("task:arithmetic", task_kwargs={"level": 1, "limit": 3, "hints": True})
    assert "hint_1" not in plain[0] and [r["prompt"] for r in plain] == [r["prompt"] for r in hinted]
    assert {"hint_1", "hint_2", "hint_3"} <= set(hinted[0])
