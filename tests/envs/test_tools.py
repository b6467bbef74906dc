"""The TOOLS registry: schemas from hints and docstrings, argument checks, running with a timeout,
and rendering for templates with and without tool support."""

import time
from typing import Literal

import pytest

from postrl.envs import calculator as calc_module  # noqa: F401  (registers calculator, python)
from postrl.envs.calculator import evaluate, format_number
from postrl.envs.tools import (TOOLS, ToolRegistry, call_tool, check_arguments, derive_schema, plain_tool_prompt,
                               render_chat, render_tools, template_uses_tools, tool_schemas)
from postrl.learner.tiny import CHAT_TEMPLATE, build_tokenizer


def _demo(count: int, name: str, scale: float = 1.0, mode: Literal["a", "b"] = "a", tags: list[str] | None = None):
    """Do a demo thing.

    Second paragraph is not the description.

    Args:
        count: how many times,
            over two lines.
        name (str): who.
        scale: a factor.
        mode: which mode.

    Returns:
        nothing.
    """


def test_schema_from_type_hints_and_docstring():
    description, params = derive_schema(_demo)
    assert description == "Do a demo thing."
    assert params == {
        "type": "object",
        "properties": {
            "count": {"type": "integer", "description": "how many times, over two lines."},
            "name": {"type": "string", "description": "who."},
            "scale": {"type": "number", "description": "a factor."},
            "mode": {"enum": ["a", "b"], "description": "which mode."},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["count", "name"],
    }


def test_schema_errors_name_the_parameter():
    def no_hint(x):
        """Doc."""

    def star(*xs: int):
        """Doc."""

    def bad_type(x: set):
        """Doc."""

    with pytest.raises(TypeError, match="parameter 'x' has no type hint"):
        derive_schema(no_hint)
    with pytest.raises(TypeError, match=r"\*args/\*\*kwargs"):
        derive_schema(star)
    with pytest.raises(TypeError, match="no JSON-schema form"):
        derive_schema(bad_type)


def test_registry_given_schema_duplicates_and_unknown_names():
    reg = ToolRegistry()
    given = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}

    @reg.register("lookup", description="Look up q.", parameters=given)
    def lookup(q):
        return q

    assert reg.get("lookup").schema() == {"type": "function", "function": {
        "name": "lookup", "description": "Look up q.", "parameters": given}}
    with pytest.raises(ValueError, match="already registered"):
        reg.register("lookup", parameters=given)(lambda q: q)
    with pytest.raises(KeyError, match="unknown tool 'lokup'; valid tools: lookup"):
        reg.get("lokup")
    with pytest.raises(ValueError, match="must be an identifier"):
        reg.register("bad name", parameters=given)(lambda q: q)


def test_check_arguments_messages():
    tool = TOOLS.get("calculator")
    assert check_arguments(tool, {"expression": "1"}) is None
    assert check_arguments(tool, {"expression": True}) == \
        "tool 'calculator' argument 'expression': must be a string, got bool True"
    assert "missing argument(s) 'expression'" in check_arguments(tool, {})


def test_calculator_is_safe_and_exact():
    assert evaluate("482*37") == 17834 and evaluate("(12+7)*3") == 57 and evaluate("2^10") == 1024
    assert format_number(evaluate("96/4")) == "24" and format_number(evaluate("1/3")) == "0.3333333333"
    for bad, why in [("__import__('os')", "only numbers"), ("1/0", "division by zero"), ("9**9**9", "too large"),
                     ("1+", "cannot parse"), ("x" * 201, "longer than 200"), ("(-8)**0.5", "not a real")]:
        with pytest.raises(ValueError, match=why):
            evaluate(bad)


def test_call_tool_turns_failures_into_error_text():
    assert call_tool("calculator", {"expression": "482*37"}).text == "17834"
    r = call_tool("calculator", {"expression": "1/0"})
    assert r.error and r.text == "error: ValueError: division by zero"
    assert call_tool("nope", {}).text.startswith("error: unknown tool 'nope'")
    assert call_tool("calculator", {"expr": "1"}).error


def test_call_tool_times_out():
    if "e2_test_sleep" not in TOOLS:
        @TOOLS.register("e2_test_sleep")
        def e2_test_sleep(seconds: float) -> str:
            """Sleep (a test tool)."""
            time.sleep(seconds)
            return "woke"

    t0 = time.perf_counter()
    r = call_tool("e2_test_sleep", {"seconds": 2.0}, timeout_s=0.1)
    assert r.error and r.text == "error: tool 'e2_test_sleep' timed out after 0.1 s"
    assert time.perf_counter() - t0 < 1.0
    assert call_tool("e2_test_sleep", {"seconds": 0.0}, timeout_s=2.0).text == "woke"


def test_long_results_are_cut():
    r = call_tool("calculator", {"expression": "10**90"}, max_chars=10)
    assert r.text == "1000000000... [cut: 91 characters]"


TOOLS_TEMPLATE = ("{% if tools %}{{ '<|system|>' }}{% for t in tools %}{{ t['function']['name'] }};{% endfor %}"
                  "{% endif %}" + CHAT_TEMPLATE)


def test_render_without_template_tool_support_uses_the_plain_format():
    tok = build_tokenizer()  # the tiny template ignores tools=
    assert not template_uses_tools(tok)
    assert render_tools(tok, ["calculator"]) == plain_tool_prompt(["calculator"])
    assert plain_tool_prompt(["calculator"]) == (
        "Tools:\n- calculator(expression: string): Evaluate arithmetic: numbers, + - * / // % ** and parentheses.\n"
        "Call a tool as <call>NAME(ARGUMENT=VALUE, ...)</call> with Python literals, e.g. "
        "<call>calculator(expression=...)</call>; its result comes back. Answer without a call when done.")
    text = render_chat(tok, [{"role": "user", "content": "What is 1+2?"}], ["calculator"])
    assert text == f"<|system|>{plain_tool_prompt(['calculator'])}<|user|>What is 1+2?<|assistant|>"
    # an existing system message keeps its text first
    text = render_chat(tok, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}],
                       ["calculator"])
    assert text.startswith("<|system|>Be brief.\nTools:\n- calculator(")
    assert render_chat(tok, [{"role": "user", "content": "Q"}], []) == "<|user|>Q<|assistant|>"


def test_render_with_template_tool_support_passes_schemas():
    tok = build_tokenizer()
    tok.chat_template = TOOLS_TEMPLATE
    assert template_uses_tools(tok)
    assert render_tools(tok, ["calculator", "python"]) is None
    text = render_chat(tok, [{"role": "user", "content": "Q"}], ["calculator", "python"])
    assert text == "<|system|>calculator;python;<|user|>Q<|assistant|>"
    assert [s["function"]["name"] for s in tool_schemas(["python"])] == ["python"]
