"""A user environment for `postrl train` (see docs/agents.md): arithmetic with retries and hints.

The model answers an arithmetic problem; a wrong answer gets a hint ("higher" / "lower") and
another try, up to `tries` turns. Reward 1 for the right answer, minus `retry_cost` per extra try.
Use it from a config as

    env:
      name: examples/agent_env.py:HintedArithmetic    # or my_package.my_module:HintedArithmetic
      kwargs: {tries: 3}

An env is any class with `reset(row, seed) -> first observation` and `step(action) ->
StepResult` (or `async def astep`). A fresh instance plays each episode; `row` is the dataset
row (`row.prompt`, `row.answer`, `row.columns`), `seed` makes any randomness reproducible.
"""

from __future__ import annotations

import re

from postrl.envs import StepResult

_NUMBER = re.compile(r"-?\d+")


class HintedArithmetic:
    max_turns = 3  # optional: the default for env.max_turns
    system_prompt = None  # optional: a system message before the first observation

    def __init__(self, tries: int = 3, retry_cost: float = 0.1):
        self.tries, self.retry_cost = tries, retry_cost

    def reset(self, row, seed: int) -> str:
        self.target, self.turn = int(row.answer), 0
        return row.prompt  # e.g. "12+34="; text becomes a user message (or give chat messages)

    def step(self, action: str) -> StepResult:
        self.turn += 1
        found = _NUMBER.search(action)
        guess = int(found.group()) if found else None
        if guess == self.target:
            reward = 1.0 - self.retry_cost * (self.turn - 1)
            return StepResult(None, reward, done=True, info={"success": True})
        if self.turn >= self.tries:
            return StepResult(None, 0.0, done=True, info={"success": False})
        hint = "no number found" if guess is None else ("higher" if guess < self.target else "lower")
        return StepResult(f"{hint}, try again", 0.0, done=False)

    def state_key(self) -> str:  # optional: anchor states for GiGPO-style credit assignment
        return f"turn{self.turn}"
