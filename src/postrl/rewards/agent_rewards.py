"""Agent rewards that read the multi-turn rollout's tool-call counts (`metadata["tool_calls"]`).

A reward that needs "tool_calls" (rewards/registry.py) receives the number of tool calls of each
completion's episode as the keyword column `tool_calls`, aligned with `completions`.
"""

from __future__ import annotations

import math
from typing import Literal

from postrl.rewards.registry import REWARDS


def otc_tool_reward(m: int, n: int | None, *, c: float, variant: str) -> float:
    """r_tool for m calls when the group's optimal count is n (None: no correct episode to set it)."""
    if variant == "ppo" or n is None:
        return math.cos(m * math.pi / (2 * m + c))
    if m == 0 and n == 0:
        return 1.0
    if n == 0:
        return math.cos(m * math.pi / (2 * m + c))
    f = 2 * n * m / (m + n)
    return math.sin(f * math.pi / (2 * n))


@REWARDS.register("otc", paper="Acting Less is Reasoning More! Teaching Model to Act Efficiently (OTC-PO)",
                  arxiv="2504.14870", needs=("tool_calls",),
                  summary="correctness x tool efficiency: alpha * r_tool(m, n) * r_correct, peaking at the "
                  "fewest tool calls a correct answer to the prompt needed")
def otc(prompts: list, completions: list, *, correct_reward: str = "exact_match", variant: Literal["grpo", "ppo"] = "grpo",
        alpha: float = 1.0, c: float = 1.0, **kwargs) -> list[float | None]:
    """OTC-PO's tool-integrated reward (sec. 3): r = alpha * r_tool * r_phi(q, y).

        r_phi    = the `correct_reward` entry's value (default exact_match against `answer`)
        m        = tool calls of this completion,  n = fewest calls among the CORRECT completions of
                   the same prompt in this batch (the paper's hindsight optimum for OTC-GRPO)
        OTC-PPO  r_tool = cos(m pi / (2m + c))
        OTC-GRPO r_tool = 1 if m = n = 0;  cos(m pi / (2m + c)) if n = 0;  sin(f pi / (2n)) otherwise,
                 f(m, n) = 2nm / (m + n)            (r_tool = 1 exactly at m = n, less on either side)

    Multiplicative by design (the paper found an additive bonus unstable): a wrong answer gets 0
    whatever its tool use. Completions of one prompt are recognised by equal prompts, so the
    batch must hold the whole group (rollout.n >= 2 for the GRPO variant). The paper refines n
    across epochs toward a global minimum; a reward is stateless, so n is this batch's minimum.
    alpha = 1 and c = 1 are not confirmed from the paper's text. None where r_phi is None.
    """
    calls = kwargs.pop("tool_calls", None)
    if calls is None:
        raise ValueError("reward 'otc' needs the tool-call count of every completion (keyword `tool_calls`, "
                         "the multi-turn rollout's metadata['tool_calls']); use it with an `env` rollout")
    if len(calls) != len(completions):
        raise ValueError(f"reward 'otc': tool_calls has {len(calls)} values for {len(completions)} completions")
    if variant not in ("grpo", "ppo"):
        raise ValueError(f"reward 'otc': variant must be 'grpo' or 'ppo', got {variant!r}")
    correct = REWARDS[correct_reward](prompts, completions, **kwargs)
    best: dict[str, int] = {}
    for p, m, r in zip(prompts, calls, correct):
        if r is not None and r > 0:
            best[repr(p)] = min(best.get(repr(p), int(m)), int(m))
    out: list[float | None] = []
    for p, m, r in zip(prompts, calls, correct):
        if r is None:
            out.append(None)
            continue
        out.append(alpha * otc_tool_reward(int(m), best.get(repr(p)), c=c, variant=variant) * float(r))
    return out
