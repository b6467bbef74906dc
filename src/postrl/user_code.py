"""Importing user code named in a config: `module:attr` or `path/to/file.py:attr`.

One place resolves these strings for every extension point (reward functions, environments),
so the error messages and the per-file module naming are the same everywhere.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import Any


def import_target(target: str, what: str) -> ModuleType:
    """The module `target` names: a dotted module path or a `.py` file path.

    `what` prefixes error messages (e.g. "reward 'my.py:fn'").
    """
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"{what}: file {target} does not exist")
        # A stable module name per file: loading twice reuses the module, and pickling a function
        # (to send it to a worker) finds it in sys.modules.
        mod_name = f"postrl_user_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
        if mod_name in sys.modules:
            return sys.modules[mod_name]
        spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module  # before exec: dataclasses and pickling look it up
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[mod_name]
            raise ImportError(f"{what}: running {path} failed: {type(e).__name__}: {e}") from e
        return module
    try:
        return importlib.import_module(target)
    except Exception as e:
        raise ImportError(f"{what}: cannot import module {target!r} "
                          f"({type(e).__name__}: {e}); is it on sys.path / PYTHONPATH?") from e


def load_attr(spec: str, what: str, kind: type | None = None) -> Any:
    """`getattr(import_target(module), attr)` for `spec` = "module:attr" / "file.py:attr".

    A missing attribute lists what the module defines (classes when `kind` is `type`, else callables).
    """
    target, attr = spec.rsplit(":", 1)
    module = import_target(target, what)
    if not hasattr(module, attr):
        want = (lambda v: isinstance(v, type)) if kind is type else callable
        defined = sorted(k for k, v in vars(module).items() if want(v) and not k.startswith("_")
                         and getattr(v, "__module__", None) == module.__name__)
        label = "classes" if kind is type else "callables"
        raise AttributeError(f"{what}: {target} has no attribute {attr!r}; {label} defined there: "
                             f"{', '.join(defined) or '(none)'}")
    return getattr(module, attr)


def check_kwargs(fn: Any, kwargs: dict, what: str) -> None:
    """Raise when `kwargs` names a parameter `fn` (a function or class) does not take; a `**kwargs`
    parameter, or a signature that cannot be read, accepts anything."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(f"{what} takes no parameter {', '.join(map(repr, unknown))}; "
                         f"its parameters are: {', '.join(params) or '(none)'}")
