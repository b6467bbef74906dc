"""Prompt additions in the trainer: hinted prompt ids, answer prefixes in scoring, the rescue swap,
the hints/... metrics and the settings that cannot work with them."""

import pytest
import torch
from helpers import tiny_rl_config

from postrl.config import ConfigError, RLConfig, resolve
from postrl.data import encode_prompts
from postrl.data.loading import DataError, PromptRow
from postrl.learner.tiny import build_tokenizer
from postrl.rewards import RewardResult
from postrl.rollout.batch import RolloutBatch
from postrl.samplers import Addition
from postrl.trainers import hints, rl
from postrl.trainers.scoring import score_batch


def test_a_hint_goes_to_the_end_of_the_last_user_message():
    chat = PromptRow(0, [{"role": "system", "content": "S"}, {"role": "user", "content": "2+2="},
                         {"role": "assistant", "content": "A"}], "4", {})
    hinted = hints.with_hint(chat, " (hint)")
    assert [m["content"] for m in hinted.prompt] == ["S", "2+2= (hint)", "A"]
    assert chat.prompt[1]["content"] == "2+2="  # the dataset row is untouched
    assert hints.with_hint(PromptRow(1, "2+2=", "4", {}), "!").prompt == "2+2=!"
    with pytest.raises(DataError, match="row 3: a hint can only be appended to text content"):
        hints.with_hint(PromptRow(2, [{"role": "user", "content": [{"type": "image"}]}], "4", {}), "!")


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    cfg = tiny_rl_config(tmp_path_factory.mktemp("hints"), **{
        "sampler": {"name": "scaf_grpo", "kwargs": {"exemption_steps": 0}}, "rollout.n": 2,
        "data.task_kwargs": {"level": 1, "hints": True}, "rewards": [{"name": "tiny_rewards:token_parity"}],
        "train.prompts_per_step": 2})
    return rl.build(cfg)


def test_prompt_ids_with_hints_and_answer_prefixes(parts):
    p = parts
    adds = [Addition(), Addition(hint=" H"), Addition(answer_prefix="1"), Addition(hint=" H", answer_prefix="12")]
    ids = hints.encode_with(p, [0, 1, 2, 3], adds)
    assert ids[0] == p.train_ids[0]
    hinted, _ = encode_prompts(p.tokenizer, [hints.with_hint(p.train_rows[1], " H")], p.cfg.data)
    assert ids[1] == hinted[0] and p.tokenizer.decode(ids[1]).endswith("= H<|assistant|>")
    assert ids[2] == p.train_ids[2] + p.tokenizer.encode("1", add_special_tokens=False)
    assert p.tokenizer.decode(ids[3]) == f"<|user|>{p.train_rows[3].prompt[0]['content']} H<|assistant|>12"
    assert hints.prompts_for(p, [0, 1]) == ([p.train_ids[0], p.train_ids[1]], None)  # scaf_grpo does not decorate


def test_rewards_score_the_answer_prefix_plus_the_completion():
    tok = build_tokenizer()
    batch = RolloutBatch.from_token_lists([[1], [1]], [tok.encode("34"), tok.encode("5")], tok.pad_token_id,
                                          group_ids=[0, 1])
    hints.mark(batch, [Addition(answer_prefix="12"), Addition()])
    seen = {}

    def reward_set(prompts, completions, ids, columns):
        seen.update(completions=completions, ids=ids)
        return RewardResult(torch.zeros(2), {"r": torch.zeros(2)})

    rows = [PromptRow(0, "a", "1234", {"answer": "1234"}), PromptRow(1, "b", "5", {"answer": "5"})]
    score_batch(batch, rows, tok, reward_set)
    assert seen["completions"] == ["1234", "5"]  # the prefix is part of the judged answer
    assert seen["ids"] == [tok.encode("34"), tok.encode("5")]  # completion tokens: what was sampled
    assert batch.metadata["completion_text"] == ["34", "5"]  # aligned with the tokens (process rewards)


