"""`length_schedule`: Kimi k1.5's group length reward with a scheduled coefficient, by hand."""

import pytest
import torch

from postrl.rewards.length import LENGTH_SHAPERS, LengthInputs, scheduled_coef

length_schedule = LENGTH_SHAPERS["length_schedule"]


def _inputs(rewards, correct, lengths, groups, step=0, total_steps=10):
    B = len(rewards)
    return LengthInputs(rewards=torch.tensor(rewards, dtype=torch.float32), correct=torch.tensor(correct),
                        lengths=torch.tensor(lengths, dtype=torch.float32), truncated=torch.zeros(B, dtype=torch.bool),
                        prompt_index=torch.tensor(groups), group_ids=torch.tensor(groups), step=step,
                        total_steps=total_steps)


def test_group_length_reward_by_hand():
    # group 0: lengths 2, 4, 6, 10 -> lambda = 0.5 - (len - 2) / 8 = 0.5, 0.25, 0.0, -0.5
    #   correct, correct, wrong, wrong -> r_len = 0.5, 0.25, min(0, 0) = 0, -0.5
    # group 1: all lengths 5 -> 0;  group 2: a wrong short answer gets min(0, 0.5) = 0, a right long one -0.5
    x = _inputs([1, 1, 0, 0, 1, 0, 0, 1], [True, True, False, False, True, False, False, True],
                [2, 4, 6, 10, 5, 5, 2, 10], [0, 0, 0, 0, 1, 1, 2, 2])
    new, metrics = length_schedule(x, {})
    assert torch.allclose(new, torch.tensor([1.5, 1.25, 0.0, -0.5, 1.0, 0.0, 0.0, 0.5]))
    assert metrics["length_schedule/coef"] == 1.0


def test_coefficient_multiplies_the_length_term():
    x = _inputs([1, 1], [True, True], [2, 10], [0, 0])
    new, _ = length_schedule(x, {}, coef=0.2)
    assert torch.allclose(new, torch.tensor([1.1, 0.9]))


def test_schedules_by_hand():
    # coef 1 from coef_start 0; start_step 2, warmup 4
    lin = [scheduled_coef(s, 1.0, 0.0, "linear", 2, 4) for s in (0, 1, 2, 4, 6, 9)]
    assert lin == pytest.approx([0.0, 0.0, 0.0, 0.5, 1.0, 1.0])
    # cosine: (1 - cos(pi u)) / 2 at u = 1/4, 1/2, 3/4 -> 0.146447, 0.5, 0.853553
    cos = [scheduled_coef(s, 1.0, 0.0, "cosine", 2, 4) for s in (3, 4, 5)]
    assert cos == pytest.approx([0.146447, 0.5, 0.853553], abs=1e-6)
    # Kimi's warm-up: nothing before start_step, then constant
    assert [scheduled_coef(s, 0.5, 0.0, "constant", 3, 1) for s in (0, 2, 3, 8)] == [0.0, 0.0, 0.5, 0.5]


def test_warmup_defaults_to_the_last_step():
    # 11 steps, start 0 -> the ramp ends at step 10; linear at step 5 = 0.5
    x = _inputs([1, 1], [True, True], [2, 10], [0, 0], step=5, total_steps=11)
    new, metrics = length_schedule(x, {}, schedule="linear")
    assert metrics["length_schedule/coef"] == pytest.approx(0.5)
    assert torch.allclose(new, torch.tensor([1.25, 0.75]))


def test_no_length_signal_in_uniform_or_single_completion_groups():
    x = _inputs([1, 0, 1], [True, False, True], [7, 7, 3], [0, 0, 1])
    new, _ = length_schedule(x, {}, coef=3.0)
    assert torch.equal(new, x.rewards)


def test_bad_schedule_is_named():
    with pytest.raises(ValueError, match="schedule constant/linear/cosine"):
        length_schedule(_inputs([1], [True], [1], [0]), {}, schedule="step")
    with pytest.raises(ValueError, match="warmup_steps >= 1"):
        length_schedule(_inputs([1], [True], [1], [0]), {}, warmup_steps=0)
