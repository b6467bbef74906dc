"""The critic: clipped value loss by hand, values at the right positions, it learns, exact checkpoints."""

import math

import pytest
import torch
from helpers import tiny_rl_config
from learner.forward_cases import TOK, grouped_batch

from postrl.learner.checkpoint import save_checkpoint
from postrl.learner.critic import CRITIC_DIR, build_critic, clipped_value_loss, explained_variance


def test_clipped_value_loss_in_each_regime():
    # V_old = 1, R = 2, clip 0.2, so the clipped prediction lies in [0.8, 1.2]
    #   V = 1.1: inside the range, both terms (1.1 - 2)^2 = 0.81            -> 0.5 * 0.81 = 0.405, not clipped
    #   V = 1.5: (1.5 - 2)^2 = 0.25 < (1.2 - 2)^2 = 0.64, the clipped term wins -> 0.5 * 0.64 = 0.32, clipped
    #   V = 0.5: moved away from R: (0.5 - 2)^2 = 2.25 > (0.8 - 2)^2 = 1.44   -> 0.5 * 2.25 = 1.125, not clipped
    v = torch.tensor([1.1, 1.5, 0.5])
    out = clipped_value_loss(v, torch.ones(3), torch.full((3,), 2.0), clip=0.2)
    assert torch.allclose(out.loss, torch.tensor([0.405, 0.32, 1.125]), atol=1e-6)
    assert torch.equal(out.clipped, torch.tensor([0.0, 1.0, 0.0]))
    plain = clipped_value_loss(v, torch.ones(3), torch.full((3,), 2.0), clip=None)
    assert torch.allclose(plain.loss, 0.5 * (v - 2) ** 2)  # 0.405, 0.125, 1.125


def test_clipped_value_loss_gradient_stops_beyond_the_clip():
    v = torch.tensor([1.5], requires_grad=True)  # the clipped term is flat in V past V_old + 0.2
    clipped_value_loss(v, torch.ones(1), torch.full((1,), 2.0), clip=0.2).loss.sum().backward()
    assert v.grad.item() == 0.0


