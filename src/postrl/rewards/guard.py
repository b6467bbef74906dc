"""Reward-function failures at run time: one call -> per-completion values, failures and counts.

A reward function fails in four ways, each turned into failed completions:
- it raises: the completions are re-scored one at a time, so only those that fail alone fail and
  the others keep the value they get alone (a function whose value for one completion depends on
  the others should catch its own errors; when every completion scores alone, a warning says so);
- it hangs (a user function runs in a worker process with `rewards[i].timeout_s`,
  rewards/worker.py): every completion of the call fails, nothing is retried (it could hang again);
- it returns the wrong shape (not a list, or a list of the wrong length): every completion fails;
- it returns a bad value for one completion (not a number, NaN, inf): that completion fails.
`rewards[i].on_error` then decides: `raise` (the default) stops with a `RewardError` naming the
function, the completion (`positions`; trainers/scoring.py adds the dataset row), the error and the
fix; `zero` scores failed completions 0; `skip_group` (postrl train) gives them NaN and marks them,
and their groups are left out of the policy update (trainers/scoring.skip_failed_groups). Failed
completions and timed-out calls are counted (RewardSet.take_failure_counts -> the metrics
reward/<name>/errors and reward/<name>/timeouts).
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from postrl.rewards.worker import CallFailed, CallTimeout, WorkerDied, WorkerStartError, describe_exception

ON_ERROR = ("raise", "zero", "skip_group")
DEFAULT_TIMEOUT_S = 120.0
"""Seconds one call of a user reward function may take (one call scores a step's whole batch)."""


class RewardError(ValueError, TypeError):
    """A reward function failed under `on_error: raise`; the message names the function, the
    completion, the error and the fix. A ValueError (the CLI prints it and exits 2) and, for
    callers that catch bad output types, a TypeError."""

    def __init__(self, message: str, positions: list[int] | None = None):
        super().__init__(message)
        self.positions = list(positions or [])
        """Batch positions (0-based) of the failed completions."""


@dataclass(frozen=True)
class Policy:
    """What a failure of one configured reward function does."""

    key: str = "rewards[0]"
    """Where the config sets this function (for messages)."""
    on_error: str = "raise"
    choices: tuple[str, ...] = ("raise", "zero")
    """The on_error values the command allows (the fix names the others)."""
    timeout_s: float | None = None
    """The call's time limit (None: no worker, no limit)."""

    @staticmethod
    def of(spec: Any, index: int) -> "Policy":
        """The policy of a config `RewardSpec` (any object: missing fields take the defaults)."""
        fields = getattr(type(spec), "model_fields", {})
        choices = getattr(fields.get("on_error"), "annotation", None)
        choices = getattr(choices, "__args__", None) or ("raise", "zero")
        return Policy(f"rewards[{index}]", getattr(spec, "on_error", "raise"), tuple(choices),
                      getattr(spec, "timeout_s", None))

    def fix(self, timed_out: bool = False) -> str:
        what = {"zero": "zero (score such completions 0)",
                "skip_group": "skip_group (leave their groups out of the update)"}
        others = " or ".join(what[c] for c in self.choices if c in what)
        first = f"raise {self.key}.timeout_s, " if timed_out else ""
        return f"{first}fix the function, or set {self.key}.on_error: {others}"


@dataclass
class CallOutcome:
    """One function's scores of a batch after the policy."""

    values: list[float]
    """Per completion: the value, NaN for None, and for a failure 0 (zero) or NaN (skip_group)."""
    failed: list[bool]
    errors: int = 0
    """Completions whose reward failed (any cause)."""
    timeouts: int = 0
    """Calls that outlasted the timeout (the batch call, or a one-completion retry)."""


def output_values(name: str, out: Any, batch_size: int, offset: int = 0) -> tuple[list[float], dict[int, str]]:
    """A function's output as floats (None -> NaN) and, per bad index (+offset), what is wrong.

    Not a list (or 1-d tensor/array) or a wrong length: a RewardError, since no value can be trusted.
    """
    if hasattr(out, "tolist") and type(out).__module__.split(".")[0] in ("torch", "numpy"):
        out = out.tolist() if getattr(out, "ndim", 1) == 1 else out
    if not isinstance(out, (list, tuple)):
        raise RewardError(f"reward {name!r} returned {type(out).__name__}; a reward function must "
                          f"return a list with one float (or None) per completion")
    if len(out) != batch_size:
        raise RewardError(f"reward {name!r} returned {len(out)} values for {batch_size} completions")
    values, bad = [], {}
    for i, v in enumerate(out, offset):
        if v is None:
            values.append(math.nan)
        elif not isinstance(v, numbers.Real):
            values.append(math.nan)
            bad[i] = f"returned {_short(v)} ({type(v).__name__}) at index {i}; expected a float or None"
        elif not math.isfinite(f := _as_float(v)):
            values.append(math.nan)
            bad[i] = (f"returned {_short(v)} at index {i}; return None for 'not applicable', "
                      "never NaN or inf (or a number beyond float range)")
        else:
            values.append(f)
    return values, bad


def _as_float(v: numbers.Real) -> float:
    try:
        return float(v)
    except OverflowError:  # an int beyond float range
        return math.inf


def score_call(fn: Callable[..., Any], name: str, policy: Policy, call: dict[str, Any],
               batch_size: int) -> CallOutcome:
    """Call `fn(**call)` on a batch of `batch_size` completions and apply `policy` to failures."""
    try:
        out = fn(**call)
    except WorkerStartError as e:  # a setup problem, whatever the policy
        raise RewardError(f"reward {name!r}: {e}; if it only works in the trainer's process, set "
                          f"{policy.key}.timeout_s: null") from None
    except CallTimeout:
        reason = f"did not return within {policy.key}.timeout_s={policy.timeout_s:g} s (its worker was stopped)"
        return _apply(name, policy, [math.nan] * batch_size, dict.fromkeys(range(batch_size), reason),
                      whole=True, timeouts=1)
    except Exception as e:  # noqa: BLE001 - any exception of user code is a reward failure
        return _localise(fn, name, policy, call, batch_size, e)
    try:
        values, bad = output_values(name, out, batch_size)
    except RewardError as e:
        text = str(e).removeprefix(f"reward {name!r} ")
        return _apply(name, policy, [math.nan] * batch_size, dict.fromkeys(range(batch_size), text), whole=True)
    return _apply(name, policy, values, bad)


def _localise(fn, name: str, policy: Policy, call: dict[str, Any], batch_size: int,
              error: Exception) -> CallOutcome:
    """After the batch call raised `error`: score each completion alone to find the failing ones."""
    values, failures, timeouts = [math.nan] * batch_size, {}, 0
    if batch_size == 1:
        return _apply(name, policy, values, {0: failure_text(error)})
    for i in range(batch_size):
        try:
            out = fn(**{k: (v[i:i + 1] if v is not None else None) for k, v in call.items()})
        except CallTimeout:
            reason = (f"did not return within {policy.key}.timeout_s={policy.timeout_s:g} s when re-scored "
                      f"alone after the batch call {failure_text(error)}")
            failures.update(dict.fromkeys(range(i, batch_size), reason))
            timeouts += 1
            break
        except Exception as e:  # noqa: BLE001
            failures[i] = failure_text(e)
        else:
            try:
                (values[i],), bad = output_values(name, out, 1, offset=i)
                failures.update(bad)
            except RewardError as e:
                failures[i] = str(e).removeprefix(f"reward {name!r} ") + " when scoring one completion"
        if failures and policy.on_error == "raise":
            break  # one failure is enough to name; the run stops
    if not failures:
        if policy.on_error == "raise":
            raise RewardError(f"reward {name!r} {failure_text(error)} on a batch of {batch_size} "
                              "completions, but scores each of them alone: the failure depends on the "
                              f"whole batch; {policy.fix()}", list(range(batch_size)))
        warnings.warn(f"reward {name!r} {failure_text(error)} on a batch of {batch_size} completions but "
                      "scores each of them alone; their values alone were used", RuntimeWarning, stacklevel=3)
    return _apply(name, policy, values, failures, timeouts=timeouts)


def _apply(name: str, policy: Policy, values: list[float], failures: dict[int, str], *,
           whole: bool = False, timeouts: int = 0) -> CallOutcome:
    B = len(values)
    if failures and policy.on_error == "raise":
        first = min(failures)
        text = f"reward {name!r} {failures[first]}"
        if not whole:
            more = f"; {len(failures) - 1} more failed" if len(failures) > 1 else ""
            text += f" (completion {first + 1} of {B}{more})"
        raise RewardError(f"{text}; {policy.fix(timed_out=timeouts > 0)}", sorted(failures))
    fill = 0.0 if policy.on_error == "zero" else math.nan
    for i in failures:
        values[i] = fill
    return CallOutcome(values, [i in failures for i in range(B)], errors=len(failures), timeouts=timeouts)


def failure_text(e: BaseException) -> str:
    """`raised Type: message (at file line N in fn)`, or how the worker process ended."""
    if isinstance(e, WorkerDied):
        return str(e)
    return f"raised {str(e) if isinstance(e, CallFailed) else describe_exception(e)}"


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."
