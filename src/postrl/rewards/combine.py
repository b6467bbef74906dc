"""Loading reward functions by name and scoring a batch with a weighted set of them.

`load_reward_fn` resolves a built-in name, `module:function` or `path/to/file.py:function` and
binds the config's hyper-parameters. `RewardSet` calls every function the way TRL does
(`fn(prompts=..., completions=..., completion_ids=..., **columns)`) and forms the weighted sum,
where None counts as 0. A user function runs in a worker process with a per-call timeout
(`rewards[i].timeout_s`, rewards/worker.py); what a failed call does (it raised, hung, or returned
a bad value) is `rewards[i].on_error` (rewards/guard.py), and failures are counted per function.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from postrl.rewards.guard import Policy, RewardError, output_values, score_call
from postrl.rewards.registry import REWARDS
from postrl.rewards.worker import WorkerFn
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
    failed: torch.Tensor | None = None
    """[B] bool: a reward of the row failed under `on_error: skip_group` (its group is left out of
    the update, trainers/scoring.py); None when nothing could be skipped."""


def check_rewards(name: str, out: Any, batch_size: int) -> list[float]:
    """A reward function's output as floats (None -> NaN), or a RewardError naming the function
    (`rewards/guard.py` judges outputs; RewardSet applies `on_error` to what it finds)."""
    values, bad = output_values(name, out, batch_size)
    if bad:
        raise RewardError(f"reward {name!r} {bad[min(bad)]}", sorted(bad))
    return values


class RewardSet:
    """The configured reward functions, their weights and unique display names."""

    def __init__(self, specs: Sequence[Any]):
        """`specs`: `RewardSpec`s (name, weight, kwargs)."""
        if not specs:
            raise ValueError("RewardSet needs at least one reward function")
        fns = [load_reward_fn(s.name, s.kwargs) for s in specs]
        self.weights = [float(s.weight) for s in specs]
        self.names = display_names(specs)
        """Display names for metrics: the function name of `module:fn`, repeats as name, name_2."""
        self._hparams = [_keyword_only(fn) for fn in fns]
        self.policies = [Policy.of(s, i) for i, s in enumerate(specs)]
        # user code with a timeout runs in a worker process; built-ins (ours, some holding models)
        # and `timeout_s: null` run here
        self.fns = [WorkerFn(s.name, s.kwargs, p.timeout_s, signature=inspect.signature(fn))
                    if ":" in s.name and p.timeout_s is not None else fn
                    for s, p, fn in zip(specs, self.policies, fns)]
        self._failures: dict[str, dict[str, int]] = {}

    def __call__(self, prompts: list, completions: list, completion_ids: list | None,
                 columns: dict[str, list]) -> RewardResult:
        B = len(completions)
        for key, col in [("prompts", prompts), *columns.items()]:
            if len(col) != B:
                raise ValueError(f"column {key!r} has {len(col)} values for {B} completions")
        total = torch.zeros(B, dtype=torch.float32)
        per_function, failed = {}, None
        for name, fn, weight, hparams, policy in zip(self.names, self.fns, self.weights, self._hparams,
                                                     self.policies):
            # Hyper-parameters come from the config; a column that happens to share a
            # hyper-parameter's name (say `mode`) must not silently replace it.
            cols = {k: v for k, v in columns.items() if k not in hparams}
            _check_required(fn, name, cols)
            call = dict(prompts=prompts, completions=completions, completion_ids=completion_ids, **cols)
            out = score_call(fn, name, policy, call, B)
            counts = self._failures.setdefault(name, {"errors": 0, "timeouts": 0})
            counts["errors"] += out.errors
            counts["timeouts"] += out.timeouts
            if policy.on_error == "skip_group":
                flags = torch.tensor(out.failed, dtype=torch.bool)
                failed = flags if failed is None else failed | flags
            r = torch.tensor(out.values, dtype=torch.float32)
            per_function[name] = r
            total += weight * torch.nan_to_num(r, nan=0.0)
        return RewardResult(total=total, per_function=per_function, failed=failed)

    def take_failure_counts(self) -> dict[str, float]:
        """`reward/<name>/errors` (completions whose reward failed) and `reward/<name>/timeouts`
        (calls stopped at the time limit) since the last take."""
        out = {f"reward/{n}/{k}": float(self._failures.get(n, {}).get(k, 0)) for n in self.names
               for k in ("errors", "timeouts")}
        self._failures = {}
        return out

    def close(self) -> None:
        """Stop the worker processes (they also stop when this set is garbage-collected or at exit)."""
        for fn in self.fns:
            if isinstance(fn, WorkerFn):
                fn.close()


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