def test_explained_variance_of_a_perfect_and_a_constant_critic():
    r = torch.tensor([[1.0, 2.0, 3.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the masked 9 is ignored
    assert explained_variance(r, r, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(r, 2.0), r, mask) == pytest.approx(0.0)
    assert math.isnan(explained_variance(r, torch.ones_like(r), mask))  # returns without spread


def _critic(tmp_path, **overrides):
    cfg = tiny_rl_config(tmp_path, **{"algorithm.preset": "ppo", "train.micro_batch_size": 3, **overrides})
    return build_critic(cfg, TOK, torch.device("cpu"))


def _batch():
    return grouped_batch(0, [2, 2, 1], [3, 5, 4], T=6, min_len=2)


def test_head_starts_at_zero_and_backbone_is_the_policys(tmp_path):
    from postrl.learner.models import load_model

    critic = _critic(tmp_path)
    assert critic.model.score.weight.abs().sum() == 0 and critic.model.score.bias.abs().sum() == 0
    values, last = critic.values(_batch())
    assert values.abs().sum() == 0 and last.abs().sum() == 0
    policy = load_model(tiny_rl_config(tmp_path).model, TOK, torch.device("cpu"))
    assert all(torch.equal(v, policy.model.state_dict()[k]) for k, v in critic.model.model.state_dict().items())


def test_values_are_read_before_each_token_and_zero_on_masked_tokens(tmp_path):
    critic = _critic(tmp_path)
    torch.nn.init.normal_(critic.model.score.weight, std=1.0)
    batch = _batch()
    batch.loss_mask[0, 1] = 0  # a tool token
    values, last = critic.values(batch)
    # reference: one forward per row without padding; V(s_t) at position P-1+t, V(s_L) at P-1+L
    for i in range(batch.size):
        prompt = batch.prompt_ids[i][batch.prompt_mask[i] > 0]
        L = int(batch.completion_mask[i].sum())
        ids = torch.cat([prompt, batch.completion_ids[i, :L]])[None]
        with torch.no_grad():
            v = critic.model(input_ids=ids).logits[0, len(prompt) - 1:, 0]
        assert torch.allclose(values[i, :L], v[:L] * batch.loss_mask[i, :L], atol=1e-5)
        assert torch.allclose(last[i], v[L], atol=1e-5)
        assert values[i, L:].abs().sum() == 0
    assert values[0, 1] == 0


def test_a_few_updates_on_a_fixed_batch_reduce_the_value_loss(tmp_path):
    critic = _critic(tmp_path, **{"critic.lr": 1e-2})
    batch = _batch()
    returns = torch.tensor([1.0, -1.0, 0.5, 2.0, -0.5])[:, None] * batch.loss_mask  # a target per row

    def mse():
        v = critic.values(batch).values
        return float(((v - returns) ** 2 * batch.loss_mask).sum() / batch.loss_mask.sum())

    before = mse()
    for step in range(8):  # each call is one PPO-style round: clipped around the values it started from
        old = critic.values(batch).values
        metrics = critic.train_on_batch(batch, returns, old, epochs=2, mini_batches=2, seed=step)
    assert mse() < 0.5 * before, (before, mse())
    assert {"value_loss", "value_clip_frac", "explained_variance", "values/mean", "returns/mean",
            "critic/grad_norm", "critic/lr"} <= set(metrics)


def test_value_mask_limits_the_tokens_the_critic_learns_from(tmp_path):
    critic = _critic(tmp_path)
    batch = _batch()
    before = critic.state_dict()
    metrics = critic.train_on_batch(batch, torch.ones_like(batch.loss_mask), torch.zeros_like(batch.loss_mask),
                                    mask=torch.zeros_like(batch.loss_mask))
    assert all(torch.equal(v, before[k]) for k, v in critic.state_dict().items())  # nothing to learn: no update
    assert "value_loss" not in metrics


def test_checkpoint_round_trip_gives_identical_values_and_optimizer(tmp_path):
    critic = _critic(tmp_path / "a", **{"critic.lr": 1e-2})
    batch = _batch()
    returns = torch.ones_like(batch.loss_mask)
    critic.train_on_batch(batch, returns, critic.values(batch).values)
    path = save_checkpoint(tmp_path, 1, model=critic.model, tokenizer=TOK, extra_dirs={CRITIC_DIR: critic.save})
    assert (path / CRITIC_DIR / "model.safetensors").exists()
    assert not list((tmp_path / "checkpoints").glob(".tmp*"))  # written inside the atomic temporary

    other = _critic(tmp_path / "b", **{"critic.lr": 1e-2})
    other.load(path / CRITIC_DIR)
    assert torch.equal(critic.values(batch).values, other.values(batch).values)
    assert torch.equal(critic.values(batch).last, other.values(batch).last)
    # the same next update from both: optimizer moments and schedule came back too
    critic.train_on_batch(batch, returns, critic.values(batch).values)
    other.train_on_batch(batch, returns, other.values(batch).values)
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in critic.state_dict().items())


def test_a_saved_critic_loads_as_critic_name_or_path_and_keeps_its_head(tmp_path):
    critic = _critic(tmp_path / "a")
    torch.nn.init.normal_(critic.model.score.weight, std=1.0)
    critic.save(tmp_path / "saved")
    again = _critic(tmp_path / "b", **{"critic.name_or_path": str(tmp_path / "saved")})
    batch = _batch()
    assert torch.allclose(critic.values(batch).values, again.values(batch).values, atol=1e-6)


def test_a_causal_lm_directory_gives_its_backbone_and_a_zero_head(tmp_path):
    # the route a hub model or an SFT output takes: AutoModelForTokenClassification on LM weights
    from learner.forward_cases import tiny

    lm = tiny("llama", seed=3)
    lm.save_pretrained(tmp_path / "lm")
    critic = _critic(tmp_path, **{"critic.name_or_path": str(tmp_path / "lm")})
    assert type(critic.model).__name__ == "LlamaForTokenClassification"
    assert critic.model.score.weight.abs().sum() == 0
    assert all(torch.equal(v, lm.model.state_dict()[k]) for k, v in critic.model.model.state_dict().items())


def test_loading_a_checkpoint_without_a_critic_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no critic"):
        _critic(tmp_path).load(tmp_path / "nowhere")
