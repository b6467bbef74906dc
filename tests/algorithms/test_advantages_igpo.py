"""IGPO on hand-computed trajectories, and its answer log-prob forward against a direct per-turn forward."""

import math
from types import SimpleNamespace

import pytest
import torch

from postrl.algorithms import ADVANTAGES
from postrl.algorithms.advantages_igpo import answer_logprob_per_turn, fill_answer_logprobs

from algorithms.agent_cases import ACTIONS, GROUPS, RETURNS, STATES, STEP_REWARDS, concat_batch, per_turn_values


def _batch(beliefs):
    """beliefs[b] = pi_k (probability of the answer before turn k, k = 0, 1, 2) of episode b."""
    b = concat_batch(ACTIONS, STEP_REWARDS, RETURNS, STATES, GROUPS)
    b.metadata["answer_logprob_per_turn"] = [[math.log(p) for p in row] for row in beliefs]
    return b


BELIEFS = [[0.1, 0.3, 0.6], [0.1, 0.1, 0.2], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]


def test_igpo_hand_computed():
    adv = ADVANTAGES["igpo"](_batch(BELIEFS), gamma=1.0)
    # group 0 turn rewards: ep 0: IG 0.3-0.1 = 0.2, 0.6-0.3 = 0.3, outcome 1; ep 1: IG 0, 0.1, outcome 0
    # r = [0.2, 0.3, 1, 0, 0.1, 0]: mean 0.266667, population std sqrt(0.713333/6) = 0.344803
    # r~ = [-0.193347, 0.096674, 2.126826, -0.773389, -0.483368, -0.773389]; A_k = r~_k + A_{k+1}
    assert per_turn_values(adv, 0) == pytest.approx([2.030153, 2.223500, 2.126826], abs=1e-4)
    assert per_turn_values(adv, 1) == pytest.approx([-2.030146, -1.256757, -0.773389], abs=1e-4)
    # group 1: no information gain, r = [0, 0, 1, 0, 0, 0]: mean 1/6, std 0.372678 -> 2.236068 / -0.447214
    assert per_turn_values(adv, 2) == pytest.approx([1.341641, 1.788854, 2.236068], abs=1e-4)
    assert per_turn_values(adv, 3) == pytest.approx([-1.341641, -0.894427, -0.447214], abs=1e-4)
    assert torch.all(adv[:, [2, 5]] == 0)  # observation tokens (loss_mask 0) get nothing


def test_igpo_discount_and_ig_coef():
    adv = ADVANTAGES["igpo"](_batch(BELIEFS), gamma=0.5, ig_coef=0.0)
    # ig_coef 0: both groups are r = [0, 0, 1, 0, 0, 0] -> r~ = 2.236068 / -0.447214
    # ep 0: A_2 = 2.236068, A_1 = -0.447214 + 0.5 * 2.236068 = 0.670820, A_0 = -0.447214 + 0.335410 = -0.111803
    assert per_turn_values(adv, 0) == pytest.approx([-0.111803, 0.670820, 2.236068], abs=1e-5)


def test_igpo_needs_the_metadata():
    b = concat_batch(ACTIONS, STEP_REWARDS, RETURNS, STATES, GROUPS)
    with pytest.raises(ValueError, match="answer_logprob_per_turn"):
        ADVANTAGES["igpo"](b)
    b.metadata["answer_logprob_per_turn"] = [[0.0]] * 4
    with pytest.raises(ValueError, match="needs entries 0 and 1"):
        ADVANTAGES["igpo"](b)


def _tiny():
    from postrl.learner.tiny import build_model, build_tokenizer

    torch.manual_seed(0)
    tok = build_tokenizer()
    return build_model(tok, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64), tok


def test_answer_logprob_per_turn_matches_direct_forward():
    model, tok = _tiny()
    model.eval()
    b = concat_batch(ACTIONS[:2], STEP_REWARDS[:2], RETURNS[:2], STATES[:2], [0, 0])
    b.prompt_ids = torch.tensor([[0, 20], [21, 22]])
    b.prompt_mask = torch.tensor([[0, 1], [1, 1]])  # row 0 has a left-padded one-token prompt
    answers, prefix = [[30, 31, 32], [33]], [40]
    got = answer_logprob_per_turn(model, b, answers, prefix, micro_batch=4)
    for row in range(2):
        prompt = b.prompt_ids[row][b.prompt_mask[row] > 0].tolist()
        comp = b.completion_ids[row].tolist()
        expect = []
        for start in (0, 3, 6):  # first token of turns 0, 1, 2 (agent_cases layout)
            seq = prompt + comp[:start] + prefix + answers[row]
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([seq])).logits[0].float(), -1)
            n0 = len(seq) - len(answers[row])
            expect.append(sum(float(logp[p - 1, seq[p]]) for p in range(n0, len(seq))) / len(answers[row]))
        assert got[row] == pytest.approx(expect, abs=1e-4)


def test_fill_answer_logprobs_errors_and_restores_mode():
    model, tok = _tiny()
    model.train()
    b = concat_batch(ACTIONS[:1], STEP_REWARDS[:1], RETURNS[:1], STATES[:1], [0])
    with pytest.raises(ValueError, match="no reference answer"):
        fill_answer_logprobs(b, model, tok, [SimpleNamespace(answer=None, index=7)])
    fill_answer_logprobs(b, model, tok, [SimpleNamespace(answer="42", index=7)], answer_prefix="<answer>")
    assert len(b.metadata["answer_logprob_per_turn"][0]) == 3 and model.training
    assert all(v < 0 for v in b.metadata["answer_logprob_per_turn"][0])
