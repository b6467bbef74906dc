"""Built-in reward functions, registered in `REWARDS`.

Every function has TRL's signature, `fn(prompts, completions, **kwargs) -> list[float | None]`:
`kwargs` holds `completion_ids`, every extra dataset column as a list aligned with the batch
(`answer`, `numbers`, `target`, ...) and the reward's hyper-parameters, which are keyword-only
with defaults. Completions are strings (plain datasets) or message lists (conversational);
`completion_text` reads either. None means "not applicable to this sample".
"""

from __future__ import annotations

import ast
import functools
import logging
import math
import re
from collections import Counter
from fractions import Fraction
from typing import Any, Literal

from postrl.rewards.registry import REWARDS


def completion_text(c: Any) -> str:
    """The text of one completion: a string, a message dict, or a list of messages.

    For a message list the last assistant message counts (an agent's final answer comes after
    its tool calls); content given as parts (`[{"type": "text", "text": ...}]`) is joined.
    """
    if isinstance(c, str):
        return c
    if isinstance(c, dict):
        return _content_text(c.get("content"))
    if isinstance(c, (list, tuple)):
        messages = [m for m in c if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role") == "assistant"] or messages
        return _content_text(assistant[-1].get("content")) if assistant else ""
    raise TypeError(f"a completion must be a string or a list of messages, got {type(c).__name__}")


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def _as_float(s: str) -> float | None:
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------------- exact match
@REWARDS.register("exact_match", paper="(standard practice)",
                  summary="1 if the completion equals the reference answer (numerically if both parse)")
def exact_match(prompts: list, completions: list, answer: list, *, strip: bool = True,
                numeric: bool = True, **kwargs) -> list[float | None]:
    """Binary exact match against the `answer` column.

        r = 1  if text == str(answer)   (both stripped when strip=True)
            1  if numeric=True and float(text) == float(answer)   ("46" == "46.0")
            0  otherwise;   None when the answer is None.

    The whole completion must be the answer: pair with an extracting reward (math_verify,
    format) when the model writes reasoning before it.
    """
    out: list[float | None] = []
    for c, gold in zip(completions, answer):
        if gold is None:
            out.append(None)
            continue
        text, ref = completion_text(c), str(gold)
        if strip:
            text, ref = text.strip(), ref.strip()
        if text == ref:
            out.append(1.0)
            continue
        a, b = (_as_float(text), _as_float(ref)) if numeric else (None, None)
        out.append(1.0 if a is not None and b is not None and a == b else 0.0)
    return out


# ----------------------------------------------------------------------------------- math_verify
class _DropTimeoutWarning(logging.Filter):
    """math_verify warns once that its timeout is off; we turn it off on purpose (see below)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutWarning())


@REWARDS.register("math_verify", paper="Math-Verify (Hugging Face)",
                  summary="1 if the completion's final answer is mathematically equal to the reference")
def math_verify(prompts: list, completions: list, answer: list, **kwargs) -> list[float | None]:
    """Symbolic answer check with the `math_verify` package.

        r = 1  if verify(parse(answer), parse(completion))   else 0;   None when answer is None.

    parse() extracts the last boxed / LaTeX / plain expression, so `\\boxed{42}` equals `42` and
    `\\frac{1}{2}` equals `0.5`. A bare gold answer that parses to nothing is retried as `$gold$`.
    math_verify's timeouts use SIGALRM, which only works in the main thread, so they are off
    (`parsing_timeout=None`, `timeout_seconds=None`) and rewards can run in worker threads; the
    cost is that a pathological expression is not interrupted here. Any exception gives 0.
    """
    from math_verify import parse, verify  # imports sympy (~3 s): only when this reward is used

    def parse_gold(gold: str):
        parsed = parse(gold, parsing_timeout=None)
        return parsed or parse(f"${gold}$", parsing_timeout=None)

    gold_cache: dict[str, Any] = {}  # a group of n completions shares one answer: parse it once
    out: list[float | None] = []
    for c, gold in zip(completions, answer):
        if gold is None:
            out.append(None)
            continue
        try:
            key = str(gold)
            if key not in gold_cache:
                gold_cache[key] = parse_gold(key)
            pred = parse(completion_text(c), parsing_timeout=None)
            ok = bool(gold_cache[key]) and bool(pred) and verify(gold_cache[key], pred, timeout_seconds=None)
        except Exception:  # a verifier crash on model output is a wrong answer, not a failed step
            ok = False
        out.append(1.0 if ok else 0.0)
    return out


# ---------------------------------------------------------------------------------------- format
@functools.lru_cache(maxsize=64)
def _compile(pattern: str) -> re.Pattern:
    return re.compile(pattern)


@REWARDS.register("format", paper="DeepSeek-R1: Incentivizing Reasoning Capability in LLMs via "
                  "Reinforcement Learning", arxiv="2501.12948",
                  summary="1 if the completion matches a regex (default: contains \\boxed{...})")
def format_reward(prompts: list, completions: list, *, pattern: str = r"(?s).*\\boxed\{.+\}.*",
                  mode: Literal["search", "fullmatch"] = "search", **kwargs) -> list[float | None]:
    """Rule-based format reward (sec. 2.2.2: the model must follow the required output format).

        r = 1  if re.<mode>(pattern, text)   else 0

    mode=search: the pattern may match anywhere; mode=fullmatch: the whole completion must
    match (e.g. `(?s)<think>.*</think>\\s*<answer>.*</answer>`).
    """
    if mode not in ("search", "fullmatch"):
        raise ValueError(f"format reward: mode must be 'search' or 'fullmatch', got {mode!r}")
    match = getattr(_compile(pattern), mode)
    return [1.0 if match(completion_text(c)) else 0.0 for c in completions]


# -------------------------------------------------------------------------------- length penalty
@REWARDS.register("length_penalty", paper="(standard practice)",
                  summary="-scale * max(0, length - target_tokens) / max_tokens")
def length_penalty(prompts: list, completions: list, completion_ids: list | None = None, *,
                   target_tokens: int | None = None, max_tokens: int = 256, scale: float = 1.0,
                   **kwargs) -> list[float | None]:
    """Linear penalty on length beyond a target.

        r = -scale * max(0, len - target_tokens) / max_tokens

    len is the number of completion tokens (`completion_ids`), or of characters when no token
    ids are given. target_tokens=None means 0: every token is penalised. With the default
    max_tokens (the default rollout.max_new_tokens) r lies in [-scale, 0].
    """
    if max_tokens <= 0:
        raise ValueError(f"length_penalty: max_tokens must be positive, got {max_tokens}")
    target = target_tokens or 0
    lengths = ([len(ids) for ids in completion_ids] if completion_ids is not None
               else [len(completion_text(c)) for c in completions])
    return [-scale * max(0, n - target) / max_tokens for n in lengths]


# ------------------------------------------------------------------------------- overlong penalty
@REWARDS.register("overlong_penalty", paper="DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
                  arxiv="2503.14476", summary="soft overlong punishment: 0, then linear down to -1 over the last "
                  "cache_tokens before max_tokens", needs=("max_new_tokens",))
def overlong_penalty(prompts: list, completions: list, completion_ids: list | None = None, *,
                     max_tokens: int | None = None, cache_tokens: int | None = None, penalty: float = 1.0,
                     **kwargs) -> list[float | None]:
    """DAPO's soft overlong punishment (eq. 13), added to the task reward.

        L_exp = L_max - L_cache
        R(y)  = 0                          |y| <= L_exp
                (L_exp - |y|) / L_cache    L_exp < |y| <= L_max
                -1                         |y| > L_max
        r     = penalty * R(y)

    |y| counts completion tokens (`completion_ids`). L_max is `max_tokens`; the registry entry
    needs "max_new_tokens", so when unset the config fills it with rollout.max_new_tokens (a
    completion then never exceeds L_max, and a truncated one gets exactly -penalty). L_cache is
    `cache_tokens`, default max(1, L_max // 5): the paper's 4096 of 20480. `penalty` is verl's
    `overlong_buffer.penalty_factor` (1.0 in the paper). cache_tokens = 0 keeps only the -1
    regime.
    """
    if max_tokens is None:
        raise ValueError("overlong_penalty: max_tokens (L_max) is not set; set it in rewards[].kwargs to "
                         "rollout.max_new_tokens (a config fills it automatically)")
    if completion_ids is None:
        raise ValueError("overlong_penalty counts completion tokens and needs completion_ids")
    cache = max(1, max_tokens // 5) if cache_tokens is None else cache_tokens
    if max_tokens < 1 or not 0 <= cache <= max_tokens:
        raise ValueError(f"overlong_penalty: need max_tokens >= 1 and 0 <= cache_tokens <= max_tokens, "
                         f"got max_tokens={max_tokens}, cache_tokens={cache}")
    expected = max_tokens - cache
    out: list[float | None] = []
    for ids in completion_ids:
        n = len(ids)
        if n <= expected:
            r = 0.0
        elif n <= max_tokens:
            r = (expected - n) / cache
        else:
            r = -1.0
        out.append(penalty * r)
    return out


# ------------------------------------------------------------------------------------- countdown
_EXPRESSION_CHARS = re.compile(r"[\d+\-*/()\s]+")
_ANSWER_TAG = re.compile(r"(?s)<answer>(.*?)</answer>")
_MAX_EXPRESSION_CHARS = 512  # a real solution is short; bounds the parser's work on junk


def _evaluate(node: ast.AST, used: list[int]) -> Fraction:
    """Exact value of an expression of integers, + - * / and unary minus; anything else raises."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, used)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand, used)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        left, right = _evaluate(node.left, used), _evaluate(node.right, used)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        return left / right  # ZeroDivisionError is caught by the caller
    raise ValueError(f"not allowed in a countdown expression: {type(node).__name__}")


@REWARDS.register("countdown", paper="TinyZero: Countdown task (Jiayi Pan et al.)",
                  summary="1 if the expression uses each number once and equals the target")
def countdown(prompts: list, completions: list, numbers: list, target: list, **kwargs) -> list[float | None]:
    """Countdown: combine the given numbers with + - * / to reach the target.

        r = 1  if multiset(literals in expr) == multiset(numbers) and |value(expr) - target| < 1e-6
            0  otherwise

    The expression is the last `<answer>...</answer>` if present, else the whole completion. It
    may contain only digits, + - * /, parentheses and spaces, and is evaluated exactly (Fraction)
    by walking its `ast`; it is never passed to eval. Division by zero and any other
    malformed input give 0.
    """
    out: list[float | None] = []
    for c, nums, goal in zip(completions, numbers, target):
        text = completion_text(c)
        tags = _ANSWER_TAG.findall(text)
        expr = (tags[-1] if tags else text).strip()
        ok = False
        if 0 < len(expr) <= _MAX_EXPRESSION_CHARS and _EXPRESSION_CHARS.fullmatch(expr):
            try:
                used: list[int] = []
                value = _evaluate(ast.parse(expr, mode="eval"), used)
                ok = (Counter(used) == Counter(int(n) for n in nums)
                      and math.isfinite(float(goal)) and abs(float(value - Fraction(goal))) < 1e-6)
            except (SyntaxError, ValueError, ZeroDivisionError, RecursionError, TypeError, OverflowError):
                ok = False
        out.append(1.0 if ok else 0.0)
    return out
