"""Reward failures at run time (rewards/guard.py through RewardSet): raise names the function, the
completion, the error and the fix; zero and skip_group keep the run going; every failure is counted."""

import math
import textwrap
import time

import pytest
import torch

from postrl.config import ConfigError, RLConfig, RLRewardSpec, RewardSpec, resolve
from postrl.rewards import RewardSet
from postrl.rewards.guard import RewardError

FUNCTIONS = textwrap.dedent('''
    import time

    def fails_on_b(prompts, completions, **kwargs):
        return [1.0 / (c != "b") for c in completions]

    def nan_on_b(prompts, completions, **kwargs):
        return [float("nan") if c == "b" else 1.0 for c in completions]

    def huge_on_b(prompts, completions, **kwargs):
        return [10 ** 400 if c == "b" else 1.0 for c in completions]

    def str_on_b(prompts, completions, **kwargs):
        return ["1" if c == "b" else 1.0 for c in completions]

    def one_value(prompts, completions, **kwargs):
        return [1.0]

    def hangs(prompts, completions, **kwargs):
        time.sleep(600)

    def batch_only(prompts, completions, **kwargs):
        if len(completions) > 1:
            raise MemoryError("batch too large")
        return [2.0 for _ in completions]

    def length(prompts, completions, **kwargs):
        return [float(len(c)) for c in completions]
''')

PROMPTS, COMPLETIONS = ["p", "p", "p"], ["a", "b", "cc"]


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "guard_fns.py"
    p.write_text(FUNCTIONS)
    return p


def rewards(path, name, spec=RLRewardSpec, **kw):
    rs = RewardSet([spec(name="exact_match", weight=0.0), spec(name=f"{path}:{name}", **kw)])
    return rs


def score(rs):
    return rs(PROMPTS, COMPLETIONS, None, {"answer": ["a", "b", "c"]})


def test_raise_names_the_function_completion_exception_line_and_fix(path):
    with pytest.raises(RewardError) as e:
        score(rewards(path, "fails_on_b"))
    msg = str(e.value)
    assert "reward 'fails_on_b' raised ZeroDivisionError: float division by zero" in msg
    assert "guard_fns.py line 5 in " in msg and "(completion 2 of 3)" in msg
    assert "set rewards[1].on_error: zero (score such completions 0) or skip_group" in msg
    assert e.value.positions == [1] and isinstance(e.value, ValueError)


def test_in_process_functions_follow_the_same_policy(path):
    with pytest.raises(RewardError, match=r"raised ZeroDivisionError.*\(completion 2 of 3\)"):
        score(rewards(path, "fails_on_b", timeout_s=None))
    out = score(rewards(path, "fails_on_b", timeout_s=None, on_error="zero"))
    assert out.per_function["fails_on_b"].tolist() == [1.0, 0.0, 1.0]


def test_zero_scores_only_the_failing_completion_and_counts_it(path):
    rs = rewards(path, "fails_on_b", on_error="zero")
    out = score(rs)
    # the batch call raised; re-scored alone, "a" and "cc" get 1.0 and "b" fails -> 0
    assert out.per_function["fails_on_b"].tolist() == [1.0, 0.0, 1.0]
    assert out.failed is None  # zero marks nothing for skipping
    assert rs.take_failure_counts() == {"reward/exact_match/errors": 0.0, "reward/exact_match/timeouts": 0.0,
                                         "reward/fails_on_b/errors": 1.0, "reward/fails_on_b/timeouts": 0.0}
    assert rs.take_failure_counts()["reward/fails_on_b/errors"] == 0.0  # counts are per take


def test_skip_group_marks_the_failed_completions(path):
    out = score(rewards(path, "fails_on_b", on_error="skip_group"))
    values = out.per_function["fails_on_b"]
    assert values[0] == 1.0 and math.isnan(values[1]) and values[2] == 1.0
    assert out.failed.tolist() == [False, True, False]
    assert out.total.tolist() == [1.0, 0.0, 1.0]  # NaN counts 0 in the sum; the group is skipped later