def test_hint_metrics_count_rows_per_decision():
    batch = RolloutBatch.from_token_lists([[1]] * 4, [[2]] * 4, 0, group_ids=[0, 0, 1, 2])
    hints.mark(batch, [Addition(hint="h", tag="tier_2"), Addition(), Addition(answer_prefix="p", tag="reset")])
    assert hints.hint_metrics(batch, "s") == {"hints/fraction": 0.75, "hints/s/tier_2": 0.5, "hints/s/reset": 0.25}
    plain = RolloutBatch.from_token_lists([[1]] * 2, [[2]] * 2, 0)
    assert hints.hint_metrics(plain, "s") == {"hints/fraction": 0.0}


def test_rescue_swaps_the_lowest_solving_tier_into_the_first_row_of_a_failed_group(parts, monkeypatch):
    p = parts
    idx = [4, 7]
    odd, even = [11], [12]  # token_parity: 1.0 iff the completion's token ids sum to an even number
    batch = RolloutBatch.from_token_lists([p.train_ids[4]] * 2 + [p.train_ids[7]] * 2, [odd, odd, even, odd],
                                          p.tokenizer.pad_token_id, group_ids=[0, 0, 1, 1],
                                          metadata={"finish_reason": ["stop"] * 4})
    result = score_batch(batch, [p.train_rows[i] for i in idx], p.tokenizer, p.rewards)
    assert result.total.tolist() == [0.0, 0.0, 1.0, 0.0]  # group 0 failed, group 1 did not
    asked = {}

    def generate(prompt_ids, params, seed):  # tiers 1, 2, 3 of prompt 4: fail, solve, solve
        asked.update(prompt_ids=prompt_ids, n=params.n)
        return RolloutBatch.from_token_lists(prompt_ids, [odd, even + even, even], p.tokenizer.pad_token_id,
                                             metadata={"finish_reason": ["stop"] * 3})

    monkeypatch.setattr(p.rollouts, "generate", generate)
    new, new_result, info = hints.rescue(p, idx, batch, result, seed=0)
    plan = p.sampler.rescue(idx, [[0.0, 0.0], [1.0, 0.0]])
    assert asked["n"] == 1 and asked["prompt_ids"] == hints.encode_with(p, [4, 4, 4], plan[0]) and plan[1] == []
    assert info == {"hints/rescue_groups": 1.0, "hints/rescue_tries": 3.0, "hints/rescued_groups": 1.0}
    assert new.prompt_ids[0][new.prompt_mask[0].bool()].tolist() == asked["prompt_ids"][1]  # the tier-2 prompt
    assert new.completion_ids[0][new.completion_mask[0].bool()].tolist() == even + even
    assert new_result.total.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert new_result.per_function["token_parity"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert new.metadata["hint_tag"] == ["tier_2", "", "", ""] and new.group_ids.tolist() == [0, 0, 1, 1]
    for i in (1, 2, 3):  # the other rows are untouched
        assert new.completion_ids[i][new.completion_mask[i].bool()].tolist() == [odd, odd, even, odd][i]


@pytest.mark.parametrize("setting, key", [
    ({"distributed": {"max_off_policy_steps": 2}}, "distributed.max_off_policy_steps is 2"),
    ({"env": {"name": "calculator"}}, "env:"),
    ({"rollout": {"inject_reference": "answer"}}, "drop rollout.inject_reference"),
    ({"algorithm": {"preset": "remax"}}, "algorithm.advantage='remax'"),
    ({"algorithm": {"advantage": "segment_spo"}}, "algorithm.advantage='segment_spo'"),
    ({"rollout": {"budgets": [4, 8]}}, "drop rollout.budgets"),
])
def test_settings_a_decorating_sampler_cannot_work_with_are_refused_by_key(setting, key):
    with pytest.raises(ConfigError, match=key):
        resolve(RLConfig, {"sampler": {"name": "dr_po"}, **setting})
    if "env" not in setting:  # the setting itself is fine with a plain sampler
        resolve(RLConfig, {"sampler": {"name": "uniform"}, **setting})
