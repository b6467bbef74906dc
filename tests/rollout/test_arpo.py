"""ARPO: branch decisions on constructed entropies, budget accounting, success replay and its resume."""

import json
import random

import pytest

from postrl.rollout.arpo import (BranchBudget, SuccessReplay, branch_probability, entropy_delta, plan_branches,
                                 should_branch)


def test_entropy_delta_and_probability_by_hand():
    # first k = 3 tokens: (1.0-0.5 + 2.0-0.5 + 0.5-0.5) / 3 = 2/3 ; the extra step token is ignored
    assert entropy_delta([1.0, 2.0, 0.5, 9.0], [0.5, 0.5, 0.5]) == pytest.approx(2 / 3)
    assert branch_probability(2 / 3, alpha=0.5, beta=0.2) == pytest.approx(0.5 + 0.2 * 2 / 3)
    with pytest.raises(ValueError, match="at least one token"):
        entropy_delta([], [1.0])


@pytest.mark.parametrize("step, expected", [
    ([1.2, 1.2], True),    # entropy rose after the tool call: P = 0.5 + 0.2 * 0.2 = 0.54 > 0.5
    ([1.0, 1.0], False),   # unchanged: P = 0.5, not above the threshold
    ([0.4, 0.8], False),   # fell: P = 0.5 + 0.2 * (-0.4) = 0.42
])
def test_branch_only_when_entropy_rises(step, expected):
    assert should_branch(step, [1.0, 1.0]) is expected


def test_threshold_and_weights_move_the_decision():
    # dH = 0.2: P = 0.3 + 1.0 * 0.2 = 0.5 -> not > 0.5 ; with beta 2: 0.7 > 0.5
    assert not should_branch([1.2], [1.0], alpha=0.3, beta=1.0)
    assert should_branch([1.2], [1.0], alpha=0.3, beta=2.0)


def test_budget_accounting_keeps_the_total_fixed():
    budget = BranchBudget(total=16, initial=8, beam=2)
    starts, extra = plan_branches([True, False, True, True, True, True], budget)
    assert starts == [2, 0, 2, 2, 2, 0] and extra == 0  # 8 = M - N spent by the 4th branching point
    assert budget.remaining == 0
    budget = BranchBudget(total=6, initial=4, beam=3)
    starts, extra = plan_branches([True], budget)
    assert starts == [2] and extra == 0  # capped by the budget, not the beam
    budget = BranchBudget(total=6, initial=2, beam=1)
    starts, extra = plan_branches([True, False], budget)
    assert starts == [1, 0] and extra == 3  # budget left when all paths ended: whole trajectories
    assert 2 + sum(starts) + extra == 6
    with pytest.raises(ValueError, match="initial"):
        BranchBudget(total=4, initial=5)


def ep(ret, name):
    return {"return": ret, "prompt_ids": [1, 2], "actions": [[3, 4]], "name": name}


def test_replay_stores_successes_and_evicts_the_oldest():
    buf = SuccessReplay(capacity=2, threshold=1.0)
    buf.record({"t0": [ep(1.0, "a"), ep(0.0, "x")], "t1": [ep(0.5, "y")]})
    buf.record({"t0": [ep(1.0, "b"), ep(2.0, "c")]})
    assert [e["name"] for e in buf.buffers["t0"]] == ["b", "c"]  # "a" evicted
    assert "t1" not in buf.buffers  # 0.5 < threshold: not a success


def test_replay_fills_only_all_failed_groups_with_a_stored_success():
    buf = SuccessReplay(capacity=4, threshold=1.0)
    buf.record({"t0": [ep(1.0, "s")]})
    groups = {"t0": [ep(0.0, "f1"), ep(0.0, "f2")], "t1": [ep(0.0, "g")], "t2": [ep(1.0, "ok"), ep(0.0, "h")]}
    replaced = buf.fill_failed(groups, random.Random(0))
    assert replaced == {"t0": 1}  # t1 has no stored success, t2 already has one
    assert groups["t0"][1]["name"] == "s" and groups["t0"][1]["replayed"] and groups["t0"][0]["name"] == "f1"
    assert [e["name"] for e in groups["t2"]] == ["ok", "h"]


def test_replay_state_round_trips_through_json_and_rejects_other_settings():
    buf = SuccessReplay(capacity=2)
    buf.record({"t0": [ep(1.0, "a")], "t1": [ep(1.0, "b")]})
    state = json.loads(json.dumps(buf.state_dict()))
    again = SuccessReplay(capacity=2)
    again.load_state_dict(state)
    assert again.buffers == buf.buffers
    # resumed buffers make the same replacement draws
    g1, g2 = {"t0": [ep(0.0, "f")]}, {"t0": [ep(0.0, "f")]}
    buf.fill_failed(g1, random.Random(3)), again.fill_failed(g2, random.Random(3))
    assert g1 == g2
    with pytest.raises(ValueError, match="same settings"):
        SuccessReplay(capacity=3).load_state_dict(state)
