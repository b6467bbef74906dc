"""HAPO's history-aware length reward against hand-computed values, plus its invariants."""

import json

import pytest
import torch

from postrl.rewards.length import LENGTH_SHAPERS, LengthInputs

hapo = LENGTH_SHAPERS["hapo"]


def _inputs(rewards, correct, lengths, rows, groups=None):
    B = len(rewards)
    return LengthInputs(rewards=torch.tensor(rewards, dtype=torch.float32), correct=torch.tensor(correct),
                        lengths=torch.tensor(lengths, dtype=torch.float32), truncated=torch.zeros(B, dtype=torch.bool),
                        prompt_index=torch.tensor(rows), group_ids=torch.tensor(groups or rows))


def test_cosine_reward_relative_to_the_history_by_hand():
    # prompt 0 has h = 10; f = cos(min(pi/2 * len / 10, pi))
    #   len 5,  correct:   cos(pi/4)  =  0.70711          -> r' = 1 + 0.70711
    #   len 10, correct:   cos(pi/2)  =  0                -> r' = 1
    #   len 15, correct:   cos(3pi/4) = -0.70711, floor -0.7 -> r' = 1 - 0.7 = 0.3
    #   len 20, incorrect: cos(pi)    = -1, min(-1, 0)   -> r' = 0 - 1 = -1
    #   len 5,  incorrect: min(0.70711, 0) = 0            -> r' = 0  (short wrong answers are not rewarded)
    # prompt 1 has no history yet: r' = r
    state = {"h": {"0": 10.0}}
    x = _inputs([1, 1, 1, 0, 0, 1, 0], [True, True, True, False, False, True, False], [5, 10, 15, 20, 5, 8, 3],
                [0, 0, 0, 0, 0, 1, 1])
    new, metrics = hapo(x, state)
    assert torch.allclose(new, torch.tensor([1.70711, 1.0, 0.3, -1.0, 0.0, 1.0, 0.0]), atol=1e-5)
    assert metrics["hapo/known_frac"] == pytest.approx(5 / 7)
    # after the step: h_0 = min(10, 5, 10, 15) = 5; h_1 = 8 (its first correct answer); wrong ones never count
    assert state["h"] == {"0": 5.0, "1": 8.0}


def test_the_history_is_updated_after_the_rewards_of_the_step():
    # both completions of prompt 0 are compared with the old h = 10, not with this step's 4
    state = {"h": {"0": 10.0}}
    new, _ = hapo(_inputs([1, 1], [True, True], [4, 10], [0, 0]), state)
    assert new[1].item() == pytest.approx(1.0)  # len 10 vs h 10: cos(pi/2) = 0
    assert state["h"]["0"] == 4.0
    new, _ = hapo(_inputs([1], [True], [4], [0]), state)  # next step: 4 vs h 4 -> 0
    assert new.item() == pytest.approx(1.0, abs=1e-6)


def test_weight_scales_the_length_term():
    new, _ = hapo(_inputs([1], [True], [5], [0]), {"h": {"0": 10.0}}, weight=0.5)
    assert new.item() == pytest.approx(1 + 0.5 * 0.707107, abs=1e-5)


def test_linear_form_by_hand():
    # h = 10, tolerance 0.1 -> the flat zone is [10, 11)
    #   correct   4    -> 1 - 4/10 = 0.6        correct 10.5 -> 0
    #   correct   13   -> -(13 - 11)/10 = -0.2   correct 21   -> max(-0.7, -1.0) = -0.7
    #   incorrect 4    -> 0                      incorrect 16 -> -0.5     incorrect 31 -> max(-1, -2) = -1
    x = _inputs([0] * 7, [True, True, True, True, False, False, False], [4, 10.5, 13, 21, 4, 16, 31], [0] * 7)
    new, _ = hapo(x, {"h": {"0": 10.0}}, form="linear")
    assert torch.allclose(new, torch.tensor([0.6, 0.0, -0.2, -0.7, 0.0, -0.5, -1.0]), atol=1e-6)


def test_mean_aggregate_keeps_a_count_weighted_running_mean():
    # h = 10 from 1 correct answer; this step's correct lengths 4 and 7: h = (10 * 1 + 4 + 7) / 3 = 7
    state = {"h": {"0": 10.0}, "count": {"0": 1}}
    hapo(_inputs([1, 1, 0], [True, True, False], [4, 7, 2], [0, 0, 0]), state, aggregate="mean")
    assert state["h"]["0"] == pytest.approx(7.0) and state["count"]["0"] == 3
    fresh = {}
    hapo(_inputs([1, 1], [True, True], [6, 8], [3, 3]), fresh, aggregate="mean")
    assert fresh["h"]["3"] == pytest.approx(7.0) and fresh["count"]["3"] == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_correct_answer_outranks_every_wrong_one_with_weight_at_most_one(seed):
    g = torch.Generator().manual_seed(seed)
    B = 64
    lengths = torch.randint(1, 200, (B,), generator=g).float()
    correct = torch.rand(B, generator=g) < 0.5
    rows = torch.randint(0, 4, (B,), generator=g)
    state = {"h": {str(r): float(torch.randint(1, 100, (1,), generator=g)) for r in range(4)}}
    x = LengthInputs(correct.float(), correct, lengths, torch.zeros(B, dtype=torch.bool), rows, rows)
    new, _ = hapo(x, state, weight=1.0)
    assert new[correct].min() >= 0.3 - 1e-6 and new[~correct].max() <= 0.0


def test_state_round_trips_through_json_and_gives_the_same_rewards():
    state = {}
    hapo(_inputs([1, 1, 0], [True, True, False], [6, 9, 3], [0, 1, 0]), state)
    restored = json.loads(json.dumps(state))
    x = _inputs([1, 0, 1], [True, False, True], [4, 12, 9], [0, 0, 1])
    assert torch.equal(hapo(x, state)[0], hapo(x, restored)[0]) and state == restored


def test_bad_hyper_parameters_are_named():
    with pytest.raises(ValueError, match="form 'cosine' or 'linear'"):
        hapo(_inputs([1], [True], [3], [0]), {}, form="sine")
    with pytest.raises(ValueError, match="correct_floor <= 0"):
        hapo(_inputs([1], [True], [3], [0]), {}, correct_floor=0.5)
