"""The hf engine's per-token entropies (`generate(..., entropy=True)`): equal to the entropy of the
learner's full-forward distribution at each sampled position, and nothing changes without them."""

import math

import pytest
import torch

from postrl.rollout.engines import SamplingParams
from postrl.rollout.hf_engine import HFEngine, token_entropy


def test_token_entropy_by_hand():
    # logits (0, ln 3) at temperature 1: p = (1/4, 3/4), H = -(1/4 ln 1/4 + 3/4 ln 3/4)
    h = token_entropy(torch.tensor([[0.0, math.log(3.0)]]), SamplingParams(temperature=1.0))
    assert h.item() == pytest.approx(0.25 * math.log(4) + 0.75 * math.log(4 / 3), abs=1e-6)
    # temperature 0.5 doubles the logits: p = (1/10, 9/10)
    h = token_entropy(torch.tensor([[0.0, math.log(3.0)]]), SamplingParams(temperature=0.5))
    assert h.item() == pytest.approx(0.1 * math.log(10) + 0.9 * math.log(10 / 9), abs=1e-6)
    assert token_entropy(torch.tensor([[0.0, float("-inf")]]), SamplingParams()).item() == 0.0


def test_entropies_equal_the_full_forward_distribution(tiny):
    tok, model, prompts = tiny
    engine = HFEngine(model, tok, compact_fraction=0.0)
    params = SamplingParams(n=2, temperature=0.7, max_new_tokens=6)
    batch = engine.generate(prompts, params, seed=4, entropy=True)
    plain = engine.generate(prompts, params, seed=4)
    assert torch.equal(batch.completion_ids, plain.completion_ids)  # asking for entropies samples the same
    assert "token_entropy" not in plain.metadata
    ent = batch.metadata["token_entropy"]
    assert [len(e) for e in ent] == batch.completion_mask.sum(-1).tolist()
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids(), attention_mask=batch.attention_mask(),
                       position_ids=(batch.attention_mask().cumsum(-1) - 1).clamp(min=0)).logits.float()
    P = batch.prompt_ids.shape[1]
    for b, row in enumerate(ent):
        logp = torch.log_softmax(logits[b, P - 1:P - 1 + len(row)] / 0.7, dim=-1)
        want = -(logp.exp() * logp).sum(-1)
        assert torch.allclose(torch.tensor(row), want, atol=1e-4), b
        assert all(h > 0 for h in row)