@pytest.mark.parametrize("name, match", [
    ("nan_on_b", r"returned nan at index 1; return None"),
    ("huge_on_b", r"returned 1000000000000000000000000000000000000000000.*at index 1; .* beyond float range"),
    ("str_on_b", r"returned '1' \(str\) at index 1; expected a float or None"),
])
def test_a_bad_value_fails_its_completion_only(path, name, match):
    with pytest.raises(RewardError, match=match + r".*\(completion 2 of 3\)"):
        score(rewards(path, name))
    rs = rewards(path, name, on_error="zero")
    assert score(rs).per_function[name].tolist() == [1.0, 0.0, 1.0]
    assert rs.take_failure_counts()[f"reward/{name}/errors"] == 1.0


def test_a_wrong_length_fails_every_completion_of_the_call(path):
    with pytest.raises(RewardError, match=r"'one_value' returned 1 values for 3 completions; fix the function"):
        score(rewards(path, "one_value"))
    out = score(rewards(path, "one_value", on_error="skip_group"))
    assert out.failed.tolist() == [True, True, True]


def test_a_hanging_function_times_out_is_counted_and_the_set_keeps_working(path):
    rs = rewards(path, "hangs", on_error="zero", timeout_s=0.5)
    t0 = time.monotonic()
    out = score(rs)
    assert time.monotonic() - t0 < 5.0
    assert out.per_function["hangs"].tolist() == [0.0, 0.0, 0.0]
    counts = rs.take_failure_counts()
    assert counts["reward/hangs/timeouts"] == 1.0 and counts["reward/hangs/errors"] == 3.0
    with pytest.raises(RewardError, match=r"'hangs' did not return within rewards\[1\].timeout_s=0.5 s.*"
                                          r"raise rewards\[1\].timeout_s, fix the function"):
        score(rewards(path, "hangs", timeout_s=0.5))


def test_a_batch_dependent_failure_is_named_as_such(path):
    with pytest.raises(RewardError, match="raised MemoryError: batch too large .* on a batch of 3 completions, "
                                          "but scores each of them alone"):
        score(rewards(path, "batch_only"))
    with pytest.warns(RuntimeWarning, match="their values alone were used"):
        out = score(rewards(path, "batch_only", on_error="zero"))
    assert out.per_function["batch_only"].tolist() == [2.0, 2.0, 2.0]


def test_user_functions_run_in_a_worker_builtins_in_process(path):
    from postrl.rewards.worker import WorkerFn

    rs = rewards(path, "length")
    assert not isinstance(rs.fns[0], WorkerFn) and isinstance(rs.fns[1], WorkerFn)
    assert score(rs).per_function["length"].tolist() == [1.0, 1.0, 2.0]
    assert not isinstance(rewards(path, "length", timeout_s=None).fns[1], WorkerFn)
    rs.close()


def test_config_keys_of_the_policy():
    with pytest.raises(ConfigError, match=r"`rewards.0.on_error` = 'skip'"):
        resolve(RLConfig, {"rewards": [{"name": "m:f", "on_error": "skip"}]})
    with pytest.raises(ConfigError, match=r"`rewards.0.timeout_s` = 0"):
        resolve(RLConfig, {"rewards": [{"name": "m:f", "timeout_s": 0}]})
    with pytest.raises(ConfigError, match="timeout_s = 5.0 is set for the built-in reward 'exact_match'"):
        resolve(RLConfig, {"rewards": [{"name": "exact_match", "timeout_s": 5}]})
    with pytest.raises(ValueError, match="skip_group"):  # only postrl train has groups to skip
        RewardSpec(name="m:f", on_error="skip_group")
    with pytest.raises(ConfigError, match=r"process_rewards\[0\].on_error: process rewards are built-ins"):
        resolve(RLConfig, {"process_rewards": [{"name": "prm", "on_error": "zero", "kwargs": {"path": "x"}}]})
    assert RLRewardSpec(name="m:f").timeout_s == 120.0 and RLRewardSpec(name="m:f").on_error == "raise"


def test_a_set_without_skip_group_marks_nothing():
    rs = RewardSet([RLRewardSpec(name="exact_match")])
    out = rs(["p"], ["1"], None, {"answer": ["1"]})
    assert out.failed is None and torch.equal(out.total, torch.tensor([1.0]))
