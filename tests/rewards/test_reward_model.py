"""The `reward_model` reward and the pairwise `judge`: scores as the RM renders them, loaded once,
clear errors (no path, another vocabulary)."""

import math

import pytest
import torch
from helpers import TINY_MODEL

from postrl.config import ModelSection, RLConfig, resolve
from postrl.learner.reward_model import RenderSpec, RewardModel, load_reward_model, store_rm_config
from postrl.learner.tiny import build_tokenizer
from postrl.rewards import RewardSet, load_reward_fn
from postrl.rewards.reward_model import judge, load_cached

TOK = build_tokenizer()
CHAT = [{"role": "user", "content": "2+3="}]


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    """A tiny RM with a random head, saved as `postrl rm` saves one (stats included)."""
    path = tmp_path_factory.mktemp("rm")
    model = load_reward_model("tiny", ModelSection.model_validate(TINY_MODEL), TOK, torch.device("cpu"))
    torch.manual_seed(0)
    torch.nn.init.normal_(model.score.weight, std=1.0)
    store_rm_config(model, RenderSpec(), {"reward_mean": 1.0, "reward_std": 4.0})
    model.save_pretrained(path)
    TOK.save_pretrained(path)
    return str(path)


def test_rewards_are_the_rm_scores_of_the_rendered_completions(rm_dir):
    rm = RewardModel.load(rm_dir)
    prompts, completions = [CHAT, CHAT, "7+1="], ["5", "6", "8"]
    expected = rm.score_responses(prompts, completions).tolist()
    fn = load_reward_fn("reward_model", {"path": rm_dir, "batch_size": 2})
    out = fn(prompts=prompts, completions=completions, completion_ids=None)
    assert all(isinstance(v, float) for v in out) and out == pytest.approx(expected, abs=1e-5)
    # conversational completions (what `postrl train` passes for chat prompts) score like their text
    msgs = [[{"role": "assistant", "content": c}] for c in completions]
    assert fn(prompts=prompts, completions=msgs) == pytest.approx(expected, abs=1e-5)
    normalized = load_reward_fn("reward_model", {"path": rm_dir, "normalize": True})(prompts, completions)
    assert normalized == pytest.approx([(r - 1.0) / 4.0 for r in expected], abs=1e-5)


def test_the_model_is_loaded_once_per_process(rm_dir):
    assert load_cached(rm_dir, "auto", 32) is load_cached(rm_dir, "auto", 32)


def test_token_ids_score_like_text_when_the_vocabulary_is_the_policys(rm_dir):
    completions = ["5", "12"]
    ids = [TOK("5", add_special_tokens=False)["input_ids"] + [TOK.eos_token_id],  # finished with EOS
           TOK("12", add_special_tokens=False)["input_ids"]]  # cut at max_new_tokens: EOS is added, as in text mode
    text = load_reward_fn("reward_model", {"path": rm_dir})([CHAT, CHAT], completions, completion_ids=ids)
    by_ids = load_reward_fn("reward_model", {"path": rm_dir, "inputs": "ids", "policy_tokenizer": "tiny"})(
        [CHAT, CHAT], completions, completion_ids=ids)
    assert by_ids == pytest.approx(text, abs=1e-5)


def test_a_policy_with_another_vocabulary_is_an_error_naming_both(rm_dir, tmp_path):
    other = build_tokenizer()
    other.add_tokens(["<|extra|>"])
    other.save_pretrained(tmp_path / "policy_tok")
    fn = load_reward_fn("reward_model", {"path": rm_dir, "inputs": "ids",
                                         "policy_tokenizer": str(tmp_path / "policy_tok")})
    with pytest.raises(ValueError, match=f"reward model '{rm_dir}' and the policy '{tmp_path / 'policy_tok'}' "
                                         "have different vocabularies.*inputs: text"):
        fn([CHAT], ["5"], completion_ids=[[10]])
    # text mode re-tokenises with the RM's own tokenizer, so another policy tokenizer is fine there
    assert len(load_reward_fn("reward_model", {"path": rm_dir})([CHAT], ["5"], completion_ids=[[10]])) == 1


def test_a_missing_path_is_a_clear_error():
    fn = load_reward_fn("reward_model", {})
    with pytest.raises(ValueError, match="kwargs.path is required.*postrl rm"):
        fn([CHAT], ["5"])
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_reward_fn("reward_model", {"path": "no/such/rm"})([CHAT], ["5"])
    with pytest.raises(ValueError, match="takes no parameter 'model_path'"):
        load_reward_fn("reward_model", {"model_path": "x"})


def test_normalize_needs_saved_statistics(tmp_path):
    model = load_reward_model("tiny", ModelSection.model_validate(TINY_MODEL), TOK, torch.device("cpu"))
    model.save_pretrained(tmp_path)  # an RM without `postrl_rm` statistics in its config
    TOK.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no saved reward statistics.*drop normalize"):
        load_reward_fn("reward_model", {"path": str(tmp_path), "normalize": True})([CHAT], ["5"])


def test_config_fills_the_policy_tokenizer_and_the_reward_set_scores(rm_dir, tmp_path):
    cfg = resolve(RLConfig, {"model": TINY_MODEL, "rewards": [{"name": "reward_model", "kwargs": {"path": rm_dir}}]})
    assert cfg.rewards[0].kwargs == {"path": rm_dir, "policy_tokenizer": "tiny"}
    result = RewardSet(cfg.rewards)([CHAT, CHAT], ["5", "6"], None, {"answer": ["5", "5"]})
    assert torch.isfinite(result.total).all() and list(result.per_function) == ["reward_model"]


def test_judge_is_the_bradley_terry_probability(rm_dir):
    rm = RewardModel.load(rm_dir)
    prompts, a, b = [CHAT, "7+1="], ["5", "8"], ["6", "9"]
    ra, rb = rm.score_responses(prompts, a), rm.score_responses(prompts, b)
    p = judge(prompts, a, b, path=rm_dir)
    assert p == pytest.approx([1 / (1 + math.exp(-(x - y))) for x, y in zip(ra.tolist(), rb.tolist())], abs=1e-5)
    assert [x + y for x, y in zip(p, judge(prompts, b, a, path=rm_dir))] == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="one of each per prompt"):
        judge(prompts, a, b[:1], path=rm_dir)
