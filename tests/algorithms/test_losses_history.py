"""HCPO loss: hand-computed values, gradient routing between branches, and the learner's second forward."""

import copy
import dataclasses
import math

import pytest
import torch

from postrl.algorithms import POLICY_LOSSES
from postrl.algorithms.policy_losses import LossInputs
from postrl.config import OptimSection
from postrl.learner.learner import Learner, LossSpec
from postrl.learner.logprobs import completion_logprobs
from postrl.learner.tiny import build_model, build_tokenizer
from postrl.rollout.batch import RolloutBatch

hcpo = POLICY_LOSSES["hcpo"]


def inputs():
    full = torch.tensor([[math.log(0.5), math.log(0.25)]], requires_grad=True)
    comp = torch.tensor([[math.log(0.25), math.log(0.5)]], requires_grad=True)
    inp = LossInputs(full, full.detach(), torch.ones(1, 2), torch.ones(1, 2), alt_logprobs=comp)
    return full, comp, inp


def test_hand_computed_value_and_gradients():
    full, comp, inp = inputs()
    out = hcpo(inp, align_coef=0.1)
    # ratio 1 on both branches: PPO = -A = -1 each. k3 with r = log pi_full - log pi_comp:
    #   t0: r = ln 2  -> 2 - 0.693147 - 1 = 0.306853 ; t1: r = -ln 2 -> 0.5 + 0.693147 - 1 = 0.193147
    assert out.loss.tolist()[0] == pytest.approx([-2 + 0.0306853, -2 + 0.0193147], abs=1e-6)
    assert float(out.metrics["hcpo_align_kl"]) == pytest.approx((0.306853 + 0.193147) / 2, abs=1e-6)
    assert float(out.metrics["hcpo_logp_gap"]) == pytest.approx(0.0, abs=1e-6)  # (ln2 - ln2) / 2
    out.loss.sum().backward()
    # full branch: only its policy gradient (-A * ratio = -1); the alignment target is detached
    assert full.grad.tolist()[0] == pytest.approx([-1.0, -1.0])
    # compressed branch: -1 + 0.1 * dk3/dcomp, dk3/dcomp = 1 - exp(r): t0 1 - 2 = -1, t1 1 - 0.5 = 0.5
    assert comp.grad.tolist()[0] == pytest.approx([-1.1, -0.95])


def test_identical_branches_have_zero_alignment_and_twice_ppo():
    full = torch.tensor([[-1.0, -2.0]])
    adv = torch.tensor([[0.5, -1.0]])
    inp = LossInputs(full, full - 0.1, adv, torch.ones(1, 2), alt_logprobs=full.clone(),
                     old_alt_logprobs=full - 0.1)
    out = hcpo(inp)
    ppo = POLICY_LOSSES["ppo_clip"](LossInputs(full, full - 0.1, adv, torch.ones(1, 2))).loss
    assert torch.allclose(out.loss, 2 * ppo) and float(out.metrics["hcpo_align_kl"]) == 0.0


def test_missing_compressed_branch_is_a_clear_error():
    full = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="alt_prompt_ids"):
        hcpo(LossInputs(full, full, full, torch.ones(1, 2)))


def test_registry_entry_asks_for_the_second_forward():
    assert POLICY_LOSSES.get("hcpo").needs == ("alt_context",) and POLICY_LOSSES.get("hcpo").arxiv == "2512.01763"


@pytest.fixture(scope="module")
def tiny():
    tok = build_tokenizer()
    model = build_model(tok, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    full = [enc("<|user|>go<|assistant|>a0<|end|><|tool|>s1 long obs<|assistant|>"), enc("<|user|>go<|assistant|>")]
    comp = [enc("<|user|>go<|assistant|>a0<|end|><|tool|>[o]<|assistant|>"), enc("<|user|>go<|assistant|>")]
    batch = RolloutBatch.from_token_lists(full, [enc("a1"), enc("a0x")], tok.pad_token_id, group_ids=[0, 0],
                                          metadata={"alt_prompt_ids": comp})
    return tok, model, batch


def test_learner_second_forward_matches_the_compressed_prompt(tiny, monkeypatch):
    tok, model, batch = tiny
    adv = torch.tensor([[1.0, 1.0, 0.0], [-1.0, -1.0, -1.0]]) * batch.loss_mask
    seen = {}

    def spy(inp, **kw):
        seen["alt"], seen["old_alt"] = inp.alt_logprobs.detach().clone(), inp.old_alt_logprobs
        return hcpo(inp, **kw)

    monkeypatch.setitem(POLICY_LOSSES._entries, "hcpo", dataclasses.replace(POLICY_LOSSES.get("hcpo"), fn=spy))
    learner = Learner(copy.deepcopy(model), None, OptimSection(lr=1e-3), total_updates=1, device=torch.device("cpu"))
    m = learner.train_on_batch(copy.deepcopy(batch), adv, LossSpec(loss="hcpo", needs=("alt_context",)))
    comp_batch = RolloutBatch.from_token_lists(batch.metadata["alt_prompt_ids"],
                                               [batch.completion_ids[i][batch.completion_mask[i].bool()].tolist()
                                                for i in range(2)], tok.pad_token_id)
    with torch.no_grad():
        expect = completion_logprobs(model, comp_batch)[0] * batch.loss_mask
    assert torch.allclose(seen["alt"] * batch.loss_mask, expect, atol=1e-5)
    assert seen["old_alt"] is None  # single on-policy update: the loss detaches the current one
    # row 0's prompts differ (observation dropped), row 1's are identical: a nonzero alignment KL
    assert m["hcpo_align_kl"] > 0 and m["grad_norm"] > 0


def test_several_updates_recompute_the_compressed_old_logprobs_once(tiny):
    tok, model, batch = tiny
    b = copy.deepcopy(batch)
    learner = Learner(copy.deepcopy(model), None, OptimSection(lr=1e-2), total_updates=2, device=torch.device("cpu"))
    learner.train_on_batch(b, b.loss_mask.clone(), LossSpec(loss="hcpo", needs=("alt_context",)), epochs=2)
    assert b.old_alt_logprobs is not None
    assert not torch.allclose(b.old_alt_logprobs, b.old_logprobs)  # different prompts, different log-probs
