"""Geometric-mixture sampling: the endpoints are the two models, one step has the closed-form
distribution, behaviour log-probs are exact, and rows are reproducible whatever the batching."""

import copy
import math
from collections import Counter

import pytest
import torch

from postrl.learner.tiny import build_model, build_tokenizer
from postrl.rollout.engines import SamplingParams
from postrl.rollout.hf_engine import HFEngine
from postrl.rollout.mixture import MixtureEngine

SIZE = dict(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)


def _model(tok, seed):
    """A tiny model with an untied random output head: tied embeddings make a random model echo
    its last prompt token under greedy, so two models would agree everywhere."""
    model = build_model(tok, init_seed=seed, **SIZE)
    g = torch.Generator().manual_seed(seed)
    model.lm_head.weight = torch.nn.Parameter(0.3 * torch.randn(model.lm_head.weight.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def tiny():
    tok = build_tokenizer()
    policy, ref = _model(tok, 3), _model(tok, 11)
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in ["1+1=", "12+34=", "7="]]
    return tok, policy.eval(), ref.eval(), prompts


GREEDY = SamplingParams(n=1, max_new_tokens=6, greedy=True)


def test_mixture_zero_is_the_policy_and_one_is_the_reference_under_greedy(tiny):
    tok, policy, ref, prompts = tiny
    for coef, model in ((0.0, policy), (1.0, ref)):
        ours = MixtureEngine(policy, ref, tok, mixture_coef=coef).generate(prompts, GREEDY)
        alone = HFEngine(model, tok).generate(prompts, GREEDY)
        assert torch.equal(ours.completion_ids, alone.completion_ids), coef
        assert torch.equal(ours.completion_mask, alone.completion_mask), coef
        assert torch.equal(ours.prompt_ids, alone.prompt_ids)
    # the two models disagree somewhere, so the endpoints are not trivially equal
    assert not torch.equal(HFEngine(policy, tok).generate(prompts, GREEDY).completion_ids,
                           HFEngine(ref, tok).generate(prompts, GREEDY).completion_ids)


def _full_logps(model, batch):
    """[B, T, V] next-token log-probs at every completion position (one forward, no cache)."""
    ids, mask = batch.input_ids(), batch.attention_mask()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
    P = batch.prompt_ids.shape[1]
    return torch.log_softmax(logits[:, P - 1:-1], -1)


def test_behaviour_logprobs_are_the_tempered_mixture(tiny):
    tok, policy, ref, prompts = tiny
    m, temp = 0.3, 0.7
    batch = MixtureEngine(policy, ref, tok, mixture_coef=m).generate(
        prompts, SamplingParams(n=2, temperature=temp, max_new_tokens=5), seed=4)
    mixed = (1 - m) * _full_logps(policy, batch) + m * _full_logps(ref, batch)
    expect = torch.log_softmax(mixed / temp, -1).gather(-1, batch.completion_ids[..., None]).squeeze(-1)
    assert torch.allclose(expect * batch.loss_mask, batch.behavior_logprobs, atol=1e-4)
    assert batch.group_ids.tolist() == [0, 0, 1, 1, 2, 2]


def test_rows_are_reproducible_and_independent_of_micro_batching(tiny):
    tok, policy, ref, prompts = tiny
    p = SamplingParams(n=3, temperature=1.0, max_new_tokens=5)
    one = MixtureEngine(policy, ref, tok, mixture_coef=0.5).generate(prompts, p, seed=9)
    many = MixtureEngine(policy, ref, tok, mixture_coef=0.5, micro_batch_size=2).generate(prompts, p, seed=9)
    assert torch.equal(one.completion_ids, many.completion_ids)
    shard = MixtureEngine(policy, ref, tok, mixture_coef=0.5).generate(prompts[1:], p, seed=9, first_index=1)
    assert torch.equal(one.completion_ids[3:, :shard.completion_ids.shape[1]], shard.completion_ids)
    other = MixtureEngine(policy, ref, tok, mixture_coef=0.5).generate(prompts, p, seed=10)
    assert not torch.equal(one.completion_ids, other.completion_ids)


def _chi2_pvalue(counts: Counter, probs: torch.Tensor, n: int) -> float:
    """Chi-square goodness of fit; cells with expected count < 5 are merged into one."""
    expected = probs * n
    big = expected >= 5
    obs = torch.tensor([counts.get(i, 0) for i in range(len(probs))], dtype=torch.float64)
    o = torch.cat([obs[big], obs[~big].sum()[None]])
    e = torch.cat([expected[big], expected[~big].sum()[None]])
    keep = e > 0
    stat = float(((o[keep] - e[keep]) ** 2 / e[keep]).sum())
    dof = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64),
                                         torch.tensor(stat / 2, dtype=torch.float64)))


def test_one_step_matches_the_closed_form_mixture(tiny):
    tok, policy, ref, prompts = tiny
    m, temp, n = 0.5, 1.0, 4000
    prompt = prompts[1]
    with torch.no_grad():
        lp = [torch.log_softmax(model(torch.tensor([prompt])).logits[0, -1].double(), -1) for model in (policy, ref)]
    probs = torch.softmax(((1 - m) * lp[0] + m * lp[1]) / temp, -1)
    batch = MixtureEngine(policy, ref, tok, mixture_coef=m, micro_batch_size=1000).generate(
        [prompt], SamplingParams(n=n, temperature=temp, max_new_tokens=1), seed=0)
    counts = Counter(batch.completion_ids[:, 0].tolist())
    assert _chi2_pvalue(counts, probs, n) > 1e-4
    # the same samples reject the policy's own (unmixed) distribution: the test has power
    alone = torch.softmax(lp[0] / temp, -1)
    assert _chi2_pvalue(counts, alone, n) < 1e-4
    assert math.isclose(float(probs.sum()), 1.0, rel_tol=1e-9)


def test_bad_mixture_coef_is_rejected(tiny):
    tok, policy, ref, _ = tiny
    with pytest.raises(ValueError, match="mixture_coef"):
        MixtureEngine(policy, ref, tok, mixture_coef=1.5)


def test_eos_ends_a_row_like_the_hf_engine(tiny):
    tok, policy, ref, prompts = tiny
    first = MixtureEngine(policy, ref, tok, mixture_coef=0.0).generate(prompts, GREEDY)
    row = first.completion_ids[0].tolist()
    eos = row[2]  # make the third greedy token of row 0 an end token: the row ends at its first occurrence
    stop_at = row.index(eos) + 1
    model = copy.deepcopy(policy)
    model.generation_config.eos_token_id = eos
    ours = MixtureEngine(model, ref, tok, mixture_coef=0.0).generate(prompts, GREEDY)
    alone = HFEngine(model, tok).generate(prompts, GREEDY)
    assert int(ours.completion_mask[0].sum()) == stop_at and ours.metadata["finish_reason"][0] == "stop"
    assert ours.metadata["finish_reason"] == alone.metadata["finish_reason"]
    assert torch.equal(ours.completion_ids, alone.completion_ids)
    assert torch.equal(ours.completion_mask, alone.completion_mask)
