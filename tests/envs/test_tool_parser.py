"""parse_tool_calls: both formats, every kind of malformed call, and never an exception."""

import pytest
from hypothesis import given, settings, strategies as st

from postrl.envs import calculator, python_tool  # noqa: F401  (registers the tools)
from postrl.envs.tool_parser import ToolCall, has_call_tag, parse_tool_calls
from postrl.envs.tools import TOOLS


def test_plain_call_positional_and_keyword():
    assert parse_tool_calls('<call>calculator("482*37")</call>') == [
        ToolCall("calculator", {"expression": "482*37"}, raw='<call>calculator("482*37")</call>')]
    (call,) = parse_tool_calls('I will compute. <call>calculator(expression="1+2")</call>')
    assert call.ok and call.arguments == {"expression": "1+2"}


def test_hermes_json_call_and_variants():
    text = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "3*4"}}\n</tool_call>'
    (call,) = parse_tool_calls(text)
    assert call.ok and call.name == "calculator" and call.arguments == {"expression": "3*4"}
    # arguments as a JSON string, "parameters" instead of "arguments", a list of calls
    (a,) = parse_tool_calls('<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"1\\"}"}</tool_call>')
    (b,) = parse_tool_calls('<tool_call>{"name": "calculator", "parameters": {"expression": "1"}}</tool_call>')
    assert a.ok and b.ok and a.arguments == b.arguments == {"expression": "1"}
    two = parse_tool_calls('<tool_call>[{"name": "calculator", "arguments": {"expression": "1"}}, '
                           '{"name": "python", "arguments": {"code": "print(1)"}}]</tool_call>')
    assert [c.name for c in two] == ["calculator", "python"] and all(c.ok for c in two)


def test_no_tag_is_a_final_answer():
    assert parse_tool_calls("The answer is 17834.") == []
    assert not has_call_tag("17834") and has_call_tag("x</call>")


MALFORMED = [
    ('<tool_call>{"name": "calculator", "arguments": {"expression": "1"}</tool_call>', "not valid JSON"),
    ("<tool_call>[1, 2]</tool_call>", "must be a JSON object"),
    ('<tool_call>{"arguments": {"expression": "1"}}</tool_call>', 'no "name"'),
    ('<tool_call>{"name": "calculator", "arguments": [1]}</tool_call>', "must be a JSON object"),
    ('<tool_call>{"name": "calculator", "arguments": "not json"}</tool_call>', "not a JSON object"),
    ('<tool_call>{"name": "no_such_tool", "arguments": {}}</tool_call>', "unknown tool 'no_such_tool'"),
    ('<tool_call>{"name": "calculator", "arguments": {}}</tool_call>', "missing argument(s) 'expression'"),
    ('<tool_call>{"name": "calculator", "arguments": {"expression": 12}}</tool_call>', "must be a string"),
    ('<tool_call>{"name": "calculator", "arguments": {"expression": "1", "x": 2}}</tool_call>', "takes no argument(s) 'x'"),
    ('<tool_call>{"name": "calculator"', "never closed"),
    ("<call>calculator(482*37)</call>", "must be a literal"),
    ('<call>calculator("1", "2")</call>', "takes 1 argument(s)"),
    ('<call>calculator("1", expression="2")</call>', "given twice"),
    ("<call>calculator(*xs)</call>", "*args and **kwargs"),
    ("<call>calculator(</call>", "not a Python call"),
    ('<call>"482*37"</call>', "must be NAME(...)"),
    ('<call>os.system("ls")</call>', "must be NAME(...)"),
    ('<call>calc("1")</call>', "unknown tool 'calc'"),
    ('<call>calculator("1")', "<call> is never closed"),
    ("the answer </tool_call>", "without an opening <tool_call>"),
]


@pytest.mark.parametrize("text, message", MALFORMED)
def test_malformed_calls_become_readable_errors(text, message):
    calls = parse_tool_calls(text)
    assert calls, "a malformed call must not be taken for a final answer"
    assert not calls[-1].ok and message in calls[-1].error


def test_tools_argument_restricts_the_allowed_tools():
    (call,) = parse_tool_calls('<call>python("print(1)")</call>', tools=["calculator"])
    assert call.error == "unknown tool 'python'; available tools: calculator"


def test_too_many_calls_are_cut_with_one_error():
    text = "".join(f'<call>calculator("{i}")</call>' for i in range(5))
    calls = parse_tool_calls(text, max_calls=2)
    assert [c.ok for c in calls] == [True, True, False]
    assert calls[-1].error == "too many tool calls in one turn: 3 more than the 2 allowed were not run"


def test_good_calls_around_a_bad_one_are_kept():
    calls = parse_tool_calls('<call>calculator("1")</call> <call>nope(</call> <call>calculator("2")</call>')
    assert [c.ok for c in calls] == [True, False, True]


def test_pathological_nesting_does_not_raise():
    deep = "<tool_call>" + "[" * 100_000 + "</tool_call>"
    assert not parse_tool_calls(deep)[0].ok
    assert not parse_tool_calls("<call>calculator(" + "(" * 50_000 + '"1"' + ")" * 50_000 + ")</call>")[0].ok


_pieces = st.sampled_from(["<call>", "</call>", "<tool_call>", "</tool_call>", "calculator", "python", "(", ")",
                           '"', "{", "}", "[", "]", ":", ",", '"name"', '"arguments"', '"expression"', "=",
                           "1+2", "\\", "\n", " ", "expression", "None", "*", "**"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_pieces, max_size=30).map("".join) | st.text(max_size=200))
def test_parser_never_raises_on_arbitrary_text(text):
    for call in parse_tool_calls(text, max_calls=3):
        assert isinstance(call, ToolCall)
        assert call.ok == (call.error is None)
        if call.ok:
            assert call.name in TOOLS and isinstance(call.arguments, dict)
    assert len(parse_tool_calls(text, max_calls=3)) <= 4
