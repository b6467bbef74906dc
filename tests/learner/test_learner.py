"""Learner: accumulation equals one big batch, on-policy ratio is 1, KL and skips behave."""

import copy

import pytest
import torch

from postrl.config import OptimSection
from postrl.learner.learner import Learner, LossSpec, build_scheduler
from postrl.learner.tiny import build_model, build_tokenizer
from postrl.rollout.engines import SamplingParams
from postrl.rollout.hf_engine import HFEngine


@pytest.fixture(scope="module")
def setup():
    tok = build_tokenizer()
    model = build_model(tok, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in ["1+1=", "12+34=", "7=", "9+9="]]
    batch = HFEngine(model, tok).generate(prompts, SamplingParams(n=2, max_new_tokens=5), seed=0)
    adv = torch.randn(batch.size, 1).expand(-1, batch.completion_ids.shape[1]) * batch.loss_mask
    return tok, model, batch, adv


def _grads(model, batch, adv, spec, micro):
    m = copy.deepcopy(model)
    learner = Learner(m, None, OptimSection(lr=1e-3, micro_batch_size=micro), total_updates=1,
                      device=torch.device("cpu"))
    for group in learner.optimizer.param_groups:  # keep the gradient, leave the weights
        group["lr"] = 0.0
    learner.train_on_batch(copy.deepcopy(batch), adv, spec)
    return [p.grad.clone() for p in m.parameters()]


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_micro_batch_accumulation_equals_one_batch(setup, agg):
    tok, model, batch, adv = setup
    spec = LossSpec(agg=agg, max_tokens=5)
    for a, b in zip(_grads(model, batch, adv, spec, micro=8), _grads(model, batch, adv, spec, micro=3)):
        assert torch.allclose(a, b, atol=1e-6)


def test_single_on_policy_update_has_ratio_one_and_no_clipping(setup):
    tok, model, batch, adv = setup
    learner = Learner(copy.deepcopy(model), None, OptimSection(lr=1e-3), total_updates=1, device=torch.device("cpu"))
    m = learner.train_on_batch(copy.deepcopy(batch), adv, LossSpec())
    assert m["ratio_mean"] == 1.0 and m["clip_frac"] == 0.0 and m["grad_norm"] > 0


def test_several_updates_recompute_old_logprobs_once_and_clip(setup):
    tok, model, batch, adv = setup
    b = copy.deepcopy(batch)
    learner = Learner(copy.deepcopy(model), None, OptimSection(lr=5e-2), total_updates=4, device=torch.device("cpu"))
    m = learner.train_on_batch(b, adv * 10, LossSpec(), epochs=2, mini_batches=2)
    assert b.old_logprobs is not None and torch.allclose(b.old_logprobs, b.behavior_logprobs, atol=1e-5)
    assert m["approx_kl_old"] > 0  # later mini-batches see a moved policy


def test_kl_in_the_loss_pulls_towards_the_reference(setup):
    tok, model, batch, adv = setup
    policy = copy.deepcopy(model)
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    learner = Learner(policy, ref, OptimSection(lr=1e-3), total_updates=1, device=torch.device("cpu"))
    b = copy.deepcopy(batch)
    b.ref_logprobs = learner.logprobs(b, reference=True)
    m = learner.train_on_batch(b, torch.zeros_like(adv), LossSpec(kl_coef=0.1))
    assert m["kl"] > 0 and m["loss"] > 0 and m["grad_norm"] > 0  # zero advantage: only KL drives it


def test_nonfinite_gradient_skips_the_update(setup):
    tok, model, batch, adv = setup
    m = copy.deepcopy(model)
    learner = Learner(m, None, OptimSection(lr=1e-3), total_updates=1, device=torch.device("cpu"))
    before = [p.clone() for p in m.parameters()]
    out = learner.train_on_batch(copy.deepcopy(batch), adv * float("nan"), LossSpec())
    assert learner.skipped_nonfinite and not torch.isfinite(torch.tensor(out["grad_norm"]))
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))


def test_schedules_warm_up_then_decay():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = build_scheduler(opt, OptimSection(lr=1.0, warmup_steps=2, schedule="cosine", min_lr_ratio=0.1), 10)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and abs(lrs[2] - 1.0) < 1e-9
    assert lrs[-1] < lrs[5] < lrs[2] and min(lrs[2:]) >= 0.1


def test_entropy_bonus_adds_a_gradient_and_bf16_autocast_runs(setup):
    tok, model, batch, adv = setup
    zero = torch.zeros_like(adv)
    plain = Learner(copy.deepcopy(model), None, OptimSection(lr=1e-3), total_updates=1, device=torch.device("cpu"))
    assert plain.train_on_batch(copy.deepcopy(batch), zero, LossSpec())["grad_norm"] == 0.0
    bonus = Learner(copy.deepcopy(model), None, OptimSection(lr=1e-3, bf16=True), total_updates=1,
                    device=torch.device("cpu"))
    m = bonus.train_on_batch(copy.deepcopy(batch), zero, LossSpec(entropy_coef=0.01))
    assert bonus.bf16 and m["grad_norm"] > 0 and m["loss"] < 0  # loss = -coef * entropy
