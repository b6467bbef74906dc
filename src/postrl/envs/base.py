"""The environment protocol: what a multi-turn episode talks to, and loading one by name.

An env is a plain class: `reset(row, seed)` returns the first observation (the task prompt),
`step(action_text)` (or `async astep`) returns a `StepResult`. The rollout
(`postrl.rollout.multiturn`) owns turns, limits, timeouts and tokens; the env only sees text.
Built-ins live in the `ENVS` registry; users name their own class as `module:Class` or
`path/to/file.py:Class`. See docs/agents.md.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

from postrl.registry import Registry
from postrl.user_code import check_kwargs, load_attr

ENVS = Registry("environment")
"""Built-in environments by name; each entry's `fn` is the env class."""


@dataclass
class StepResult:
    """What one env step returns."""

    observation: str | None
    """Text shown to the model next (None when done and there is nothing to show)."""
    reward: float = 0.0
    """This turn's reward; the episode return is the sum over turns."""
    done: bool = False
    info: dict = field(default_factory=dict)
    """Free-form; the rollout reads "success" (bool), "tool_calls" (int) and "error" (str)."""


@runtime_checkable
class Env(Protocol):
    """One episode's state. A fresh instance is made per episode by the factory `load_env` returns."""

    def reset(self, row: Any, seed: int) -> str | list[dict]:
        """The first observation = the task prompt (text or chat messages) for dataset `row`
        (a `postrl.data.PromptRow`: `.prompt`, `.answer`, `.columns`); `seed` drives any
        randomness so episodes are reproducible."""
        ...

    def step(self, action: str) -> StepResult:
        """Apply the model's turn (its decoded text). An env may define `async def astep`
        instead (or as well); the rollout awaits `astep` when present."""
        ...

    # OPTIONAL: def state_key(self) -> str   (a hashable description of the state, for GiGPO)
    # OPTIONAL class attributes: max_turns: int, tools: list[str], system_prompt: str


def load_env(name: str, kwargs: dict | None = None) -> Callable[[], Env]:
    """A zero-argument factory making a fresh env per episode: `cls(**kwargs)`.

    `name` is a built-in (`ENVS`), `module:Class` or `path/to/file.py:Class`. Errors name the
    problem and the fix: an unknown name lists close matches, a class without `reset` and
    `step`/`astep` says which is missing, bad kwargs list the constructor's parameters.
    """
    kwargs = dict(kwargs or {})
    if name in ENVS:
        cls = ENVS[name]
    elif ":" in name:
        cls = load_attr(name, f"env {name!r}", kind=type)
    else:
        close = difflib.get_close_matches(name, ENVS.names(), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown env {name!r}{hint} built-in envs: {', '.join(ENVS.names()) or '(none)'}; "
                         "for your own class give 'module:Class' or 'path/to/file.py:Class'")
    check_env_class(cls, name)
    check_kwargs(cls, kwargs, f"env {name!r}")

    def make() -> Env:
        return cls(**kwargs)

    make.env_class = cls  # the trainer reads optional class attributes (max_turns, tools)
    return make


def check_env_class(cls: Any, name: str) -> None:
    """A clear error unless `cls` is a class with `reset` and `step` or `astep`."""
    if not isinstance(cls, type):
        raise TypeError(f"env {name!r} is a {type(cls).__name__}, not a class; give the env class "
                        "(with reset(row, seed) and step(action)), not an instance or function")
    missing = [m for m in ("reset",) if not callable(getattr(cls, m, None))]
    if not callable(getattr(cls, "step", None)) and not callable(getattr(cls, "astep", None)):
        missing.append("step (or async astep)")
    if missing:
        raise TypeError(f"env {name!r} ({cls.__qualname__}) has no {' and no '.join(missing)} method; "
                        "an env defines reset(row, seed) -> first observation and "
                        "step(action) -> StepResult (see docs/agents.md)")


