"""Named registries: the extension points of postrl.

A registry maps a name to a plain function (or a small class for stateful parts such as
samplers) together with the paper it comes from and a one-line summary. Entries are added by a
decorator, duplicates are rejected, and an unknown name is an error that lists the valid ones.
`postrl algos` and `docs/algorithms.md` are generated from these objects, so the documentation
cannot drift from the code.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator


@dataclass(frozen=True)
class Entry:
    """One registered method: the callable plus what the docs and `postrl algos` show."""

    name: str
    fn: Callable[..., Any]
    paper: str
    arxiv: str | None
    summary: str
    defaults: dict[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    """What the entry needs from the loop beyond the defaults (e.g. a loss that compares the
    completions of one prompt needs `"groups"`: whole groups in every micro-batch). Each
    registry documents the words it understands; the trainer provides them, no name checks."""

    @property
    def formula(self) -> str:
        """The docstring without its first line (the formula and edge cases live there)."""
        doc = inspect.getdoc(self.fn) or ""
        return doc.split("\n", 1)[1].strip("\n").rstrip() if "\n" in doc else ""


class UnknownNameError(KeyError):
    """An unknown registry name; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable.
        return str(self.args[0])


class Registry:
    """A dict from name to `Entry`, filled by `@registry.register(...)`."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, paper: str, arxiv: str | None = None, summary: str,
                 needs: tuple[str, ...] = ()):
        """Decorator registering `fn` under `name`; a second function under one name is an error."""

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            old = self._entries.get(name)
            if old is not None and old.fn is not fn:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered by {old.fn.__module__}."
                    f"{old.fn.__qualname__}; choose another name"
                )
            self._entries[name] = Entry(name, fn, paper, arxiv, summary, _keyword_defaults(fn), tuple(needs))
            return fn

        return decorate

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; valid names: {', '.join(sorted(self._entries))}"
            ) from None

    def __getitem__(self, name: str) -> Callable[..., Any]:
        return self.get(name).fn

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def check_name(self, name: str, key: str) -> None:
        """Reject a name that is not registered, naming the config `key`, the closest name and the valid ones."""
        if name not in self._entries:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{key}: unknown {self.kind} {name!r}{hint}; valid names: {', '.join(self.names())}")

    def check_kwargs(self, name: str, kwargs: dict[str, Any], where: str) -> None:
        """Reject keyword hyper-parameters the entry does not take, naming the valid ones.

        Hyper-parameters are the keyword-only parameters with defaults; a `**kwargs` catch-all
        (rewards take one for dataset columns) does not make a misspelt setting valid.
        """
        entry = self.get(name)
        unknown = sorted(set(kwargs) - set(entry.defaults))
        if unknown:
            raise ValueError(
                f"{where}: {self.kind} {name!r} takes no parameter {', '.join(map(repr, unknown))}; "
                f"its parameters are: {', '.join(sorted(entry.defaults)) or '(none)'}"
            )
        for key, value in kwargs.items():  # a value of the wrong kind would fail inside a training step
            expected = _expected_kinds(entry.fn, key, entry.defaults[key])
            if expected and not any(_is_kind(value, k) for k in expected):
                raise ValueError(f"{where}.{key} = {value!r}: {self.kind} {name!r} expects "
                                 f"{' or '.join(expected)} (default {entry.defaults[key]!r})")


_KINDS = {"int": "a number", "float": "a number", "bool": "true or false", "str": "a string",
          "Literal": "a string", "list": "a list", "tuple": "a list", "Sequence": "a list", "dict": "a mapping",
          "Mapping": "a mapping", "None": "null", "Optional": "null"}
_IGNORED = {"typing", "Union", "collections", "abc"}


def _expected_kinds(fn: Callable[..., Any], key: str, default: Any) -> list[str]:
    """The kinds of value (`_KINDS` words) a hyper-parameter takes, from its annotation (a string
    under `from __future__ import annotations`) or else its default; [] when they cannot be told
    (Any, a class, a callable, no annotation and a None default), which skips the check."""
    import re

    try:
        ann = inspect.signature(fn).parameters[key].annotation
    except (TypeError, ValueError, KeyError):
        return []
    if ann is inspect.Parameter.empty:
        names = {bool: "bool", int: "int", float: "float", str: "str", list: "list", tuple: "tuple", dict: "dict"}
        words = [names[type(default)]] if type(default) in names else []
    else:
        text = ann if isinstance(ann, str) else getattr(ann, "__name__", None) or str(ann)
        while "[" in text:  # "Literal['a', 'b'] | list[int]" -> "Literal | list": the outer kinds
            stripped = re.sub(r"\[[^\[\]]*\]", "", text)
            if stripped == text:
                return []
            text = stripped
        words = [w for w in re.findall(r"[A-Za-z_]+", text) if w not in _IGNORED]
        if not words or any(w not in _KINDS for w in words):
            return []
    return sorted({_KINDS[w] for w in words})


def _is_kind(value: Any, kind: str) -> bool:
    import math
    import numbers

    if kind == "a number":
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and not (
            isinstance(value, float) and math.isnan(value))
    return {"true or false": lambda: isinstance(value, bool), "a string": lambda: isinstance(value, str),
            "a list": lambda: isinstance(value, (list, tuple)), "a mapping": lambda: isinstance(value, dict),
            "null": lambda: value is None}[kind]()


def _keyword_defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    """Keyword-only parameters with defaults: the entry's visible hyper-parameters."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty}
