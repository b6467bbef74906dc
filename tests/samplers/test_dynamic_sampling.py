"""DAPO dynamic sampling: the keep rule, the refill count, the top-up after max_rounds, resume."""

import pytest
import torch
from helpers import make_batch

from postrl.config import ConfigError, RLConfig, resolve
from postrl.rewards import RewardResult
from postrl.samplers import SAMPLERS
from postrl.trainers.collect import Scored, refill


def _scored(rewards_G, first_row=0):
    """Groups of the given rewards; idx numbers the prompts from `first_row`."""
    rewards = [r for g in rewards_G for r in g]
    groups = [g for g, rs in enumerate(rewards_G) for _ in rs]
    batch = make_batch(rewards, groups)
    total = torch.tensor(rewards)
    return Scored(list(range(first_row, first_row + len(rewards_G))), batch,
                  RewardResult(total, {"r": total.clone()}))


def test_keep_rule_drops_groups_with_equal_rewards():
    s = SAMPLERS["dynamic_sampling"](10, 0)
    assert s.keep([[1, 0, 1], [1, 1, 1], [0, 0, 0], [0.2, 0.3, 0.2]]) == [True, False, False, True]
    assert s.filters_groups and s.max_rounds == 10
    assert not SAMPLERS["uniform"](10, 0).filters_groups


def test_refill_draws_exactly_the_missing_groups_until_the_batch_is_full():
    keep = SAMPLERS["dynamic_sampling"](10, 0).keep
    first = _scored([[1, 0], [1, 1], [0, 1], [0, 0]])           # 2 of 4 informative
    extra = iter([_scored([[1, 1], [1, 0]], first_row=4),        # round 2: asked for 2, 1 informative
                  _scored([[0, 1]], first_row=6)])               # round 3: asked for 1, 1 informative
    asked = []

    def more(k, round_):
        asked.append((k, round_))
        return next(extra)

    out, info = refill(first, more, keep, want=4, max_rounds=10)
    assert asked == [(2, 1), (1, 2)]
    assert info == {"dynamic_sampling/rounds": 3.0, "dynamic_sampling/kept_groups": 4.0,
                    "dynamic_sampling/generated_groups": 7.0}
    assert out.idx == [0, 2, 5, 6]                               # kept groups, in generation order
    assert out.batch.group_ids.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert out.result.total.tolist() == [1, 0, 0, 1, 1, 0, 0, 1]
    assert out.result.per_function["r"].tolist() == out.result.total.tolist()
    assert all(max(g) > min(g) for g in out.rewards_G())


def test_after_max_rounds_the_batch_is_topped_up_with_dropped_groups():
    keep = SAMPLERS["dynamic_sampling"](10, 0).keep
    first = _scored([[1, 1], [0, 1], [0, 0]])
    out, info = refill(first, lambda k, r: _scored([[1, 1]] * k, first_row=3), keep, want=3, max_rounds=2)
    assert info["dynamic_sampling/rounds"] == 2 and info["dynamic_sampling/kept_groups"] == 1
    assert info["dynamic_sampling/generated_groups"] == 5       # 3 + the 2 missing
    assert out.idx == [1, 0, 2]                                  # informative first, then dropped ones
    assert out.batch.size == 6


def test_a_batch_with_nothing_to_drop_passes_through_untouched():
    first = _scored([[1, 0], [0, 1]])
    out, info = refill(first, lambda k, r: pytest.fail("no refill expected"),
                       SAMPLERS["dynamic_sampling"](10, 0).keep, want=2, max_rounds=10)
    assert out is first and info["dynamic_sampling/rounds"] == 1


def test_sampler_state_covers_refill_draws():
    a = SAMPLERS["dynamic_sampling"](7, 3)
    a.next(4), a.next(5)  # a step's draw and a refill across an epoch boundary
    b = SAMPLERS["dynamic_sampling"](7, 3, max_rounds=2)
    b.load_state_dict(a.state_dict())
    assert a.next(6) == b.next(6)


def test_config_errors_where_dynamic_sampling_cannot_work():
    with pytest.raises(ConfigError, match="max_off_policy_steps"):
        resolve(RLConfig, {"sampler": {"name": "dynamic_sampling"}, "distributed": {"max_off_policy_steps": 1}})
    with pytest.raises(ConfigError, match="rollout.n >= 2"):
        resolve(RLConfig, {"sampler": {"name": "dynamic_sampling"}, "rollout": {"n": 1}})
    with pytest.raises(ConfigError, match="max_rounds"):
        resolve(RLConfig, {"sampler": {"name": "dynamic_sampling", "kwargs": {"max_round": 3}}})
