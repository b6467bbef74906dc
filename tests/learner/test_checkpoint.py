"""Checkpoints: HF-loadable, exact round trip, atomic, last k kept."""

import torch

from postrl.learner.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from postrl.learner.tiny import build_model, build_tokenizer


def _model(seed):
    tok = build_tokenizer()
    return tok, build_model(tok, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                            intermediate_size=64, init_seed=seed)


def test_round_trip_restores_weights_optimizer_and_state(tmp_path):
    tok, model = _model(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(input_ids=torch.tensor([[5, 6, 7]])).logits.sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path, 3, model=model, tokenizer=tok, optimizer=opt, state={"sampler": {"cursor": 7}})
    _, other = _model(1)
    opt2 = torch.optim.AdamW(other.parameters(), lr=1e-3)
    state = load_checkpoint(path, model=other, optimizer=opt2)
    assert state == {"step": 3, "sampler": {"cursor": 7}}
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def test_checkpoint_loads_with_auto_classes(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok, model = _model(0)
    path = save_checkpoint(tmp_path, 1, model=model, tokenizer=tok)
    loaded = AutoModelForCausalLM.from_pretrained(path)
    tok2 = AutoTokenizer.from_pretrained(path)
    ids = torch.tensor([tok2("12+34=", add_special_tokens=False)["input_ids"]])
    assert ids.tolist()[0] == tok("12+34=", add_special_tokens=False)["input_ids"]
    assert torch.allclose(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-6)
    assert tok2.chat_template == tok.chat_template and tok2.eos_token == tok.eos_token


def test_keeps_the_last_k_and_ignores_unfinished_temporaries(tmp_path):
    tok, model = _model(0)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model=model, tokenizer=tok, keep_last=2)
    (tmp_path / "checkpoints" / ".tmp_step_000004").mkdir()  # a save killed mid-write
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000002", "step_000003"]
    assert latest_checkpoint(tmp_path).name == "step_000003"
