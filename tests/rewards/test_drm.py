"""DRM dimension rewards (rewards/drm.py) against hand-computed values."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from postrl.learner.tiny import build_tokenizer
from postrl.rewards import REWARDS
from postrl.rewards.drm import split_reasoning, tfidf_cosines
from postrl.rewards.process import PROCESS_REWARDS, ProcessContext
from postrl.rollout.batch import RolloutBatch

IDF_ONCE = math.log(3 / 2) + 1  # smooth idf of a token in 1 of N = 2 documents; one in both: ln(3/3) + 1 = 1


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()  # one token per ASCII character


def context(tok, texts, prompts, logprobs, group_ids, loss_masks=None, columns=None) -> ProcessContext:
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    T = max(len(x) for x in ids)
    cids, mask, lp, lm = (torch.zeros(len(ids), T, dtype=torch.long), torch.zeros(len(ids), T, dtype=torch.long),
                          torch.zeros(len(ids), T), torch.zeros(len(ids), T))
    for i, x in enumerate(ids):
        cids[i, :len(x)] = torch.tensor(x)
        mask[i, :len(x)] = 1
        lp[i, :len(x)] = torch.tensor(logprobs[i])
        lm[i, :len(x)] = torch.tensor(loss_masks[i] if loss_masks else [1.0] * len(x))
    batch = RolloutBatch(prompt_ids=torch.ones(len(ids), 1, dtype=torch.long),
                         prompt_mask=torch.ones(len(ids), 1, dtype=torch.long), completion_ids=cids,
                         completion_mask=mask, loss_mask=lm, behavior_logprobs=lp, group_ids=torch.tensor(group_ids))
    rows = [SimpleNamespace(prompt=p, columns=(columns or [{}] * len(texts))[i]) for i, p in enumerate(prompts)]
    return ProcessContext(batch=batch, texts=texts, rows=rows, tokenizer=tok)


def test_split_reasoning_answer_tag_box_and_last_line():
    assert split_reasoning("think\n<answer>42</answer>") == (6, 14, 16)  # R "think\n", A "42"
    assert split_reasoning("so \\boxed{\\frac{1}{2}} done") == (0, 10, 21)  # A "\\frac{1}{2}", R ""
    assert split_reasoning("3+4=7\n7-2=5\n5\n") == (12, 12, 13)  # A the last line "5"
    assert split_reasoning("") == (0, 0, 0)


def test_tfidf_cosine_by_hand():
    # corpus "a b", "a c": idf(a) = 1, idf(b) = idf(c) = ln(3/2) + 1
    # cos("a b", "a c") = 1*1 / (1 + idf_b^2);  cos("a b", "a b") = 1;  no tokens -> 0
    assert tfidf_cosines([("a b", "a c"), ("a b", "A B"), ("a", "")], ["a b", "a c"]) == pytest.approx(
        [1 / (1 + IDF_ONCE ** 2), 1.0, 0.0])


def test_relevance_proxy_and_context_column():
    # Q "3+4=" -> tokens 3, 4; R "3+4=7\n" -> 3, 4, 7; corpus = [Q, R]: idf(3) = idf(4) = 1, idf(7) = IDF_ONCE
    # cos = (1 + 1) / (sqrt(2) * sqrt(2 + IDF_ONCE^2))
    want = 2 / (math.sqrt(2) * math.sqrt(2 + IDF_ONCE ** 2))
    assert REWARDS["drm_relevance"](["3+4="], ["3+4=7\n<answer>7</answer>"]) == pytest.approx([want])
    # with a context D identical to R: (cos(R, Q) + cos(R, D)) / 2, corpus [Q, D, R]
    out = REWARDS["drm_relevance"](["x y"], ["x z\n<answer>1</answer>"], context=["x z"])
    # N = 3: df(x) = 3 -> idf 1; df(y) = 1 -> ln(4/2) + 1; df(z) = 2 -> ln(4/3) + 1
    idf_y, idf_z = math.log(2) + 1, math.log(4 / 3) + 1
    cos_q = 1 / (math.sqrt(1 + idf_z ** 2) * math.sqrt(1 + idf_y ** 2))
    assert out == pytest.approx([(cos_q + 1.0) / 2])


def test_coherence_proxy_by_hand():
    fn = REWARDS["drm_coherence"]
    texts = ["3+4=7\n7-2=5\n5",      # both equations hold, answer 5 in "7-2=5": (1 + 1) / 2 = 1
             "3+4=8\n8-2=6\n6",      # 1 of 2 equations holds, answer in last line: (0.5 + 1) / 2 = 0.75
             "3+4=7\n7-2=5\n4",      # equations hold, answer 4 not in "7-2=5": (1 + 0) / 2 = 0.5
             "I think so\n<answer>5</answer>",  # no equations, 5 not in "I think so": 0
             "5"]                    # no reasoning at all: 0
    assert fn(["q"] * 5, texts) == pytest.approx([1.0, 0.75, 0.5, 0.0, 0.0])


def test_confidence_is_mean_reasoning_logprob_plus_summed_answer_logprob(tok):
    # "3+4=7\n<answer>7</answer>": R = chars 0-5, A = char 14; tags and env tokens do not count
    text = "3+4=7\n<answer>7</answer>"
    lp = [-0.5, -1.0, -0.5, -1.0, -0.5, -1.0] + [-9.0] * 8 + [-0.25] + [-9.0] * 9
    ctx = context(tok, [text, "ab\n7"], ["3+4=", "q"], [lp, [-1.0, -3.0, -2.0, -0.1]], [0, 1],
                  loss_masks=[[1.0] * len(text), [1.0, 0.0, 1.0, 1.0]])
    out = PROCESS_REWARDS["drm_confidence"](ctx)
    # row 0: mean(-0.5,-1,-0.5,-1,-0.5,-1) = -0.75, + -0.25 = -1.0, on the last token (index 23)
    # row 1: R "ab\n" with b masked (an env token): mean(-1, -2) = -1.5, A "7": -0.1 -> -1.6 on token 3
    assert out.token_rewards[0, len(text) - 1] == pytest.approx(-1.0)
    assert out.token_rewards[1, 3] == pytest.approx(-1.6)
    assert float(out.token_rewards.abs().sum()) == pytest.approx(2.6)
    assert out.step_rewards == [[], []] and out.step_ends == [[], []]


def test_group_normalisation_z_scores_within_each_prompt(tok):
    # answers only ("7", "8", "9"): confidence = log-prob of the single answer token: -1, -3, -5
    ctx = context(tok, ["7", "8", "9"], ["q", "q", "r"], [[-1.0], [-3.0], [-5.0]], [0, 0, 1])
    out = PROCESS_REWARDS["drm_confidence"](ctx, normalize="group")
    # group 0: mean -2, std 1 -> -1 -> +1, -3 -> -1; group 1 has one member -> 0
    assert out.token_rewards[:, 0].tolist() == pytest.approx([1.0, -1.0, 0.0])
    out = PROCESS_REWARDS["drm_confidence"](ctx, normalize="batch")
    # batch: mean -3, std sqrt(8/3)
    assert out.token_rewards[:, 0].tolist() == pytest.approx([2 / math.sqrt(8 / 3), 0.0, -2 / math.sqrt(8 / 3)])


def test_drm_is_the_weighted_sum_of_the_three_dimensions(tok):
    text = "3+4=7\n<answer>7</answer>"
    lp = [-0.5] * 6 + [-9.0] * 8 + [-0.25] + [-9.0] * 9
    ctx = context(tok, [text], ["3+4="], [lp], [0])
    out = PROCESS_REWARDS["drm"](ctx, confidence_weight=1.0, relevance_weight=2.0, coherence_weight=3.0,
                                 normalize="none")
    conf = -0.5 - 0.25
    rel = 2 / (math.sqrt(2) * math.sqrt(2 + IDF_ONCE ** 2))
    coh = 1.0  # "3+4=7" holds and the answer 7 is in it
    assert out.token_rewards[0, len(text) - 1] == pytest.approx(conf + 2 * rel + 3 * coh)
    assert float(out.token_rewards.abs().sum()) == pytest.approx(abs(conf + 2 * rel + 3 * coh))


def test_drm_group_normalised_sums_to_zero_per_group(tok):
    texts = ["3+4=7\n7", "3+4=8\n8", "3+4=7\n7\n", "2+2=4\n4"]
    ctx = context(tok, texts, ["3+4="] * 3 + ["2+2="], [[-0.3] * len(t) for t in texts], [0, 0, 0, 1])
    out = PROCESS_REWARDS["drm"](ctx)
    totals = out.token_rewards.sum(-1)
    assert float(totals[:3].sum()) == pytest.approx(0.0, abs=1e-6)
    assert float(totals[3]) == 0.0  # a one-member group carries no signal
    with pytest.raises(ValueError, match="normalize"):
        PROCESS_REWARDS["drm"](ctx, normalize="minmax")


def test_a_reward_model_scorer_scores_question_and_reasoning(tmp_path):
    from postrl.config import ModelSection
    from postrl.learner.reward_model import RenderSpec, RewardModel, load_reward_model, store_rm_config
    from tests.helpers import TINY_MODEL

    tok = build_tokenizer()
    model = load_reward_model("tiny", ModelSection.model_validate(TINY_MODEL), tok, torch.device("cpu"))
    torch.manual_seed(0)
    torch.nn.init.normal_(model.score.weight, std=1.0)  # a random head: scores differ per input
    store_rm_config(model, RenderSpec())
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    prompts = [[{"role": "user", "content": "3+4="}], "2+2="]
    texts = ["3+4=7\n<answer>7</answer>", "2+2=4\n4"]
    # the scorer sees (Q, R): R = "3+4=7\n" and "2+2=4\n" (the text before the answer)
    want = RewardModel.load(str(tmp_path)).score_responses(prompts, ["3+4=7\n", "2+2=4\n"]).tolist()
    assert REWARDS["drm_relevance"](prompts, texts, scorer=str(tmp_path)) == pytest.approx(want, abs=1e-5)
    assert REWARDS["drm_coherence"](prompts, texts, scorer=str(tmp_path)) == pytest.approx(want, abs=1e-5)
