"""XRPO's sampler (samplers/xrpo.py): t quantiles against the table, the allocation rule on
constructed groups (every priority written out), in-context seeding, state and kwargs checks."""

import json

import pytest
import torch
from helpers import make_batch

from postrl.data.loading import PromptRow
from postrl.samplers import SAMPLERS, Addition
from postrl.samplers.xrpo import XRPO_EXAMPLE, XRPO_HINT, half_width, plan_allocation, problem_text, t_quantile


@pytest.mark.parametrize("df, t", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (7, 2.3646),
                                   (15, 2.1314), (30, 2.0423)])
def test_t_quantile_matches_the_students_t_table(df, t):
    assert t_quantile(0.95, df) == pytest.approx(t, abs=1e-4)  # t_{0.975, df}


def test_t_quantile_at_other_levels():
    assert t_quantile(0.90, 5) == pytest.approx(2.0150, abs=1e-4)  # t_{0.95, 5}
    assert t_quantile(0.99, 10) == pytest.approx(3.1693, abs=1e-4)  # t_{0.995, 10}


def test_half_width_by_hand():
    # s = 0.5, n = 4: t_{0.975, 3} * 0.5 / 2 = 3.18245 / 4
    assert half_width(0.5, 4, 0.95) == pytest.approx(0.795611, abs=1e-6)


def test_allocation_goes_one_rollout_at_a_time_to_the_largest_uncertainty_reduction():
    groups = [[1.0, 0.0], [1.0, 1.0], [0.0, 0.0, 1.0, 1.0]]
    # s: 0.7071, 0, 0.5774. Reductions h(n) - h(n+1) = s (t_{n-1}/sqrt(n) - t_n/sqrt(n+1)):
    # group 0 at n=2: 0.7071 (12.7062/1.4142 - 4.3027/1.7321) = 4.596; n=3: 0.631; n=4: 0.247; n=5: 0.136
    # group 1: 0 (no spread); group 2 at n=4: 0.5774 (3.1824/2 - 2.7764/2.2361) = 0.202
    assert [plan_allocation(groups, b, confidence=0.95, bonus=0.0) for b in (1, 2, 3, 4, 5)] == \
        [[1, 0, 0], [2, 0, 0], [3, 0, 0], [3, 0, 1], [4, 0, 1]]
    assert plan_allocation(groups, 0, confidence=0.95, bonus=0.0) == [0, 0, 0]


def test_the_bonus_explores_groups_without_spread_fewest_rollouts_first():
    # no spread anywhere: the bonus 0.1 sqrt(ln N / n_q) decides. N = 6: group 0 (n 2) 0.0947 > group 1
    # (n 4) 0.0669; N = 7: group 0 (n 3) 0.0805 > group 1 0.0697
    assert plan_allocation([[0.0, 0.0], [0.0] * 4], 2, confidence=0.95, bonus=0.1) == [2, 0]
    assert plan_allocation([[0.0, 0.0], [0.0] * 4], 2, confidence=0.95, bonus=0.0) == [2, 0]  # ties: earlier


def _rows(n):
    return [PromptRow(i, [{"role": "user", "content": f"q{i}?"}], None, {"answer": str(i)}) for i in range(n)]


def _xrpo(n=6, **kw):
    return SAMPLERS["xrpo"](n, 0, rows=_rows(n), shuffle=False, **kw)


def _scored(prompt_index, rewards, texts):
    batch = make_batch(rewards, list(range(len(rewards))))
    batch.prompt_index = torch.tensor(prompt_index)
    batch.metadata["completion_text"] = texts
    return batch


def test_all_failed_prompts_get_solved_examples_of_other_prompts():
    s = _xrpo(exemplars=2)
    assert s.first_n(8) == 4 and s.decorate([0, 1]) == [Addition(), Addition()]
    s.update([0, 1, 2], [[0.0, 0.0], [1.0, 0.0], [0.0, 0.5]])  # 0 and 2 failed entirely
    assert s.failed == {0, 2} and s.decorate([0]) == [Addition()]  # nothing solved yet
    batch = _scored([1, 3, 4, 3], [1.0, 1.0, 0.0, 1.0], ["A1", "A3", "x", "A3b"])
    out, adv, metrics = s.select(batch, torch.zeros(4, 3), progress=0.0)
    assert out is batch and metrics["xrpo/pool"] == 2.0
    assert s.pool == [[1, "A1"], [3, "A3b"]]  # one per prompt, the latest; row 4 failed
    hint = XRPO_HINT.format(examples=XRPO_EXAMPLE.format(problem="q3?", solution="A3b")
                            + XRPO_EXAMPLE.format(problem="q1?", solution="A1"))
    assert s.decorate([0, 1, 2]) == [Addition(hint=hint, tag="icl"), Addition(), Addition(hint=hint, tag="icl")]
    s.update([0], [[1.0]])  # solved now: no more seeding
    assert s.decorate([0]) == [Addition()]
    s.update([3], [[0.0, 0.0]])  # 3's own success is not its example
    assert s.decorate([3])[0].hint == XRPO_HINT.format(examples=XRPO_EXAMPLE.format(problem="q1?", solution="A1"))


def test_pool_keeps_the_latest_pool_size_prompts():
    s = _xrpo(pool_size=2)
    s.select(_scored([0, 1, 2], [1.0, 1.0, 1.0], ["a", "b", "c"]), torch.zeros(3, 3), 0.0)
    assert s.pool == [[1, "b"], [2, "c"]]


def test_state_round_trips_through_json_with_the_same_draws_and_hints():
    a = _xrpo(exemplars=1)
    a.next(4)
    a.update([0, 1], [[0.0, 0.0], [1.0, 1.0]])
    a.select(_scored([1], [1.0], ["sol"]), torch.zeros(1, 3), 0.0)
    b = _xrpo(exemplars=1)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.failed == {0} and b.pool == [[1, "sol"]]
    assert [a.next(3) for _ in range(3)] == [b.next(3) for _ in range(3)]
    assert a.decorate([0, 5]) == b.decorate([0, 5]) and a.decorate([0])[0].tag == "icl"
    with pytest.raises(ValueError, match="same data settings"):
        _xrpo(n=1).load_state_dict(a.state_dict())


def test_kwargs_are_checked_by_key():
    with pytest.raises(ValueError, match="sampler.kwargs.n0"):
        _xrpo(n0=1)
    with pytest.raises(ValueError, match="sampler.kwargs.confidence"):
        _xrpo(confidence=1.0)
    with pytest.raises(ValueError, match="hint_template"):
        _xrpo(hint_template="no slot")
    with pytest.raises(ValueError, match="n0=6 .* rollout.n=4"):
        SAMPLERS["xrpo"].check_rollouts(4, {"n0": 6})


def test_problem_text_reads_strings_and_the_last_user_message():
    assert problem_text("2+2?") == "2+2?"
    assert problem_text([{"role": "system", "content": "s"}, {"role": "user", "content": "u1"},
                         {"role": "assistant", "content": "a"}, {"role": "user", "content": "u2"}]) == "u2"
