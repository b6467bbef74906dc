"""The learner's "vocab_mean" need: the old policy's vocabulary mean once per batch, the current one
per micro-batch, and nothing of it for losses that do not ask."""

import copy

import pytest
import torch

from postrl.config import ConfigError, OptimSection, RLConfig, resolve
from postrl.learner.learner import Learner, LossSpec
from postrl.learner.logprobs import completion_logprobs
from postrl.learner.tiny import build_model, build_tokenizer
from postrl.rollout.engines import SamplingParams
from postrl.rollout.hf_engine import HFEngine

ROVER = LossSpec(loss="rover", needs=("vocab_mean",))


@pytest.fixture(scope="module")
def setup():
    tok = build_tokenizer()
    model = build_model(tok, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in ["1+1=", "12+34=", "7="]]
    batch = HFEngine(model, tok).generate(prompts, SamplingParams(n=2, max_new_tokens=5), seed=0)
    adv = torch.randn(batch.size, 1).expand(-1, batch.completion_ids.shape[1]) * batch.loss_mask
    return model, batch, adv


def _learner(model, lr=1e-3, micro=4, **optim):
    return Learner(copy.deepcopy(model), None, OptimSection(lr=lr, micro_batch_size=micro, **optim),
                   total_updates=4, device=torch.device("cpu"))


def test_reused_batch_gets_the_old_vocab_mean_once_before_the_first_update(setup):
    model, batch, adv = setup
    with torch.no_grad():
        _, _, expected = completion_logprobs(model.eval(), batch, with_vocab_mean=True)
    b = copy.deepcopy(batch)
    metrics = _learner(model, lr=5e-2).train_on_batch(b, adv, ROVER, epochs=2, mini_batches=2)
    torch.testing.assert_close(b.old_vocab_mean, expected * b.loss_mask, atol=1e-5, rtol=1e-5)
    assert metrics["next_q_mean"] != 0.0  # later mini-batches bootstrap from a moved policy


def test_a_batch_used_once_on_policy_needs_no_extra_forward_and_has_zero_q(setup):
    model, batch, adv = setup
    b = copy.deepcopy(batch)
    metrics = _learner(model).train_on_batch(b, adv, ROVER)
    assert b.old_vocab_mean is None and b.old_logprobs is None
    assert metrics["q_mean"] == 0.0 and metrics["next_q_mean"] == 0.0 and metrics["grad_norm"] > 0


@pytest.mark.parametrize("forward", ["prefix_sharing", "packing"])
def test_fast_forwards_give_the_plain_forwards_update(setup, forward):
    model, batch, adv = setup
    plain, fast = _learner(model, lr=1e-2), _learner(model, lr=1e-2, **{forward: True})
    a = plain.train_on_batch(copy.deepcopy(batch), adv, ROVER, epochs=2)
    b = fast.train_on_batch(copy.deepcopy(batch), adv, ROVER, epochs=2)
    assert abs(a["loss"] - b["loss"]) < 1e-5 and abs(a["next_q_mean"] - b["next_q_mean"]) < 1e-4
    # Adam's step is ~lr whatever the gradient's size, so float noise in a near-zero gradient moves a
    # weight by up to ~lr; a wrong vocabulary mean would move many by that much, not one by 1e-4
    for p, q in zip(plain.model.parameters(), fast.model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-3, rtol=0)


def test_behaviour_log_probs_cannot_stand_in_for_the_old_policy(setup):
    model, batch, adv = setup
    with pytest.raises(ValueError, match="old_logprobs"):
        _learner(model).train_on_batch(copy.deepcopy(batch), adv, LossSpec(loss="rover", old_logprobs="behavior",
                                                                           needs=("vocab_mean",)))
    with pytest.raises(ConfigError, match="algorithm.old_logprobs"):
        resolve(RLConfig, {"algorithm": {"preset": "rover", "old_logprobs": "behavior"}})
