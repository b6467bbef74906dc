"""Log-ratio process rewards: `implicit_prm` and `rto` (rewards/process_logratio.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import yaml

from postrl.learner.logprobs import completion_logprobs
from postrl.learner.tiny import build_model, build_tokenizer
from postrl.rewards import process_logratio as lr
from postrl.rewards.process import PROCESS_REWARDS, ProcessContext
from postrl.rollout.batch import RolloutBatch

TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 64}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A 'DPO run': final/ = the tiny model with init_seed 1; its config.yaml names the tiny model
    with init_seed 0 as its start (the reference)."""
    root = tmp_path_factory.mktemp("dpo_run")
    tok = build_tokenizer()
    phi, ref = build_model(tok, **TINY, init_seed=1), build_model(tok, **TINY, init_seed=0)
    phi.save_pretrained(root / "final")
    tok.save_pretrained(root / "final")
    ref.save_pretrained(root / "ref")
    tok.save_pretrained(root / "ref")
    start = {"model": {"name_or_path": "tiny", "tiny": {**TINY, "init_seed": 0}}}
    (root / "config.yaml").write_text(yaml.safe_dump(start))
    lr.load_pair.cache_clear()
    return root, phi.eval(), ref.eval(), tok


def _ctx(tok, texts):
    prompts = [tok("2+2=", add_special_tokens=False)["input_ids"]] * len(texts)
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    batch = RolloutBatch.from_token_lists(prompts, ids, tok.pad_token_id)
    return ProcessContext(batch, list(texts), [SimpleNamespace(prompt="2+2=")] * len(texts), tok)


def _expected_ratio(phi, ref, batch):
    with torch.no_grad():
        return (completion_logprobs(phi, batch)[0] - completion_logprobs(ref, batch)[0]) * batch.completion_mask


def test_log_ratio_matches_the_two_models_and_the_reference_comes_from_the_run_config(models):
    root, phi, ref, tok = models
    ctx = _ctx(tok, ["4\n1", "22"])
    want = _expected_ratio(phi, ref, ctx.batch)
    from_config = lr.token_log_ratios(ctx, path=str(root / "final"), device="cpu", batch_size=1)
    explicit = lr.token_log_ratios(ctx, path=str(root / "final"), ref_path=str(root / "ref"), device="cpu")
    assert torch.allclose(from_config, want, atol=1e-5) and torch.allclose(explicit, want, atol=1e-5)
    assert from_config.abs().sum() > 0  # two different models


def test_implicit_prm_sums_the_log_ratio_over_each_step(models):
    root, phi, ref, tok = models
    ctx = _ctx(tok, ["4\n1", "22"])
    r = 0.05 * _expected_ratio(phi, ref, ctx.batch)
    out = PROCESS_REWARDS["implicit_prm"](ctx, path=str(root / "final"), device="cpu")
    # row 0 "4\n1": steps end at tokens 1 ("4\n") and 2 ("1"); row 1 "22": one step ending at token 1
    assert out.step_ends == [[1, 2], [1]]
    assert out.step_rewards[0] == [pytest.approx(float(r[0, 0] + r[0, 1]), abs=1e-6),
                                   pytest.approx(float(r[0, 2]), abs=1e-6)]
    assert out.step_rewards[1] == [pytest.approx(float(r[1, 0] + r[1, 1]), abs=1e-6)]
    expected = torch.zeros_like(r)
    expected[0, 1], expected[0, 2], expected[1, 1] = r[0, 0] + r[0, 1], r[0, 2], r[1, 0] + r[1, 1]
    assert torch.allclose(out.token_rewards, expected, atol=1e-6)
    dense = PROCESS_REWARDS["implicit_prm"](ctx, path=str(root / "final"), device="cpu", granularity="token")
    assert torch.allclose(dense.token_rewards, r, atol=1e-6) and dense.step_rewards == out.step_rewards


def test_rto_is_the_dense_scaled_log_ratio(models):
    root, phi, ref, tok = models
    ctx = _ctx(tok, ["4\n1", "22"])
    out = PROCESS_REWARDS["rto"](ctx, path=str(root / "final"), beta=0.5, device="cpu")
    assert torch.allclose(out.token_rewards, 0.5 * _expected_ratio(phi, ref, ctx.batch), atol=1e-5)
    assert out.step_rewards == [[], []] and out.step_ends == [[], []]


def test_errors_name_the_fix(models, tmp_path):
    root, _, _, tok = models
    ctx = _ctx(tok, ["4"])
    with pytest.raises(ValueError, match="kwargs.path is required"):
        PROCESS_REWARDS["rto"](ctx)
    other = build_tokenizer()
    other.add_tokens(["<extra>"])
    with pytest.raises(ValueError, match="different vocabularies"):
        PROCESS_REWARDS["rto"](ProcessContext(ctx.batch, ctx.texts, ctx.rows, other), path=str(root / "final"),
                               device="cpu")
    lonely = tmp_path / "lonely"
    build_model(tok, **TINY).save_pretrained(lonely)
    tok.save_pretrained(lonely)
    with pytest.raises(ValueError, match="give kwargs.ref_path"):
        PROCESS_REWARDS["implicit_prm"](ctx, path=str(lonely), device="cpu")
    with pytest.raises(ValueError, match="granularity must be"):
        PROCESS_REWARDS["implicit_prm"](ctx, path=str(root / "final"), granularity="word")
