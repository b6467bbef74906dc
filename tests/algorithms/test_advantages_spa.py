"""SPA-RL: progress attribution and the progress estimator's online update, by hand."""

import json

import pytest
import torch

from postrl.algorithms import ADVANTAGES
from postrl.algorithms.advantages_spa import fit_step, step_features
from postrl.algorithms.agent_steps import agent_steps

from algorithms.agent_cases import ACTION_POS, ACTIONS, STATES, STEP_REWARDS, concat_batch, per_turn_values

# one prompt, two 3-turn episodes; episode 0 succeeds (R = 1), episode 1 fails (R = 0)
MEAN_LOGP = [[-0.2, -0.4, -0.6], [-1.0, -1.0, -1.0]]


def _batch():
    b = concat_batch(ACTIONS[:2], STEP_REWARDS[:2], [1.0, 0.0], STATES[:2], [0, 0])
    for row, turns in enumerate(MEAN_LOGP):
        for (i, j), lp in zip(ACTION_POS, turns):
            b.behavior_logprobs[row, i] = b.behavior_logprobs[row, j] = lp
    return b


def test_features_are_mean_logp_position_and_tool_call():
    b = _batch()
    b.metadata["tool_calls_per_turn"] = [[1, 0, 0], [0, 0, 2]]
    X = step_features(b, agent_steps(b, "t"))
    expect = [[-0.2, 1 / 3, 1], [-0.4, 2 / 3, 0], [-0.6, 1, 0], [-1.0, 1 / 3, 0], [-1.0, 2 / 3, 0], [-1.0, 1, 1]]
    assert X.flatten().tolist() == pytest.approx(sum(expect, []), abs=1e-6)


def test_attribution_hand_computed():
    state = {"w": [1.0, 0.5, 0.0], "b": 0.1}
    adv = ADVANTAGES["spa_rl"](_batch(), state, lr=0.05, gamma=1.0, fnorm="none")
    # c = mean_logp + 0.5 (k+1)/3 + 0.1: ep 0 [0.066667, 0.033333, 0], ep 1 [-0.733333, -0.566667, -0.4]
    # returns-to-go G: ep 0 [0.1, 0.033333, 0], ep 1 [-1.7, -0.966667, -0.4]; mean over 6 steps -0.488889
    assert per_turn_values(adv, 0) == pytest.approx([0.588889, 0.522222, 0.488889], abs=1e-5)
    assert per_turn_values(adv, 1) == pytest.approx([-1.211111, -0.477778, 0.088889], abs=1e-5)
    assert torch.all(adv[:, [2, 5]] == 0)  # observation tokens
    # the update (after attribution): sums 0.1, -1.7 vs R 1, 0 -> residuals -0.9, -1.7, loss (0.81 + 2.89)/2
    # dL/dc_t = 2 resid / E = resid; grad w = (6.18, -5.2, 0), grad b = -7.8; lr 0.05
    assert state["loss"] == pytest.approx(1.85, abs=1e-6)
    assert state["w"] == pytest.approx([0.691, 0.76, 0.0], abs=1e-6)
    assert state["b"] == pytest.approx(0.49, abs=1e-6) and state["updates"] == 1
    json.dumps(state)  # checkpointable


def test_online_fit_reduces_the_attribution_loss():
    b = _batch()
    steps = agent_steps(b, "t")
    X = step_features(b, steps)
    w, bias, first = fit_step(torch.zeros(3, dtype=torch.float64), 0.0, X, steps, 0.05)
    for _ in range(200):
        w, bias, loss = fit_step(w, bias, X, steps, 0.05)
    assert first == pytest.approx(0.5) and loss < 0.01  # sums of contributions match the returns


def test_std_normalisation_default_and_bad_state():
    adv = ADVANTAGES["spa_rl"](_batch(), {"w": [1.0, 0.5, 0.0], "b": 0.1})
    vals = per_turn_values(adv, 0) + per_turn_values(adv, 1)
    assert sum(vals) == pytest.approx(0.0, abs=1e-5)  # group-normalised over the 6 steps
    with pytest.raises(ValueError, match="weights"):
        ADVANTAGES["spa_rl"](_batch(), {"w": [1.0]})
