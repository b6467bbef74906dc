"""`ToolEnv`: the base of environments where the model calls tools before it answers.

Each turn, the action's tool calls (`tool_parser.parse_tool_calls`) are run (`tools.call_tool`,
each with a wall-clock timeout) and their results, one per line, are the next observation;
malformed calls get an error line instead, so the model can fix them. A turn with no call tag at
all is the final answer: `score(answer)` gives the reward and the episode ends. Subclasses set
`tools` and implement `score`; `prompt` may be overridden to build the first observation.
"""

from __future__ import annotations

import re
from typing import Any

from postrl.envs.base import StepResult
from postrl.envs.tool_parser import has_call_tag, parse_tool_calls
from postrl.envs.tools import TOOLS, call_tool


class ToolEnv:
    """Runs tool calls until the model answers; `score(answer) -> (reward, success)` ends it."""

    tools: list[str] = []
    """Names in `TOOLS` the model may call; the rollout shows them to the model (tools.render_chat)."""
    max_turns: int = 4
    observation_role: str = "tool"
    """The chat role of tool results (the tiny and Qwen templates have a "tool" role)."""

    def __init__(self, *, describe_tools: bool = True, max_calls_per_turn: int = 2, tool_timeout_s: float = 10.0,
                 max_result_chars: int = 500):
        if max_calls_per_turn < 1 or tool_timeout_s <= 0 or max_result_chars < 1:
            raise ValueError(f"{type(self).__name__}: need max_calls_per_turn >= 1 (got {max_calls_per_turn}), "
                             f"tool_timeout_s > 0 (got {tool_timeout_s}) and max_result_chars >= 1 "
                             f"(got {max_result_chars})")
        unknown = [t for t in type(self).tools if t not in TOOLS]
        if unknown:
            raise ValueError(f"{type(self).__name__}.tools names unknown tools {unknown}; valid tools: "
                             f"{', '.join(TOOLS.names())}")
        self.allowed_tools: list[str] = list(type(self).tools)
        """The tools calls may name: the class's `tools`."""
        self.tools = self.allowed_tools if describe_tools else []
        """The tools the rollout describes in the prompt (it reads the instance's `tools`);
        `describe_tools: false` shows none: a model warm-started on tool use, such as the tiny
        demo, needs no description, and its episodes are 4x shorter without it."""
        self.max_calls_per_turn = max_calls_per_turn
        self.tool_timeout_s = tool_timeout_s
        self.max_result_chars = max_result_chars
        self.row: Any = None
        self.observations: list[str] = []

    # ------------------------------------------------------------------------- for subclasses
    def prompt(self, row: Any) -> str | list[dict]:
        """The first observation; by default the dataset row's prompt."""
        return row.prompt

    def score(self, answer: str) -> tuple[float, bool]:
        """(reward, success) of the final answer `answer`."""
        raise NotImplementedError(f"{type(self).__name__} must define score(answer)")

    # -------------------------------------------------------------------------------- protocol
    def reset(self, row: Any, seed: int) -> str | list[dict]:
        self.row = row
        self.seed = seed
        self.observations = []
        return self.prompt(row)

    def step(self, action: str) -> StepResult:
        if not has_call_tag(action):
            reward, success = self.score(action)
            return StepResult(None, float(reward), True, {"success": bool(success), "tool_calls": 0, "tool_errors": 0})
        calls = parse_tool_calls(action, tools=self.allowed_tools, max_calls=self.max_calls_per_turn)
        lines, errors = [], 0
        for call in calls:
            if call.ok:
                result = call_tool(call.name, call.arguments, timeout_s=self.tool_timeout_s,
                                   max_chars=self.max_result_chars)
                text, failed = result.text, result.error
            else:
                text, failed = f"error: {call.error}", True
            errors += failed
            lines.append(text)
        observation = "\n".join(lines)
        self.observations.append(observation)
        return StepResult(observation, 0.0, False, {"tool_calls": len(calls), "tool_errors": errors})

    def state_key(self) -> str:
        """The task and every observation so far: episodes that saw the same results share a state."""
        prompt = self.row.prompt if self.row is not None else ""
        text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
        return "\x1e".join([text, *self.observations])


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def last_number(text: str) -> float | None:
    """The last number written in `text` (commas between digit groups ignored), or None."""
    found = _NUMBER.findall(re.sub(r"(?<=\d),(?=\d{3}\b)", "", text))
    return float(found[-1]) if found else None
