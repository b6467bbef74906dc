"""Tools an agent can call: the `TOOLS` registry, argument schemas, rendering and running calls.

A tool is a plain Python function registered with `@TOOLS.register()`. Its JSON schema (the
OpenAI/Hermes function format every chat template with tool support reads) is derived from the
type hints and the docstring (first paragraph = description, a Google-style `Args:` section =
parameter descriptions), or given as `parameters=`. `render_tools` / `render_chat` show the tools
to the model: through the chat template's `tools=` argument when the template uses it, else as
the plain text format documented in `PLAIN_FORMAT`. `call_tool` validates arguments and runs the
function with a wall-clock timeout, turning every failure into an error string the model can read.
Parsing calls out of model text is `tool_parser.py`.
"""

from __future__ import annotations

import inspect
import re
import threading
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

from postrl.registry import UnknownNameError

_JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean", list: "array", dict: "object"}


@dataclass(frozen=True)
class Tool:
    """One registered tool: the function and what the model is told about it."""

    name: str
    fn: Callable[..., Any]
    description: str
    parameters: dict
    """JSON schema of the arguments: {"type": "object", "properties": {...}, "required": [...]}."""
    timeout_s: float
    """Wall-clock limit of one call (`call_tool`)."""

    def schema(self) -> dict:
        """The function schema chat templates take in `tools=[...]`."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


class ToolRegistry:
    """name -> Tool, filled by `@TOOLS.register(...)`; duplicates and unknown names are errors."""

    def __init__(self):
        self._tools: dict[str, Tool] = {}

    def register(self, name: str | None = None, *, description: str | None = None,
                 parameters: dict | None = None, timeout_s: float = 10.0):
        """Decorator registering a function as a tool (name defaults to the function's name)."""

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            tool_name = name or fn.__name__
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", tool_name):
                raise ValueError(f"tool name {tool_name!r} must be an identifier (letters, digits, _)")
            old = self._tools.get(tool_name)
            if old is not None and old.fn is not fn:
                raise ValueError(f"tool {tool_name!r} is already registered by {old.fn.__module__}."
                                 f"{old.fn.__qualname__}; choose another name")
            if parameters is None:
                desc, params = derive_schema(fn)
            else:  # a given schema replaces the hints; the docstring may still give the description
                desc, params = _description(inspect.getdoc(fn) or ""), parameters
            self._tools[tool_name] = Tool(tool_name, fn, description or desc, params, timeout_s)
            return fn

        return decorate

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownNameError(f"unknown tool {name!r}; valid tools: {', '.join(self.names())}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(sorted(self._tools.values(), key=lambda t: t.name))

    def names(self) -> list[str]:
        return sorted(self._tools)


TOOLS = ToolRegistry()
"""Built-in tools by name (calculator, python); envs list the names they offer in `tools`."""


# ------------------------------------------------------------------------------------- schemas
def derive_schema(fn: Callable[..., Any]) -> tuple[str, dict]:
    """(description, parameters schema) from `fn`'s signature, type hints and docstring.

    Parameters without a default are required; `*args`/`**kwargs` are not allowed (a model
    cannot be told about them). A parameter without a type hint is an error naming it.
    """
    doc = inspect.getdoc(fn) or ""
    description = _description(doc)
    arg_docs = _docstring_args(doc)
    hints = typing.get_type_hints(fn)
    props, required = {}, []
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"tool {fn.__name__}: *args/**kwargs cannot be described to a model; "
                            "list the parameters or pass parameters= to TOOLS.register")
        if p.name not in hints:
            raise TypeError(f"tool {fn.__name__}: parameter {p.name!r} has no type hint; add one "
                            "(int, float, str, bool, list[...], dict, Literal[...]) or pass parameters=")
        prop = _json_type(hints[p.name], f"tool {fn.__name__} parameter {p.name!r}")
        if p.name in arg_docs:
            prop["description"] = arg_docs[p.name]
        props[p.name] = prop
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
    return description, {"type": "object", "properties": props, "required": required}


def _description(doc: str) -> str:
    return doc.split("\n\n", 1)[0].replace("\n", " ").strip()


def _docstring_args(doc: str) -> dict[str, str]:
    """{name: description} from a Google-style `Args:` section (continuation lines joined)."""
    m = re.search(r"^Args:[ \t]*\n((?:[ \t]+\S.*\n?)+)", doc, re.MULTILINE)
    if not m:
        return {}
    out: dict[str, str] = {}
    last, base = None, None
    for line in m.group(1).splitlines():
        indent = len(line) - len(line.lstrip())
        base = indent if base is None else base
        item = re.match(r"(\w+)(?:\s*\([^)]*\))?:\s*(.*)", line.strip())
        if indent == base and item:
            last = item.group(1)
            out[last] = item.group(2).strip()
        elif last is not None:
            out[last] = f"{out[last]} {line.strip()}".strip()
    return out


def _json_type(hint: Any, where: str) -> dict:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _JSON_TYPES:
        return {"type": _JSON_TYPES[hint]}
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (list, tuple):
        return {"type": "array", **({"items": _json_type(args[0], where)} if args and args[0] is not ... else {})}
    if origin is dict:
        return {"type": "object"}
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:  # Optional[X]: the default says what None means
            return _json_type(inner[0], where)
    raise TypeError(f"{where}: type {hint!r} has no JSON-schema form; use int, float, str, bool, "
                    "list[...], dict, Literal[...] or X | None, or pass parameters= to TOOLS.register")


def check_arguments(tool: Tool, arguments: dict) -> str | None:
    """None if `arguments` fit the tool's schema, else a message saying what is wrong and what is expected."""
    schema = tool.parameters
    props = schema.get("properties", {})
    usage = f"{tool.name}({', '.join(props)})"
    missing = [k for k in schema.get("required", []) if k not in arguments]
    if missing:
        return f"tool {tool.name!r} is missing argument(s) {', '.join(map(repr, missing))}; call it as {usage}"
    unknown = [k for k in arguments if k not in props]
    if unknown:
        return f"tool {tool.name!r} takes no argument(s) {', '.join(map(repr, unknown))}; call it as {usage}"
    for key, value in arguments.items():
        problem = _type_problem(value, props[key])
        if problem:
            return f"tool {tool.name!r} argument {key!r}: {problem}"
    return None


def _type_problem(value: Any, prop: dict) -> str | None:
    if "enum" in prop and value not in prop["enum"]:
        return f"must be one of {prop['enum']}, got {value!r}"
    kind = prop.get("type")
    ok = {"integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
          "array": lambda v: isinstance(v, list), "object": lambda v: isinstance(v, dict)}.get(kind)
    if ok is not None and not ok(value):
        return f"must be {'an' if kind[0] in 'aeio' else 'a'} {kind}, got {type(value).__name__} {value!r:.40}"
    if kind == "array" and "items" in prop:
        for item in value:
            problem = _type_problem(item, prop["items"])
            if problem:
                return f"an item {problem}"
    return None


# ------------------------------------------------------------------------------------- running
@dataclass(frozen=True)
class ToolResult:
    """What a call returned, as text for the model; `error` is set when it did not run or failed."""

    text: str
    error: bool = False


def call_tool(name: str, arguments: dict, *, timeout_s: float | None = None, max_chars: int = 1000) -> ToolResult:
    """Run tool `name` on `arguments`; every failure is an error result, never an exception.

    The call runs in a daemon thread joined with `timeout_s` (default: the tool's own). A Python
    thread cannot be killed, so a timed-out call keeps running in the background until it ends:
    tools that may hang must bound their own work (the `python` tool runs in the sandbox, whose
    process is killed at its timeout). Output is cut to `max_chars`.
    """
    if name not in TOOLS:
        return ToolResult(f"error: unknown tool {name!r}; available tools: {', '.join(TOOLS.names())}", True)
    tool = TOOLS.get(name)
    problem = check_arguments(tool, arguments)
    if problem:
        return ToolResult(f"error: {problem}", True)
    limit = tool.timeout_s if timeout_s is None else timeout_s
    box: list = []

    def run() -> None:
        try:
            box.append(ToolResult(str(tool.fn(**arguments))))
        except Exception as e:  # the model reads the exception; the episode goes on
            box.append(ToolResult(f"error: {type(e).__name__}: {e}", True))

    thread = threading.Thread(target=run, name=f"tool-{name}", daemon=True)
    thread.start()
    thread.join(limit)
    if not box:
        return ToolResult(f"error: tool {name!r} timed out after {limit:g} s", True)
    result = box[0]
    if len(result.text) > max_chars:
        return ToolResult(result.text[:max_chars] + f"... [cut: {len(result.text)} characters]", result.error)
    return result


# ----------------------------------------------------------------------------------- rendering
PLAIN_FORMAT = ("Call a tool as <call>NAME(ARGUMENT=VALUE, ...)</call> with Python literals, e.g. "
                "<call>{example}</call>; its result comes back. Answer without a call when done.")
"""The plain tool-call format, used when the chat template has no tool support (the parser also
accepts the Hermes/Qwen `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` form)."""


def plain_tool_prompt(names: list[str]) -> str:
    """The plain description of tools `names`: one line per tool, then `PLAIN_FORMAT`."""
    tools = [TOOLS.get(n) for n in names]
    lines = ["Tools:"]
    for t in tools:
        params = ", ".join(f"{k}: {v.get('type', 'enum')}" for k, v in t.parameters.get("properties", {}).items())
        lines.append(f"- {t.name}({params}): {t.description}")
    first = tools[0]
    example = f"{first.name}({', '.join(f'{k}=...' for k in first.parameters.get('required', []))})"
    lines.append(PLAIN_FORMAT.format(example=example))
    return "\n".join(lines)


_DUMMY_TOOL = {"type": "function", "function": {"name": "zz_probe_tool", "description": "probe",
                                                "parameters": {"type": "object", "properties": {}}}}


def template_uses_tools(tokenizer) -> bool:
    """True if the chat template renders `tools=`: rendering with a dummy tool changes the text."""
    if getattr(tokenizer, "chat_template", None) is None:
        return False
    messages = [{"role": "user", "content": "hi"}]
    try:
        with_tool = tokenizer.apply_chat_template(messages, tools=[_DUMMY_TOOL], tokenize=False)
        without = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # a template that breaks on tools= cannot be given them
        return False
    return with_tool != without


def render_tools(tokenizer, names: list[str]) -> str | None:
    """The plain tool description for `names`, or None when the chat template shows tools itself
    (then pass `tools=tool_schemas(names)` to `apply_chat_template`, as `render_chat` does)."""
    if not names:
        return None
    return None if template_uses_tools(tokenizer) else plain_tool_prompt(names)


def tool_schemas(names: list[str]) -> list[dict]:
    return [TOOLS.get(n).schema() for n in names]


def with_plain_tools(messages: list[dict], names: list[str]) -> list[dict]:
    """`messages` with the plain tool description in the system message (appended to an existing
    one, else a new first message): what `render_chat` renders for a template without tools."""
    if not names:
        return list(messages)
    text = plain_tool_prompt(names)
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": f"{messages[0]['content']}\n{text}"}] + list(messages[1:])
    return [{"role": "system", "content": text}] + list(messages)


def render_chat(tokenizer, messages: list[dict], names: list[str], *, add_generation_prompt: bool = True) -> str:
    """`messages` through the chat template with tools `names` shown to the model."""
    if names and template_uses_tools(tokenizer):
        return tokenizer.apply_chat_template(messages, tools=tool_schemas(names), tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    return tokenizer.apply_chat_template(with_plain_tools(messages, names), tokenize=False,
                                         add_generation_prompt=add_generation_prompt)
