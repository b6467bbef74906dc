"""Shared fixture of the rollout tests: the engine tests' tiny model (modules may define their own `tiny`)."""

import pytest

from postrl.learner.tiny import build_model, build_tokenizer


@pytest.fixture(scope="module")
def tiny():
    """(tokenizer, a 2-layer width-32 tiny Qwen2 in eval mode, three short prompts' token ids)."""
    tok = build_tokenizer()
    model = build_model(tok, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
                        init_seed=3)
    model.eval()
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in ["1+1=", "12+34=", "7="]]
    return tok, model, prompts
