"""The Beta table shared by vade, mopps and spo_prioritized: counting, shrinking, Thompson draws, sparse state."""

import json
import math

import pytest

from postrl.samplers.beta import BetaTable, pass_fail
from postrl.samplers.pick import draw_rng


def test_pass_fail_counts_rewards_at_or_above_the_threshold():
    assert pass_fail([1.0, 0.0, 1.0, 0.5], 1.0) == (2, 2)
    assert pass_fail([1.0, 0.0, 1.0, 0.5], 0.5) == (3, 1)


def test_shrink_then_add():
    t = BetaTable(3, 1.0, 2.0)
    t.add(1, 3, 1)                      # (1 + 3, 2 + 1) = (4, 3)
    t.shrink(1, 0.5, 1.0, 2.0)          # (0.5*4 + 0.5*1, 0.5*3 + 0.5*2) = (2.5, 2.5)
    assert (t.alpha[1], t.beta[1]) == (2.5, 2.5) and t.mean(1) == 0.5
    t.shrink(1, 0.25, 0.0, 0.0)         # toward zero: (0.625, 0.625)
    assert (t.alpha[1], t.beta[1]) == (0.625, 0.625)
    assert (t.alpha[0], t.beta[0]) == (1.0, 2.0)


def test_thompson_draws_have_the_beta_mean_and_variance():
    # Beta(4, 2): mean 2/3, variance 4*2 / (6^2 * 7) = 0.0317; 4000 draws: sd of the mean 0.0028
    t = BetaTable(1, 4.0, 2.0)
    rng = draw_rng(0, 0)
    x = [t.thompson([0], rng)[0] for _ in range(4000)]
    mean = sum(x) / len(x)
    var = sum((v - mean) ** 2 for v in x) / len(x)
    assert abs(mean - 2 / 3) < 0.012 and abs(var - 8 / 252) < 0.004


def test_state_holds_only_updated_rows_and_round_trips_through_json():
    t = BetaTable(5, 1.0, 1.0)
    t.add(3, 1, 0)
    t.shrink(3, 0.3, 1.0, 1.0)
    t.add(3, 0.1, 2)
    state = json.loads(json.dumps(t.state_dict()))
    assert state["rows"] == [3]
    u = BetaTable(5, 1.0, 1.0)
    u.load_state_dict(state, "x")
    assert u.alpha == t.alpha and u.beta == t.beta and u.touched == {3}
    assert math.isclose(u.alpha[3], 0.3 * 2 + 0.7 + 0.1)
    with pytest.raises(ValueError, match="row 4 but the training set has 3 rows"):
        BetaTable(3, 1.0, 1.0).load_state_dict(state, "x")
