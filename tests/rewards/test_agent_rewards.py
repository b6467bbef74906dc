"""OTC-PO's tool-efficiency reward on hand-computed tool-call counts."""

import math

import pytest

from postrl.rewards import REWARDS


def test_otc_grpo_peaks_at_the_fewest_calls_of_a_correct_answer():
    prompts = ["p", "p", "p", "q"]
    completions = ["4", "4", "5", "7"]
    out = REWARDS["otc"](prompts, completions, answer=["4", "4", "4", "7"], tool_calls=[1, 2, 3, 0])
    # prompt p: correct with 1 and 2 calls -> n = 1. m = 1: sin(pi/2) = 1;
    # m = 2: f = 2*1*2/3 = 4/3, sin(4/3 * pi/2) = sin(2 pi/3) = 0.866025; m = 3 is wrong -> 0.
    # prompt q: m = n = 0 -> 1
    assert out == pytest.approx([1.0, math.sin(2 * math.pi / 3), 0.0, 1.0], abs=1e-6)


def test_otc_ppo_decays_with_calls_and_alpha_scales():
    out = REWARDS["otc"](["p"] * 3, ["4"] * 3, answer=["4"] * 3, tool_calls=[0, 1, 2], variant="ppo", c=1.0,
                         alpha=2.0)
    # 2 * cos(m pi / (2m + 1)): cos 0 = 1, cos(pi/3) = 0.5, cos(2 pi/5) = 0.309017
    assert out == pytest.approx([2.0, 1.0, 2 * 0.309017], abs=1e-5)


def test_otc_without_tool_calls_is_a_clear_error():
    with pytest.raises(ValueError, match="tool_calls"):
        REWARDS["otc"](["p"], ["4"], answer=["4"])
    assert "tool_calls" in REWARDS.get("otc").needs
