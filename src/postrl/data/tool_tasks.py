"""Built-in tool-use tasks: `task:calculator_problems` (RL prompts) and `task:tool_trajectories`
(expert multi-turn demonstrations for an SFT warm start of the tool environments).

Problems are a fixed sample (sampling seed 0, like arithmetic level 4) split by a stable hash of
the problem text, so train and test never share one. A trajectory is played through the real
environment (`postrl.envs`), so the tool results and the rendered prompts are exactly what the
rollout will show; it becomes one SFT row per assistant turn (prompt = the conversation so far,
completion = that turn), which puts the loss on assistant turns only.
"""

from __future__ import annotations

import functools
import random

from postrl.data.tasks import TASKS, _row, hash_fraction, select_split

KINDS = ("product", "sum")
EXTRA_KINDS = ("short_product",)
"""Kinds used only when asked for (`kinds: [short_product]`): the default stays KINDS."""
_PROBLEMS_PER_KIND = 10000


@functools.lru_cache(maxsize=None)
def _problems() -> tuple[tuple[str, str, str], ...]:
    """(kind, expression, answer) for every problem; cached (train and test share the list)."""
    rng = random.Random(0)
    out = []
    for kind in KINDS:
        seen: set[str] = set()
        while len(seen) < _PROBLEMS_PER_KIND:
            if kind == "product":  # 3-digit x 2-digit
                a, b = rng.randrange(100, 1000), rng.randrange(10, 100)
                expr, value = f"{a}*{b}", a * b
            else:  # three 2-3 digit operands
                terms = [rng.randrange(10, 1000) for _ in range(3)]
                expr, value = "+".join(map(str, terms)), sum(terms)
            if expr not in seen:
                seen.add(expr)
                out.append((kind, expr, str(value)))
    # short_product: every 2-digit x 2-digit product with a 4-digit value (6,610 problems). Fixed
    # lengths (5-character expression, 4-digit result) put the copy into the call and the copy of
    # the result into the answer at fixed offsets, which a tiny model learns in a few hundred SFT steps.
    out.extend(("short_product", f"{a}*{b}", str(a * b))
               for a in range(10, 100) for b in range(10, 100) if a * b >= 1000)
    return tuple(out)


@TASKS.register("calculator_problems", paper="built-in synthetic task",
                summary="'What is 482*37?': 3-digit x 2-digit products and 3-operand sums, for tool use")
def calculator_problems(split: str, *, kinds: list[str] | None = None, seed: int = 0, test_fraction: float = 0.1,
                        limit: int | None = None) -> list[dict]:
    """Arithmetic posed as "What is EXPR?", answer = the integer value (as a string).

    kinds: "product" (a*b, a in 100..999, b in 10..99) and "sum" (a+b+c, each in 10..999);
    10,000 problems of each, default both; or "short_product" (every a*b with a, b in 10..99 and
    a 4-digit value, 6,610 problems; only when named). Extra columns: `expression` (e.g. "482*37"), `kind`.
    """
    chosen = _check_kinds(kinds)
    rows = [_row(f"What is {expr}?", answer, expression=expr, kind=kind)
            for kind, expr, answer in _problems() if kind in chosen]
    return select_split(rows, split, seed=seed, test_fraction=test_fraction, limit=limit)


def _check_kinds(kinds: list[str] | None) -> list[str]:
    if kinds is None:
        return list(KINDS)
    unknown = sorted(set(kinds) - set(KINDS + EXTRA_KINDS))
    if unknown or not kinds:
        raise ValueError(f"unknown kinds {unknown or '(empty list)'}; valid kinds: {', '.join(KINDS + EXTRA_KINDS)}")
    return list(kinds)


@TASKS.register("tool_trajectories", paper="built-in synthetic task",
                summary="expert tool-use conversations from the calculator/python envs, one SFT row per "
                        "assistant turn; tool_use_rate < 1 leaves room for RL")
def tool_trajectories(split: str, *, env: str = "calculator", tool_use_rate: float = 0.5, describe_tools: bool = True,
                      repeats: int = 1, kinds: list[str] | None = None, seed: int = 0, test_fraction: float = 0.1,
                      limit: int | None = None) -> list[dict]:
    """SFT rows `{"prompt": messages, "completion": text}` from an expert playing env `env`.

    For each of `limit` problems of `task:calculator_problems` (split, kinds, seed as there), the
    expert calls the tool (`env.expert_call(row)`, the plain `<call>...</call>` format) with
    probability `tool_use_rate`, then answers with the tool's result: two rows, the call and
    the answer after the tool message. Otherwise it answers at once with the right number, as a
    model that does arithmetic in its head would have to: one row. A model imitating this
    answers directly about (1 - tool_use_rate) of the time and then is mostly wrong, so RL has
    room to raise success by calling the tool more. The system message holds the plain tool
    description (`tools.with_plain_tools`) unless `describe_tools` is false (the env's option of
    the same name: set both alike), as the rollout renders it for a template without tool
    support (the tiny model); for templates with `tools=` support the prompts would differ.
    `repeats` demonstrates each problem that many times, each time choosing tool or no tool
    afresh (so one problem gets both kinds of demonstration). Extra columns: `used_tool` (bool),
    `turn` (0 or 1).
    """
    from postrl.data.loading import PromptRow
    from postrl.envs import load_env
    from postrl.envs.tools import with_plain_tools

    if not 0.0 <= tool_use_rate <= 1.0 or repeats < 1:
        raise ValueError(f"tool_use_rate must be in [0, 1] and repeats >= 1, got {tool_use_rate} and {repeats}")
    make = load_env(env, {"describe_tools": describe_tools})
    if not callable(getattr(make.env_class, "expert_call", None)):
        raise ValueError(f"env {env!r} has no expert_call(row), so it cannot be demonstrated; "
                         "use env: calculator or python")
    out = []
    problems = calculator_problems(split, kinds=kinds, seed=seed, test_fraction=test_fraction, limit=limit)
    for i, (rec, k) in enumerate((rec, k) for rec in problems for k in range(repeats)):
        row = PromptRow(index=i, prompt=rec["prompt"], answer=rec["answer"], columns=rec)
        instance = make()
        messages = with_plain_tools(instance.reset(row, seed), instance.tools)
        if hash_fraction(f"{seed}:{rec['expression']}" + (f":{k}" if k else "")) >= tool_use_rate:
            out.append({"prompt": messages, "completion": rec["answer"], "used_tool": False, "turn": 0})
            continue
        call = instance.expert_call(row)
        result = instance.step(call)
        if result.done or result.info.get("tool_errors"):
            raise RuntimeError(f"env {env!r}: the expert call {call!r} failed: {result.observation}")
        out.append({"prompt": messages, "completion": call, "used_tool": True, "turn": 0})
        after = messages + [{"role": "assistant", "content": call},
                            {"role": instance.observation_role, "content": result.observation}]
        out.append({"prompt": after, "completion": result.observation.strip(), "used_tool": True, "turn": 1})
    return out
