"""The reward model: Bradley–Terry loss by hand, the head on the last non-pad token, one rendering,
HF save/load round trip."""

import math

import pytest
import torch
from helpers import TINY_MODEL

from postrl.config import ModelSection
from postrl.learner.reward_model import (RenderSpec, RewardModel, bradley_terry_loss, encode_responses,
                                         forward_rewards, load_reward_model, store_rm_config)
from postrl.learner.tiny import build_model, build_tokenizer

TOK = build_tokenizer()
CPU = torch.device("cpu")


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_bradley_terry_loss_by_hand():
    # r_w - r_l = 2, 0, -1:  -log sigmoid(2) = 0.126928,  -log sigmoid(0) = log 2 = 0.693147,
    #                        -log sigmoid(-1) = 1.313262; pairs 1 and 3 are right/wrong, the tie counts as wrong
    rw, rl = torch.tensor([1.0, 0.5, 0.0]), torch.tensor([-1.0, 0.5, 1.0])
    out = bradley_terry_loss(rw, rl)
    assert torch.allclose(out.bt, torch.tensor([0.126928, 0.693147, 1.313262]), atol=1e-6)
    assert torch.equal(out.loss, out.bt) and torch.equal(out.center, torch.zeros(3))
    assert torch.equal(out.correct, torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(out.margin, torch.tensor([2.0, 0.0, -1.0]))


def test_margin_is_subtracted_from_the_gap():
    # gap 2, margin 1: -log sigmoid(1) = 0.313262; per-pair margins [1, 3]: -log sigmoid(-1) = 1.313262
    rw, rl = torch.tensor([1.0, 1.0]), torch.tensor([-1.0, -1.0])
    assert torch.allclose(bradley_terry_loss(rw, rl, margin=1.0).bt, torch.full((2,), -math.log(_sigmoid(1))))
    out = bradley_terry_loss(rw, rl, margin=torch.tensor([1.0, 3.0]))
    assert torch.allclose(out.bt, torch.tensor([0.313262, 1.313262]), atol=1e-6)
    assert torch.equal(out.correct, torch.ones(2))  # accuracy compares r_w > r_l, without the margin


def test_centring_term_is_coef_times_squared_sum():
    # r_w + r_l = 3 -> 0.01 * 9 = 0.09 on top of -log sigmoid(1) = 0.313262; a centred pair (sum 0) adds 0
    out = bradley_terry_loss(torch.tensor([2.0, 0.5]), torch.tensor([1.0, -0.5]), center_coef=0.01)
    assert torch.allclose(out.center, torch.tensor([0.09, 0.0]), atol=1e-7)
    assert torch.allclose(out.loss, torch.tensor([0.313262 + 0.09, 0.313262]), atol=1e-6)


def test_bradley_terry_gradient_pushes_chosen_up_and_stays_finite_for_huge_gaps():
    rw = torch.tensor([0.0, -200.0], requires_grad=True)
    rl = torch.tensor([0.0, 200.0], requires_grad=True)
    out = bradley_terry_loss(rw, rl)
    out.loss.sum().backward()
    # d/dr_w of -log sigmoid(r_w - r_l) = -(1 - sigmoid(gap)): -0.5 at gap 0, -1 at gap -400
    assert torch.allclose(rw.grad, torch.tensor([-0.5, -1.0])) and torch.allclose(rl.grad, -rw.grad)
    assert torch.isfinite(out.loss).all() and out.loss[1].item() == pytest.approx(400.0)


def _model(**tiny):
    cfg = ModelSection.model_validate({**TINY_MODEL, "tiny": {**TINY_MODEL["tiny"], **tiny}})
    return load_reward_model("tiny", cfg, TOK, CPU)


def test_tiny_reward_model_is_a_sequence_classifier_with_a_zero_head():
    model = _model()
    assert type(model).__name__ == "Qwen2ForSequenceClassification"
    assert model.config.num_labels == 1 and model.config.pad_token_id == TOK.pad_token_id
    assert model.score.weight.abs().sum() == 0
    r = forward_rewards(model, [[5, 6, 7], [8, 9]], TOK.pad_token_id, CPU)
    assert r.shape == (2,) and torch.equal(r, torch.zeros(2))


def test_reward_reads_the_last_real_token_whatever_the_padding():
    model = _model()
    torch.nn.init.normal_(model.score.weight, std=1.0)
    seqs = [[40, 41, 42, 43, 44], [40, 41], [50, 51, 52]]
    together = forward_rewards(model, seqs, TOK.pad_token_id, CPU)
    alone = torch.cat([forward_rewards(model, [s], TOK.pad_token_id, CPU) for s in seqs])
    assert torch.allclose(together, alone, atol=1e-5)
    # and it is the head on the hidden state of that token
    with torch.no_grad():
        h = model.model(input_ids=torch.tensor([seqs[1]])).last_hidden_state[0, -1]
    assert together[1].item() == pytest.approx(float(model.score(h)), abs=1e-5)


def test_the_backbone_is_the_tiny_policy_of_the_same_spec():
    model = _model()
    lm = build_model(TOK, **ModelSection.model_validate(TINY_MODEL).tiny.model_dump())
    assert all(torch.equal(v, lm.model.state_dict()[k]) for k, v in model.model.state_dict().items())


def test_rendering_is_prompt_then_response_then_eos():
    chat = [{"role": "user", "content": "2+3="}]
    (ids,) = encode_responses(TOK, [chat], ["5"], RenderSpec())
    assert TOK.decode(ids) == "<|user|>2+3=<|assistant|>5<|end|>"
    # an assistant message scores like its text; a string prompt stays raw text (chat_template: auto)
    assert encode_responses(TOK, [chat], [[{"role": "assistant", "content": "5"}]], RenderSpec()) == [ids]
    (raw,) = encode_responses(TOK, ["2+3="], ["5"], RenderSpec(system_prompt="Add."))
    assert TOK.decode(raw) == "Add.\n2+3=5<|end|>"
    (templated,) = encode_responses(TOK, ["2+3="], ["5"], RenderSpec(chat_template="always"))
    assert templated == ids


def test_too_long_sequences_keep_their_end():
    with pytest.warns(UserWarning, match="longer than 6 tokens"):
        (ids,) = encode_responses(TOK, ["abcdefgh"], ["xy"], RenderSpec(max_tokens=6))
    assert TOK.decode(ids) == "fghxy<|end|>"  # 6 tokens: the prompt's last 3, the response, EOS


def test_save_and_load_round_trip_keeps_scores_and_rendering(tmp_path):
    model = _model()
    torch.nn.init.normal_(model.score.weight, std=1.0)
    spec = RenderSpec(chat_template="always", system_prompt="Be brief.", max_tokens=64)
    store_rm_config(model, spec, {"reward_mean": 0.5, "reward_std": 2.0})
    model.save_pretrained(tmp_path)
    TOK.save_pretrained(tmp_path)
    rm = RewardModel.load(tmp_path, batch_size=2)
    assert rm.spec == spec and rm.stats == {"reward_mean": 0.5, "reward_std": 2.0}
    prompts, responses = ["1+1=", "2+2=", "3+3="], ["2", "4", "7"]
    ids = encode_responses(TOK, prompts, responses, spec)
    expected = forward_rewards(model.eval(), ids, TOK.pad_token_id, CPU).detach()
    assert torch.allclose(rm.score_responses(prompts, responses), expected, atol=1e-5)
    assert torch.allclose(rm.score(ids), expected, atol=1e-5)
    assert torch.allclose(rm.score([TOK.decode(x) for x in ids]), expected, atol=1e-5)  # texts tokenise alike
    assert torch.allclose(rm.score_responses(prompts, responses, normalize=True), (expected - 0.5) / 2.0, atol=1e-5)


def test_loading_a_plain_language_model_as_a_reward_model_is_an_error(tmp_path):
    build_model(TOK, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32) \
        .save_pretrained(tmp_path)
    TOK.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no trained reward head.*postrl rm"):
        RewardModel.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        RewardModel.load(tmp_path / "missing")
