"""Built-in SFT data with answers of several lengths, for the length-control methods.

`task:arithmetic_verbose` gives each arithmetic problem one of three answers of the same result,
picked by a stable hash of the problem (a third each):

    "46"      "The answer is 46."      "Let me add them. The answer is 46."

A model fine-tuned on it answers in all three lengths, so RL with a length shaper (HAPO, the
scheduled Kimi length reward) has something to shorten; `benchmarks/length_control.py` measures
that. `budget_prefix: true` writes the answer's budget in front of it ("Budget 8: 46",
"Budget 24: The answer is 46.", "Budget 48: Let me ..."), the format `rollout.budget_prompt:
"Budget {budget}: "` continues for HBPO's budget subgroups.
"""

from __future__ import annotations

from postrl.data.tasks import TASKS, arithmetic, hash_fraction

STYLES = ("{answer}", "The answer is {answer}.", "Let me add them. The answer is {answer}.")
BUDGETS = (8, 24, 48)
"""The token budget (character-level tokenizer: characters) of each style, for `budget_prefix`."""


@TASKS.register("arithmetic_verbose", paper="built-in synthetic task",
                summary="arithmetic problems with SFT answers of three lengths (bare, a sentence, two sentences)")
def arithmetic_verbose(split: str, *, level: int | list[int] = 2, seed: int = 0, test_fraction: float = 0.1,
                       limit: int | None = None, budget_prefix: bool = False) -> list[dict]:
    """SFT rows `{prompt, completion, answer, level}`; the style of a problem is fixed by
    hash_fraction("verbose:" + problem) in thirds, so every run builds the same data."""
    out = []
    for r in arithmetic(split, level=level, seed=seed, test_fraction=test_fraction, limit=limit):
        style = min(int(hash_fraction("verbose:" + r["prompt"][-1]["content"]) * len(STYLES)), len(STYLES) - 1)
        completion = STYLES[style].format(answer=r["answer"])
        if budget_prefix:
            completion = f"Budget {BUDGETS[style]}: {completion}"
        out.append({**r, "completion": completion})
    return out
