"""Parsing tool calls out of a model's turn; a malformed call becomes an error, never an exception.

Two formats are accepted anywhere in the text, in the order they appear:
  Hermes / Qwen   <tool_call>{"name": "calculator", "arguments": {"expression": "12*34"}}</tool_call>
                  ("parameters" is accepted for "arguments", arguments may be a JSON-encoded
                  string, and the body may be a JSON list of such objects)
  plain           <call>calculator(expression="12*34")</call>   (or positional: calculator("12*34"))
                  a Python call whose arguments are literals; positional arguments follow the
                  order of the tool's parameters.
Every problem (invalid JSON or syntax, a missing closing tag, an unknown tool, a missing, extra or
mistyped argument, more than `max_calls` calls) is a `ToolCall` with `error` set to a message the
model can read and act on. A turn without any call tag is a final answer (an empty list).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field

from postrl.envs.tools import TOOLS, check_arguments

_OPEN = re.compile(r"<(tool_call|call)>")
_STRAY_CLOSE = re.compile(r"</(tool_call|call)>")
JSON_USAGE = '<tool_call>{"name": NAME, "arguments": {ARGUMENT: VALUE, ...}}</tool_call>'
PLAIN_USAGE = "<call>NAME(ARGUMENT=VALUE, ...)</call>"


@dataclass(frozen=True)
class ToolCall:
    """One call found in the text: a tool name and its arguments, or an `error` to show the model."""

    name: str | None
    arguments: dict = field(default_factory=dict)
    error: str | None = None
    raw: str = ""
    """The text of the call (between and including its tags), for logs."""

    @property
    def ok(self) -> bool:
        return self.error is None


def has_call_tag(text: str) -> bool:
    """True if `text` contains an opening or closing call tag (so it is not a final answer)."""
    return bool(_OPEN.search(text) or _STRAY_CLOSE.search(text))


def parse_tool_calls(text: str, *, tools: list[str] | None = None, max_calls: int = 4) -> list[ToolCall]:
    """Every call in `text`, checked against `tools` (default: all registered tools).

    At most `max_calls` calls are kept; more add one error call saying so. Never raises.
    """
    try:
        return _parse(str(text), tools, max_calls)
    except Exception as e:  # a bug or a pathological input must not end the episode
        return [ToolCall(None, error=f"could not read the tool call ({type(e).__name__}); "
                                     f"write {PLAIN_USAGE} or {JSON_USAGE}")]


def _parse(text: str, tools: list[str] | None, max_calls: int) -> list[ToolCall]:
    allowed = TOOLS.names() if tools is None else list(tools)
    calls: list[ToolCall] = []
    pos = 0
    while (m := _OPEN.search(text, pos)) is not None:
        tag = m.group(1)
        close = f"</{tag}>"
        end = text.find(close, m.end())
        if end < 0:
            calls.append(ToolCall(None, error=f"<{tag}> is never closed; end the call with {close}",
                                  raw=text[m.start():m.start() + 200]))
            break
        body, raw = text[m.end():end], text[m.start():end + len(close)]
        found = _json_calls(body) if tag == "tool_call" else [_plain_call(body, allowed)]
        calls.extend(_check(c, allowed, raw) for c in found)
        pos = end + len(close)
    if not calls and (stray := _STRAY_CLOSE.search(text)):
        calls.append(ToolCall(None, error=f"{stray.group(0)} without an opening <{stray.group(1)}>; "
                                          f"write {PLAIN_USAGE} or {JSON_USAGE}"))
    if len(calls) > max_calls:
        extra = len(calls) - max_calls
        calls = calls[:max_calls] + [ToolCall(None, error=f"too many tool calls in one turn: {extra} more "
                                                           f"than the {max_calls} allowed were not run")]
    return calls


def _check(call: ToolCall, allowed: list[str], raw: str) -> ToolCall:
    if call.error is None:
        if call.name not in allowed or call.name not in TOOLS:
            error = f"unknown tool {call.name!r}; available tools: {', '.join(allowed) or '(none)'}"
        else:
            error = check_arguments(TOOLS.get(call.name), call.arguments)
        if error:
            return ToolCall(call.name, call.arguments, error, raw)
    return ToolCall(call.name, call.arguments, call.error, raw)


def _json_calls(body: str) -> list[ToolCall]:
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, RecursionError) as e:
        where = f" ({e.msg} at column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
        return [ToolCall(None, error=f"the tool call is not valid JSON{where}; write {JSON_USAGE}")]
    items = value if isinstance(value, list) and value else [value]
    return [_json_call(item) for item in items]


def _json_call(item) -> ToolCall:
    if not isinstance(item, dict):
        return ToolCall(None, error=f"the tool call must be a JSON object, got {type(item).__name__}; write {JSON_USAGE}")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        return ToolCall(None, error=f'the tool call has no "name" string; write {JSON_USAGE}')
    args = item.get("arguments", item.get("parameters", {}))
    if isinstance(args, str):  # some models JSON-encode the arguments object
        try:
            args = json.loads(args) if args.strip() else {}
        except (json.JSONDecodeError, RecursionError):
            return ToolCall(name, error=f'"arguments" of {name!r} is a string that is not a JSON object; '
                                        f"write {JSON_USAGE}")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return ToolCall(name, error=f'"arguments" of {name!r} must be a JSON object, got {type(args).__name__}')
    return ToolCall(name, args)


def _plain_call(body: str, allowed: list[str]) -> ToolCall:
    try:
        node = ast.parse(body.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return ToolCall(None, error=f"the tool call is not a Python call; write {PLAIN_USAGE}")
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        return ToolCall(None, error=f"the tool call must be NAME(...); write {PLAIN_USAGE}")
    name = node.func.id
    if name not in allowed or name not in TOOLS:
        return ToolCall(name, error=f"unknown tool {name!r}; available tools: {', '.join(allowed) or '(none)'}")
    params = list(TOOLS.get(name).parameters.get("properties", {}))
    if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
        return ToolCall(name, error=f"{name}: *args and **kwargs are not allowed; write {PLAIN_USAGE}")
    if len(node.args) > len(params):
        return ToolCall(name, error=f"{name} takes {len(params)} argument(s) ({', '.join(params)}), "
                                    f"got {len(node.args)} positional")
    args: dict = {}
    pairs = list(zip(params, node.args)) + [(k.arg, k.value) for k in node.keywords]
    for key, value in pairs:
        if key in args:
            return ToolCall(name, error=f"{name}: argument {key!r} is given twice")
        try:
            args[key] = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
            return ToolCall(name, error=f"{name}: argument {key!r} must be a literal (a quoted string, a number, "
                                        "a list, ...), not an expression; quote it")
    return ToolCall(name, args)
