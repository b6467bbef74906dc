"""CLPO's problem rewriters: a question and its answer in, a simplified or diversified question out.

    make_rewriter(spec, ...) -> rewrite(questions, answers, kinds, variants, seed) -> [str | None]

kind is "simplify" (a hard problem made easier) or "diversify" (a medium problem reworded);
`variants[j]` counts the earlier rewrites of the same row (a rule-based rewriter rotates its forms
with it), `seed` seeds a sampling rewriter. None: no usable rewrite. Every rewrite must keep the
original's answer: the rewards score it against the row's own answer column.

    "policy"           the policy itself, prompted with `SIMPLIFY_TEMPLATE` / `DIVERSIFY_TEMPLATE`
                       (the paper's mechanism); its output is cut out of a ```text block
    "arithmetic"       rules for task:arithmetic ("a+b=", "a-b=", "a*b="), a stand-in for the policy
                       rewriter on the embedded tiny model, which cannot paraphrase
    "module:function"  a user function (question, answer, kind) -> str | None, e.g. an API model
"""

from __future__ import annotations

import inspect
import re
from typing import Callable

from postrl.user_code import load_attr

KINDS = ("simplify", "diversify")

SIMPLIFY_TEMPLATE = (
    "Rewrite the problem below so that it is simpler, clearer and more direct, while keeping exactly the "
    "same task, constraints, solution method and correct answer ({answer}). Remove redundant wording, break "
    "long sentences into short ones and state implicit constraints explicitly; add no background or new "
    "context. Do not solve the problem, and do not reveal or hint at the answer.\n"
    "Output only the rewritten problem, inside one ```text code block.\n\n"
    "Problem:\n{question}\n")
"""The hard-problem instruction, condensed from the authors' code (csuking/CLPO, `rewrite_instr_hard`):
their prompt also carries a one-shot example and their Qwen3 answer-format wrapper."""

DIVERSIFY_TEMPLATE = (
    "Rewrite the problem below as a differently worded but equivalent problem, keeping exactly the same "
    "task, constraints, mathematical content and correct answer ({answer}). Rephrase clauses, rearrange the "
    "sentence structure and use synonyms; add or remove no constraint, context or instruction. Do not solve "
    "the problem, and do not reveal or hint at the answer.\n"
    "Output only the rewritten problem, inside one ```text code block.\n\n"
    "Problem:\n{question}\n")
"""The medium-problem instruction, condensed from the authors' `rewrite_instr_med` in the same way."""

MIN_CHARS, MAX_CHARS = 11, 1999
"""A policy rewrite is kept only with 10 < len < 2000 characters (the authors' sanity check)."""

ARITHMETIC = re.compile(r"(\d+)([+*-])(\d+)=")
WORDS = {"+": "plus", "-": "minus", "*": "times"}


def make_rewriter(spec: str, *, generate=None, simplify_template: str = SIMPLIFY_TEMPLATE,
                  diversify_template: str = DIVERSIFY_TEMPLATE, max_new_tokens: int = 400,
                  temperature: float = 0.7) -> Callable[..., list[str | None]]:
    """The rewriter `spec` names (see the module docstring)."""
    if spec == "policy":
        if generate is None:
            raise ValueError("clpo: sampler.kwargs.rewriter='policy' samples rewrites from the policy, which needs "
                             "the trainer's generate callable (postrl train passes it; build the sampler with "
                             "postrl.samplers.build_sampler(..., generate=...))")
        templates = {"simplify": simplify_template, "diversify": diversify_template}

        def policy(questions, answers, kinds, variants, seed):
            prompts = [templates[k].format(question=q, answer=a) for q, a, k in zip(questions, answers, kinds)]
            outputs = generate(prompts, seed, False, max_new_tokens=max_new_tokens, temperature=temperature)
            return [extract_rewrite(out) for out in outputs]

        return policy
    if spec == "arithmetic":
        return lambda questions, answers, kinds, variants, seed: [
            arithmetic_rewrite(q, k, v) for q, k, v in zip(questions, kinds, variants)]
    if ":" not in spec:
        raise ValueError(f"clpo: sampler.kwargs.rewriter={spec!r} is not a rewriter; use 'policy', 'arithmetic' "
                         "or 'module:function' (a function (question, answer, kind) -> str | None)")
    return user_rewriter(spec)


