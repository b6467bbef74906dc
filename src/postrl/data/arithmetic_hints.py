"""Tiered hints for an arithmetic problem (`task:arithmetic` with `hints: true`), for `scaf_grpo`.

Three tiers, from abstract to concrete, as in Scaf-GRPO (arXiv 2510.19807):
  hint_1  the method         "Add the ones digits first, carry 1 if ..., then the tens digits ..."
  hint_2  the first step     "The ones digits give 7+8=15: the result ends in 5, carry 1."
  hint_3  most of the answer "The answer starts with 8." (all but the last character)
hint_3's prefix and hint_2's last digit together give the answer; tier 3 of a one-digit answer
says only that it is one digit. Printable ASCII, so the character-level tiny tokenizer covers them.
"""

from __future__ import annotations

import re

PLACES = ("ones", "tens", "hundreds", "thousands")


def arithmetic_hints(content: str, answer: str) -> dict[str, str]:
    """{"hint_1", "hint_2", "hint_3"} for the problem text `content` ("a+b=", "a-b=", "a*b=")."""
    m = re.fullmatch(r"(\d+)([+*-])(\d+)=", content)
    if m is None:
        raise ValueError(f"arithmetic_hints: {content!r} is not of the form 'a+b=', 'a-b=' or 'a*b='")
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    return {"hint_1": _method(a, op, b), "hint_2": _first_step(a, op, b), "hint_3": _most_of(answer)}


def _method(a: int, op: str, b: int) -> str:
    digits = len(str(max(a, b)))
    later = ", then ".join(f"the {p} digits" for p in PLACES[1:digits])
    if op == "*":
        return (f"Multiply {b} by {a} one digit at a time from the ones digit, "
                "carrying the tens of each product to the next digit.")
    if op == "-" and b > a:
        return f"{b} is larger than {a}, so the result is negative: compute {b}-{a} and put a minus sign in front."
    if digits == 1:
        return "Add the two digits." if op == "+" else "Subtract the second digit from the first."
    if op == "+":
        return f"Add the ones digits first and carry 1 if their sum is 10 or more, then add {later} with the carry."
    return f"Subtract the ones digits first and borrow 10 if the top digit is smaller, then subtract {later}."


def _first_step(a: int, op: str, b: int) -> str:
    if op == "+":
        x, y = a % 10, b % 10
        return f"The ones digits give {x}+{y}={x + y}: the result ends in {(x + y) % 10}, carry {(x + y) // 10}."
    result = a - b if op == "-" else a * b
    return f"The result ends in {abs(result) % 10}" + (" and is negative." if result < 0 else ".")


def _most_of(answer: str) -> str:
    digits = answer.lstrip("-")
    if len(digits) > 1:
        return f"The answer starts with {answer[:-1]}."
    return "The answer is a single digit" + (" with a minus sign." if answer.startswith("-") else ".")
