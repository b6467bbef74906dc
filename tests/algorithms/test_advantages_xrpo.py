"""xrpo_novelty (algorithms/advantages_xrpo.py): GRPO advantages sharpened for correct, unlikely answers."""

import math

import pytest
import torch
from helpers import make_batch

from postrl.algorithms import ADVANTAGES


def _batch(rewards, groups, token_logprob):
    """Rows of 3 loss tokens, each token with the row's given log-prob."""
    batch = make_batch(rewards, groups)
    batch.behavior_logprobs = torch.tensor(token_logprob)[:, None] * batch.loss_mask
    return batch


def test_a_correct_answer_below_its_groups_likelihood_gets_more_advantage():
    # rewards 1 1 0 0: GRPO A = +-0.5 / std 0.57735 (unbiased) = +-0.86603
    # l = -0.5, -1.5, -1.0, -1.0; group mean -1.0; novelty = clip(-1.0 - l, 0, 1) = 0, 0.5, 0, 0
    batch = _batch([1.0, 1.0, 0.0, 0.0], [0, 0, 0, 0], [-0.5, -1.5, -1.0, -1.0])
    adv = ADVANTAGES["xrpo_novelty"](batch)
    a = 0.5 / math.sqrt(1 / 3)
    assert adv[:, 0].tolist() == pytest.approx([a, a * 1.5, -a, -a], abs=1e-5)  # only row 1 sharpened: x (1 + 0.5)
    assert torch.equal(adv == 0, batch.loss_mask.expand_as(adv) == 0)  # zero exactly off the loss tokens
    half = ADVANTAGES["xrpo_novelty"](batch, lam=0.5)
    assert half[1, 0].item() == pytest.approx(a * 1.25, abs=1e-5)


def test_novelty_is_clipped_and_wrong_answers_are_never_sharpened():
    # l = -0.5, -3.0, -1.0, -4.0: mean -2.125; novelty row 1 = 0.875 (clipped to max_novelty 0.5),
    # row 3 = 1.875 but it is wrong: unchanged
    batch = _batch([1.0, 1.0, 0.0, 0.0], [0, 0, 0, 0], [-0.5, -3.0, -1.0, -4.0])
    adv = ADVANTAGES["xrpo_novelty"](batch, max_novelty=0.5)[:, 0]
    a = 0.5 / math.sqrt(1 / 3)
    assert adv.tolist() == pytest.approx([a, a * 1.5, -a, -a], abs=1e-5)  # row 1: 0.875 clipped to 0.5


def test_all_correct_groups_and_groups_of_one_stay_zero_and_groups_may_differ_in_size():
    batch = _batch([1.0, 1.0, 1.0, 1.0, 0.0, 1.0], [0, 0, 1, 2, 2, 2], [-0.1, -3.0, -2.0, -0.2, -0.1, -2.0])
    adv = ADVANTAGES["xrpo_novelty"](batch)[:, 0]
    assert adv[:3].tolist() == [0.0, 0.0, 0.0]
    # group 2 (3 rows) rewards 1 0 1: mean 2/3, std 0.57735 -> A = 0.57735, -1.1547, 0.57735
    # l mean = -0.76667: novelty row 5 = clip(-0.76667 + 2.0) = 1 -> x2; row 3 0
    assert adv[3:].tolist() == pytest.approx([0.57735, -1.1547, 1.1547], abs=1e-4)


def test_negative_settings_are_refused():
    with pytest.raises(ValueError, match="advantage_kwargs"):
        ADVANTAGES["xrpo_novelty"](_batch([1.0, 0.0], [0, 0], [-1.0, -1.0]), lam=-1.0)
