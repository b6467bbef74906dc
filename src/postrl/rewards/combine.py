"""Loading reward functions by name and scoring a batch with a weighted set of them.

`load_reward_fn` resolves a built-in name, `module:function` or `path/to/file.py:function` and
binds the config's hyper-parameters. `RewardSet` calls every function the way TRL does
(`fn(prompts=..., completions=..., completion_ids=..., **columns)`), checks what it returns in
one place (`check_rewards`) and forms the weighted sum, where None counts as 0.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from postrl.rewards.registry import REWARDS
from postrl.user_code import check_kwargs, load_attr


def load_reward_fn(name: str, kwargs: dict[str, Any] | None = None) -> Callable[..., list]:
    """The reward function `name` with `kwargs` bound (a `functools.partial`).

    `name` is a built-in (`exact_match`), `module:function` (importable from sys.path) or
    `path/to/file.py:function`.
    """
    kwargs = dict(kwargs or {})
    if name in REWARDS:
        # Built-ins take **kwargs only for dataset columns, so Registry.check_kwargs (which trusts
        # **kwargs) would accept a misspelt hyper-parameter: check against the keyword-only ones.
        entry = REWARDS.get(name)
        unknown = sorted(set(kwargs) - set(entry.defaults))
        if unknown:
            raise ValueError(f"reward {name!r} takes no parameter {', '.join(map(repr, unknown))}; "
                             f"its parameters are: {', '.join(sorted(entry.defaults)) or '(none)'}")
        return functools.partial(entry.fn, **kwargs)
    if ":" not in name:
        raise ValueError(f"unknown reward {name!r}; built-in rewards: {', '.join(REWARDS.names())}; "
                         "for your own function give 'module:function' or 'path/to/file.py:function'")
    fn = load_attr(name, f"reward {name!r}")
    if not callable(fn):
        raise TypeError(f"reward {name!r}: {name.rsplit(':', 1)[1]} is a {type(fn).__name__}, not a function")
    check_kwargs(fn, kwargs, f"reward {name!r}")
    return functools.partial(fn, **kwargs)


@dataclass
class RewardResult:
    """Rewards of one batch of B completions."""

    total: torch.Tensor
    """[B] float32: sum_k weight_k * r_k, where a None (NaN) r_k contributes 0."""
    per_function: dict[str, torch.Tensor]
    """display name -> [B] float32 raw values, NaN where the function returned None."""


def check_rewards(name: str, out: Any, batch_size: int) -> list[float]:
    """A reward function's output as floats (None -> NaN), or an error naming the function.

    The one place that judges outputs: a policy for bad values (skip, clip) belongs here.
    """
    if isinstance(out, torch.Tensor) or type(out).__module__ == "numpy":
        out = out.tolist() if getattr(out, "ndim", 1) == 1 else out
    if not isinstance(out, (list, tuple)):
        raise TypeError(f"reward {name!r} returned {type(out).__name__}; a reward function must "
                        f"return a list with one float (or None) per completion")
    if len(out) != batch_size:
        raise ValueError(f"reward {name!r} returned {len(out)} values for {batch_size} completions")
    values = []
    for i, v in enumerate(out):
        if v is None:
            values.append(math.nan)
            continue
        if not isinstance(v, numbers.Real):
            raise TypeError(f"reward {name!r} returned {v!r} ({type(v).__name__}) at index {i}; "
                            "expected a float or None")
        v = float(v)
        if not math.isfinite(v):
            raise ValueError(f"reward {name!r} returned {v} at index {i}; return None for "
                             "'not applicable', never NaN or inf")
        values.append(v)
    return values


class RewardSet:
    """The configured reward functions, their weights and unique display names."""

    def __init__(self, specs: Sequence[Any]):
        """`specs`: `RewardSpec`s (name, weight, kwargs)."""
        if not specs:
            raise ValueError("RewardSet needs at least one reward function")
        self.fns = [load_reward_fn(s.name, s.kwargs) for s in specs]
        self.weights = [float(s.weight) for s in specs]
        self.names = display_names(specs)
        """Display names for metrics: the function name of `module:fn`, repeats as name, name_2."""
        self._hparams = [_keyword_only(fn) for fn in self.fns]

    def __call__(self, prompts: list, completions: list, completion_ids: list | None,
                 columns: dict[str, list]) -> RewardResult:
        B = len(completions)
        for key, col in [("prompts", prompts), *columns.items()]:
            if len(col) != B:
                raise ValueError(f"column {key!r} has {len(col)} values for {B} completions")
        total = torch.zeros(B, dtype=torch.float32)
        per_function = {}
        for name, fn, weight, hparams in zip(self.names, self.fns, self.weights, self._hparams):
            # Hyper-parameters come from the config; a column that happens to share a
            # hyper-parameter's name (say `mode`) must not silently replace it.
            cols = {k: v for k, v in columns.items() if k not in hparams}
            _check_required(fn, name, cols)
            out = fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **cols)
            r = torch.tensor(check_rewards(name, out, B), dtype=torch.float32)
            per_function[name] = r
            total += weight * torch.nan_to_num(r, nan=0.0)
        return RewardResult(total=total, per_function=per_function)


def display_names(specs: Sequence[Any]) -> list[str]:
    """The name each reward is shown (and referred to) by: `fn` of `module:fn`, repeats as fn, fn_2."""
    return _unique([s.name.rsplit(":", 1)[-1] for s in specs])


def _unique(names: list[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        candidate, k = n, 1
        while candidate in out:
            k += 1
            candidate = f"{n}_{k}"
        out.append(candidate)
    return out


def _keyword_only(fn: Callable) -> set[str]:
    """Keyword-only parameters with defaults (bound ones included): the hyper-parameters."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in params
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty}


def _check_required(fn: Callable, name: str, columns: dict[str, list]) -> None:
    """A missing column is a config/data problem: say which, instead of a bare TypeError."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return
    given = {"prompts", "completions", "completion_ids", *columns}
    missing = [p.name for p in params if p.default is inspect.Parameter.empty and p.name not in given
               and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    if missing:
        raise ValueError(f"reward {name!r} needs the dataset column(s) {', '.join(map(repr, missing))}; "
                         f"the batch has: {', '.join(sorted(columns)) or '(no extra columns)'}")
