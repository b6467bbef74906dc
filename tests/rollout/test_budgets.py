"""HBPO budget subgroups (`rollout/budgets.py`): prompts, limits, seeds and row order per subgroup."""

import pytest
import torch
from helpers import tiny_rl_config

from postrl.learner.tiny import build_tokenizer
from postrl.rollout.batch import RolloutBatch
from postrl.rollout.budgets import BudgetEngine
from postrl.rollout.engines import SamplingParams


class FakeEngine:
    """Records each call; completion of (prompt i, sample j) = [call, i, j], limited to max_new_tokens."""

    def __init__(self):
        self.calls = []

    def generate(self, prompt_ids, params, seed=0, *, first_index=0):
        self.calls.append((prompt_ids, params, seed, first_index))
        c = len(self.calls) - 1
        prompts = [p for p in prompt_ids for _ in range(params.n)]
        comps = [[c, i, j][:params.max_new_tokens] for i in range(len(prompt_ids)) for j in range(params.n)]
        groups = [i for i in range(len(prompt_ids)) for _ in range(params.n)]
        return RolloutBatch.from_token_lists(prompts, comps, 0, group_ids=groups,
                                             metadata={"finish_reason": ["stop"] * len(comps)})

    def sync_weights(self, state):
        self.synced = state


def test_each_subgroup_gets_its_budget_prompt_seed_and_the_rollout_limit():
    tok = build_tokenizer()
    fake = FakeEngine()
    engine = BudgetEngine(fake, tok, [2, 5], "<{budget}>")
    params = SamplingParams(n=4, max_new_tokens=3)
    batch = engine.generate([[10, 11], [12]], params, seed=7, first_index=3)
    suffix = {b: tok.encode(f"<{b}>", add_special_tokens=False) for b in (2, 5)}
    assert len(suffix[2]) == 3  # the tiny tokenizer: one token per character
    (p0, s0, seed0, f0), (p1, s1, seed1, f1) = fake.calls
    assert p0 == [[10, 11] + suffix[2], [12] + suffix[2]] and p1 == [[10, 11] + suffix[5], [12] + suffix[5]]
    assert s0.n == s1.n == 2 and s0.max_new_tokens == s1.max_new_tokens == 3  # the paper: one limit for all
    assert seed0 == 7 and seed1 != 7 and f0 == f1 == 3  # distinct streams, same global prompt index
    # rows: prompt-major, then budget: prompt 0 (budget 2: samples 0, 1; budget 5: 0, 1), then prompt 1
    assert batch.group_ids.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert batch.metadata["budget"] == [2, 2, 5, 5, 2, 2, 5, 5]
    rows = [batch.completion_ids[r][batch.completion_mask[r].bool()].tolist() for r in range(batch.size)]
    assert rows == [[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 1], [0, 1, 0], [0, 1, 1], [1, 1, 0], [1, 1, 1]]
    # each row's prompt ends with its subgroup's budget tokens
    for r in range(batch.size):
        prompt = batch.prompt_ids[r][batch.prompt_mask[r].bool()].tolist()
        assert prompt[-len(suffix[batch.metadata["budget"][r]]):] == suffix[batch.metadata["budget"][r]]


def test_budget_cap_stops_each_subgroup_at_its_budget():
    fake = FakeEngine()
    engine = BudgetEngine(fake, build_tokenizer(), [1, 2, 8], "{budget}", cap=True)
    batch = engine.generate([[5]], SamplingParams(n=3, max_new_tokens=3), seed=0)
    assert [call[1].max_new_tokens for call in fake.calls] == [1, 2, 3]  # min(b_k, max_new_tokens)
    assert batch.completion_mask.sum(-1).tolist() == [1, 2, 3]


def test_n_must_divide_into_the_budgets_and_weights_reach_the_wrapped_engine():
    fake = FakeEngine()
    engine = BudgetEngine(fake, build_tokenizer(), [1, 2], "{budget}")
    with pytest.raises(ValueError, match="divisible by the number of budgets"):
        engine.generate([[5]], SamplingParams(n=3), seed=0)
    engine.sync_weights("w")
    assert fake.synced == "w"


def test_tiny_model_rollout_has_budget_prompts_and_capped_limits(tmp_path):
    from postrl.trainers import rl

    cfg = tiny_rl_config(tmp_path, **{"rollout.budgets": [2, 4], "rollout.budget_prompt": "#{budget}",
                                      "rollout.budget_cap": True, "rollout.max_new_tokens": 4})
    p = rl.build(cfg)
    assert isinstance(p.rollouts.engine, BudgetEngine) and not isinstance(p.eval_engine, BudgetEngine)
    rl.request_rollouts(p, 0)
    idx, batch = p.rollouts.get(0)
    n = cfg.rollout.n
    assert batch.size == len(idx) * n and batch.group_ids.tolist() == [g for g in range(len(idx)) for _ in range(n)]
    assert batch.metadata["budget"] == [2, 2, 4, 4] * len(idx)
    for r in range(batch.size):
        g, b = int(batch.group_ids[r]), batch.metadata["budget"][r]
        prompt = batch.prompt_ids[r][batch.prompt_mask[r].bool()].tolist()
        assert prompt == p.train_ids[idx[g]] + p.tokenizer.encode(f"#{b}", add_special_tokens=False)
        assert int(batch.completion_mask[r].sum()) <= b
    assert torch.isfinite(batch.behavior_logprobs).all()


@pytest.mark.parametrize("overrides, message", [
    ({"rollout.budgets": [2, 4], "rollout.n": 3}, "rollout.n must be divisible by 2"),
    ({"rollout.budgets": [2, 8]}, "raise max_new_tokens or lower the budgets"),
    ({"rollout.budgets": [0, 2]}, "positive token budgets"),
    ({"rollout.budgets": [2, 4], "rollout.budget_prompt": "think briefly"}, "must contain {budget}"),
    ({"rollout.budgets": [2, 4], "algorithm.preset": "remax", "rollout.n": 2}, "belong to no budget subgroup"),
    ({"rollout.budgets": [2, 4], "rollout.inject_reference": "answer"}, "drop one of them"),
    ({"rollout.budgets": [2, 4], "sampler.name": "xrpo"}, "drop rollout.budgets"),  # uneven group sizes
])
def test_bad_budget_configs_are_refused(tmp_path, overrides, message):
    with pytest.raises(Exception, match=message):
        tiny_rl_config(tmp_path, **overrides)