def user_rewriter(spec: str) -> Callable[..., list[str | None]]:
    """A user function (question, answer, kind) -> str | None, called once per problem."""
    what = f"clpo: sampler.kwargs.rewriter={spec!r}"
    fn = load_attr(spec, what)
    if not callable(fn):
        raise ValueError(f"{what} is not callable")
    try:
        inspect.signature(fn).bind("question", "answer", "simplify")
    except TypeError as e:
        raise ValueError(f"{what} must take (question, answer, kind) positionally: {e}") from None
    except ValueError:  # a builtin without a readable signature: trust it
        pass

    def user(questions, answers, kinds, variants, seed):
        out = []
        for q, a, k in zip(questions, answers, kinds):
            text = fn(q, a, k)
            if text is not None and not isinstance(text, str):
                raise TypeError(f"{what} returned {type(text).__name__} for a {k} rewrite; it must return the "
                                "rewritten question (str) or None")
            out.append(text)
        return out

    return user


def extract_rewrite(output: str) -> str | None:
    """The rewritten question in a policy's output: the inside of its first ```text block, else of its first
    ``` block, else the whole output (the authors' fallbacks); None unless 10 < length < 2000."""
    if "```text" in output:
        text = output.split("```text", 1)[1].split("```", 1)[0]
    elif "```" in output:
        text = output.split("```", 2)[1]
    else:
        text = output
    text = text.strip()
    return text if MIN_CHARS <= len(text) <= MAX_CHARS else None


def arithmetic_rewrite(question: str, kind: str, variant: int) -> str | None:
    """A `task:arithmetic` problem ("a+b=", "a-b=", "a*b=") diversified (form number `variant`, cycling)
    or simplified; None when the problem is not of that form or cannot be simplified."""
    m = ARITHMETIC.fullmatch(question)
    if m is None:
        return None
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    if kind == "diversify":
        forms = arithmetic_forms(a, op, b)
        return forms[variant % len(forms)]
    return arithmetic_simplified(a, op, b)


def arithmetic_forms(a: int, op: str, b: int) -> list[str]:
    """Equivalent forms of a op b: the operands swapped (for -: -b+a), spaced out, the operator as a word."""
    swapped = f"-{b}+{a}=" if op == "-" else f"{b}{op}{a}="
    forms = [swapped] if swapped != f"{a}{op}{b}=" else []
    return forms + [f"{a} {op} {b} =", f"{a} {WORDS[op]} {b} ="]


def arithmetic_simplified(a: int, op: str, b: int) -> str | None:
    """a op b with part of the work done: the tens (and hundreds) of one operand already combined, so one
    digit remains to add or subtract (a product becomes a sum of two partial products):

        a+b = (a + b - d) + d        a-b = (a - b + d) - d  or  (a - e - b) + e        a*b = a(b - d) + ad
        with d = b mod 10 (b >= 10), e = a mod 10 (a >= 10)      e.g. 12+34= -> 42+4=, 7*38= -> 210+56=

    The second operand is split when it has more digits and a non-zero ones digit, else the first. No
    term of the result is 0 (the other term would be the answer): a split that makes one is not used.
    None: no split is left (one-digit operands, operands ending in 0, a product with a zero factor)."""
    d, e = b % 10, a % 10
    split_b, split_a = b >= 10 and d > 0, a >= 10 and e > 0
    if op == "+":  # (usable, first term, sign, second term) of splitting b, then a
        splits = [(split_b, a + b - d, "+", d), (split_a, a - e + b, "+", e)]
    elif op == "-":
        splits = [(split_b, a - b + d, "-", d), (split_a, a - e - b, "+", e)]
    else:
        splits = [(split_b, a * (b - d), "+", a * d), (split_a, (a - e) * b, "+", e * b)]
    return next((f"{x}{sign}{y}=" for ok, x, sign, y in splits if ok and x != 0 and y != 0), None)
