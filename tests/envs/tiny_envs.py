"""Tiny test environments (not registered): counting, sleeping, async, tool-calling."""

from __future__ import annotations

import asyncio
import time

from postrl.envs import StepResult


class CountEnv:
    """Say a number each turn; done after `target` turns. Reward 1 per turn containing a digit."""

    def __init__(self, target: int = 2):
        self.target = target

    def reset(self, row, seed):
        self.turn = 0
        self.seed = seed
        return row.prompt if row is not None else "count"

    def step(self, action):
        self.turn += 1
        done = self.turn >= self.target
        reward = 1.0 if any(c.isdigit() for c in action) else 0.0
        return StepResult(None if done else f"turn {self.turn} seed {self.seed % 7}", reward, done,
                          {"success": done, "tool_calls": 1})

    def state_key(self):
        return f"t{self.turn}"


class SleepEnv(CountEnv):
    """Sleeps `sleep_s` in every step (to hit the per-turn timeout)."""

    def __init__(self, target: int = 2, sleep_s: float = 5.0):
        super().__init__(target)
        self.sleep_s = sleep_s

    def step(self, action):
        time.sleep(self.sleep_s)
        return super().step(action)


class AsyncSleepEnv(CountEnv):
    """Async steps that sleep `sleep_s`."""

    def __init__(self, target: int = 2, sleep_s: float = 5.0):
        super().__init__(target)
        self.sleep_s = sleep_s

    async def astep(self, action):
        await asyncio.sleep(self.sleep_s)
        return CountEnv.step(self, action)

    def step(self, action):  # never called: the rollout prefers astep
        raise AssertionError("astep should be used")


class NeverDoneEnv(CountEnv):
    """Never finishes (to hit max_turns / max_total_tokens)."""

    def step(self, action):
        self.turn += 1
        return StepResult(f"again {self.turn}", 0.0, False)


class ToolEchoEnv(CountEnv):
    """Observations are tool results ("result k"); done after `target` turns with success."""

    observation_role = "tool"

    def step(self, action):
        self.turn += 1
        done = self.turn >= self.target
        return StepResult(None if done else f"result {self.turn}", 0.5, done,
                          {"success": done, "tool_calls": 1})


class LuckyEnv(CountEnv):
    """CountEnv whose episode succeeds (reward 1 on the last turn) when the reset seed is 0 mod 4,
    whatever the actions: successes and all-failed groups for the success replay."""

    def step(self, action):
        out = super().step(action)
        lucky = out.done and self.seed % 4 == 0
        return StepResult(out.observation, float(lucky), out.done, {"success": lucky, "tool_calls": 1})


class FailingEnv(CountEnv):
    def step(self, action):
        raise ValueError("boom")


CALLS = []


def contains_ok(prompts, completions, **kwargs):
    """1.0 when the (transcript) text contains 'ok'; records the batch size of every call."""
    CALLS.append(len(completions))
    return [float("ok" in c) for c in completions]
