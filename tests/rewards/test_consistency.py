"""GRPO-CARE's answer likelihood: the answer span, its tokens and the likelihood."""

import math

import pytest
import torch

from postrl.rewards.consistency import answer_char_span, answer_likelihood, answer_mask, token_span
from postrl.rollout.batch import RolloutBatch

TAGS = r"(?s)<answer>(.*?)</answer>"


def test_answer_span_is_the_last_tagged_answer_without_spaces_else_the_last_number():
    text = "<think>2 + 3</think><answer> 42 </answer>"
    s, e = answer_char_span(text, TAGS)
    assert text[s:e] == "42"
    text = "<answer>1</answer> again <answer>-7.5</answer>"
    assert text[slice(*answer_char_span(text, TAGS))] == "-7.5"
    text = "so 3 + 43 = 46"
    assert text[slice(*answer_char_span(text, TAGS))] == "46"
    assert answer_char_span("no digits", TAGS) is None
    assert answer_char_span("so 46", TAGS, fallback="none") is None
    assert answer_char_span("<answer>  </answer>", TAGS, fallback="none") is None
    s, e = answer_char_span("abc", r"b")  # a pattern without a group: the whole match
    assert (s, e) == (1, 2)


def test_token_span_covers_every_token_overlapping_the_characters():
    # token char lengths [2, 3, 0, 4] -> prefix lengths L = [0, 2, 5, 5, 9]
    L = [0, 2, 5, 5, 9]
    assert token_span(4, L.__getitem__, 3, 7) == (1, 4)  # chars 3..6: token 1 [2,5), tokens 2, 3 [5,9)
    assert token_span(4, L.__getitem__, 5, 6) == (3, 4)  # token 2 is empty: token 3 covers char 5
    assert token_span(4, L.__getitem__, 0, 2) == (0, 1)
    assert token_span(4, L.__getitem__, 8, 9) == (3, 4)


def test_answer_mask_marks_the_answer_tokens_of_the_sampled_ids():
    from postrl.learner.tiny import build_tokenizer

    tok = build_tokenizer()  # one token per character
    texts = ["<answer>12</answer>", "x = 7", "none"]
    rows = [tok.encode(t, add_special_tokens=False) + [tok.eos_token_id] for t in texts]
    batch = RolloutBatch.from_token_lists([[1]] * 3, rows, tok.pad_token_id)
    mask = answer_mask(batch, tok, TAGS)
    assert mask[0].nonzero().flatten().tolist() == [8, 9]  # "12" after the 8 characters of "<answer>"
    assert mask[1].nonzero().flatten().tolist() == [4]  # the last number
    assert mask[2].sum() == 0


def test_answer_likelihood_is_the_geometric_mean_token_probability():
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.2], [0.9, 0.9, 0.9]]))
    mask = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    c = answer_likelihood(logp, mask)
    assert c[0].item() == pytest.approx(math.sqrt(0.5 * 0.2)) and c[1].isnan()
