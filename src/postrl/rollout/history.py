"""History policies: the token context the policy sees at each turn of a `per_turn` episode.

`HISTORIES` maps a name to `fn(h: HistoryInput, **hparams) -> list[int]`: the prompt ids of the
next turn, built from the exact tokens of earlier turns (so nothing is re-tokenised). The list may
carry `.alt_ids` (a second context, e.g. HCPO's compressed branch: per_turn rows then get
`metadata["alt_prompt_ids"]`) and `.info` (a dict merged into the row's metadata). The
`concat` layout always trains on the full history; `per_turn` rows use `env.history` with
`env.history_kwargs` (and `env.history_k` as `k` for policies that take one). Other policies (HCPO's sampled windows and compressed histories)
register here and can use `h.rng` (seeded by (seed, episode, turn)) and `h.renderer` to insert
text as a new message.

`needs` words of a HISTORIES entry: "alt_context" = it returns the second context (`.alt_ids`)
that losses needing "alt_context" train on (config checks pair the two). HCPO's policies live in
`rollout/history_hcpo.py`, imported at the end of this module so the registry is always complete.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from postrl.registry import Registry

HISTORIES = Registry("history policy")


@dataclass
class TurnRecord:
    """One finished turn of an episode."""

    context_ids: list[int]
    """The prompt the policy saw at this turn (per the history policy)."""
    action_ids: list[int]
    """Exactly the sampled tokens (including an EOS / stop token)."""
    action_logps: list[float]
    action_text: str
    observation: str | None = None
    """The env's observation after this action (None when the episode ended here)."""
    observation_ids: list[int] = field(default_factory=list)
    """Tokens appended after the action (closing + new message + generation prompt); [] at the end."""
    reward: float = 0.0
    state_key: str = ""
    """The env's state_key() BEFORE this turn ("" when it has none)."""
    tool_calls: int = 0
    info: dict = field(default_factory=dict)
    alt_context_ids: list[int] | None = None
    """A second context from the history policy (HCPO's compressed branch), else None."""
    history_info: dict = field(default_factory=dict)
    """Per-row metadata from the history policy (e.g. HCPO's history_len)."""
    token_entropy: list[float] | None = None
    """Entropy of each action token's sampling distribution, when the rollout asked the engine (ARPO)."""


@dataclass
class HistoryInput:
    prompt_ids: list[int]
    """The first observation (the task), ending with the generation prompt."""
    turns: list[TurnRecord]
    """Finished turns so far (the last one's observation_ids end with the generation prompt)."""
    rng: random.Random
    renderer: Any
    """The episode's `ChatRenderer`: `first_ids(messages)` renders a whole message list (with the
    generation prompt), `message_ids(role, text)` the ids of one more message after a closed turn."""
    progress: float = 0.0
    """Training progress in [0, 1] (step / steps) when the caller knows it, else 0."""
    messages: list[dict] = field(default_factory=list)
    """The conversation so far as chat messages (first observation, then assistant / observation
    messages): for policies that rebuild the context from messages (a context is a prompt, never
    trained on, so re-rendering it is allowed; only the actions must be the sampled tokens)."""


@HISTORIES.register("full", paper="(standard: the whole interaction history in the context)",
                    summary="prompt + every (action, observation) so far: the concat layout's context")
def full_history(h: HistoryInput) -> list[int]:
    """context_t = prompt + a_1 + o_1 + ... + a_{t-1} + o_{t-1}"""
    out = list(h.prompt_ids)
    for t in h.turns:
        out += t.action_ids + t.observation_ids
    return out


@HISTORIES.register("last_k", paper="Group-in-Group Policy Optimization for LLM Agent Training", arxiv="2505.10978",
                    summary="the task + the last k (action, observation) turns (a bounded memory window)")
def last_k_history(h: HistoryInput, *, k: int = 2) -> list[int]:
    """context_t = prompt + a_{t-k} + o_{t-k} + ... + a_{t-1} + o_{t-1}

    The first observation (the task) is always kept; k >= 1. GiGPO's agents see a window of the
    recent steps (verl-agent's history length); k=2 is our default (not confirmed in the paper).
    """
    if k < 1:
        raise ValueError(f"history last_k needs k >= 1, got {k}")
    out = list(h.prompt_ids)
    for t in h.turns[-k:]:
        out += t.action_ids + t.observation_ids
    return out


from postrl.rollout import history_hcpo  # noqa: E402,F401  (registers "hcpo"; it imports HISTORIES from here)
