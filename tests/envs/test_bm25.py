"""BM25 ranking against hand-computed scores on a three-document corpus."""

import math

import pytest

from postrl.envs.bm25 import BM25, tokenize

# N = 3 documents, lengths 2, 1, 3, avgdl = 2; df(cat) = 2, df(dog) = df(bird) = df(fish) = 1.
DOCS = ["Cat dog.", "cat", "bird bird fish"]
IDF_CAT = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))  # ln 1.6 = 0.470004
IDF_ONE = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))  # ln 2.6667 = 0.980829


def test_idf_matches_the_formula():
    bm = BM25(DOCS)
    assert bm.idf["cat"] == pytest.approx(0.470004, abs=1e-6) == pytest.approx(IDF_CAT)
    assert bm.idf["dog"] == pytest.approx(0.980829, abs=1e-6) == pytest.approx(IDF_ONE)


def test_scores_are_the_hand_computed_values():
    bm = BM25(DOCS)  # k1 = 1.2, b = 0.75
    # "cat" in doc 0: tf 1, |d| = avgdl -> norm = 1.2 * (0.25 + 0.75 * 2/2) = 1.2; 0.470004 * 2.2 / 2.2
    assert bm.score("cat", 0) == pytest.approx(0.470004, abs=1e-6)
    # "cat" in doc 1: |d| = 1 -> norm = 1.2 * (0.25 + 0.375) = 0.75; 0.470004 * 2.2 / 1.75 = 0.590862
    assert bm.score("cat", 1) == pytest.approx(0.590862, abs=1e-6)
    # "cat dog" in doc 0: 0.470004 + 0.980829 * 2.2 / 2.2 = 1.450833
    assert bm.score("cat dog", 0) == pytest.approx(1.450833, abs=1e-6)
    # "bird" in doc 2: tf 2, norm = 1.2 * (0.25 + 0.75 * 3/2) = 1.65; 0.980829 * 2 * 2.2 / 3.65 = 1.182370
    assert bm.score("bird", 2) == pytest.approx(1.182370, abs=1e-6)
    assert bm.score("bird", 0) == 0.0


def test_top_k_ranks_best_first_and_drops_non_matches():
    bm = BM25(DOCS)
    assert [i for i, _ in bm.top_k("cat", 5)] == [1, 0]  # the shorter document wins on equal tf
    assert [i for i, _ in bm.top_k("cat dog", 5)] == [0, 1]  # the rare term decides
    assert [i for i, _ in bm.top_k("cat dog", 1)] == [0]
    assert bm.top_k("zebra", 3) == []
    assert bm.top_k("", 3) == []


def test_repeated_query_terms_count_once_and_case_is_ignored():
    bm = BM25(DOCS)
    assert bm.score("CAT cat cat", 1) == pytest.approx(bm.score("cat", 1))


def test_ties_keep_corpus_order():
    bm = BM25(["x a", "x b", "x c"])
    assert [i for i, _ in bm.top_k("x", 3)] == [0, 1, 2]


def test_tokenize_splits_on_non_alphanumerics():
    assert tokenize("Zorvak's mentor, Belun!") == ["zorvak", "s", "mentor", "belun"]


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError, match="k1"):
        BM25(DOCS, k1=-1)
    with pytest.raises(ValueError, match="b"):
        BM25(DOCS, b=1.5)
