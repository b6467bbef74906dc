"""B-STaR (trainers/b_star.py): the balance score and the grid choice, by hand."""

import pytest
import torch

from postrl.config import RewardSpec
from postrl.data.loading import PromptRow
from postrl.learner.tiny import build_tokenizer
from postrl.rewards import RewardSet
from postrl.rollout.batch import RolloutBatch
from postrl.rollout.engines import SamplingParams
from postrl.trainers.b_star import balance_score, choose, probe_indices

# 3 prompts. group 0: [5] correct, [5] correct (a duplicate), [6] wrong, [7] correct;
# group 1: [8] correct, [9] wrong; group 2: [4] wrong
GROUPS = [0, 0, 0, 0, 1, 1, 2]
COMPLETIONS = [[5], [5], [6], [7], [8], [9], [4]]
CORRECT = [True, True, False, True, True, False, False]


def test_balance_score_by_hand():
    kept = [0, 1, 2, 3, 4]  # row 5 and 6 not kept
    # group 0: unique kept {5: T, 6: F, 7: T} -> n = 3, n' = 2; n* = 2: min(2/2, 1) * 2/3 = 2/3
    # group 1: {8: T} -> n = 1, n' = 1: min(1/2, 1) * 1/1 = 1/2
    # group 2: nothing kept -> 0
    assert balance_score(kept, CORRECT, GROUPS, COMPLETIONS, 3, n_star=2) == pytest.approx((2 / 3 + 1 / 2) / 3)
    # n* = 4: group 0 min(2/4, 1) * 2/3 = 1/3; group 1 (1/4) * 1 = 1/4
    assert balance_score(kept, CORRECT, GROUPS, COMPLETIONS, 3, n_star=4) == pytest.approx((1 / 3 + 1 / 4) / 3)


def test_balance_score_invariants():
    # keeping a wrong completion lowers the score (exploitation); a new correct one raises it (exploration)
    base = balance_score([0, 3], CORRECT, GROUPS, COMPLETIONS, 3, n_star=2)  # group 0: 2 correct -> 1, mean 1/3
    assert base == pytest.approx(1 / 3)
    assert balance_score([0, 2, 3], CORRECT, GROUPS, COMPLETIONS, 3, n_star=2) < base
    assert balance_score([0, 3, 4], CORRECT, GROUPS, COMPLETIONS, 3, n_star=2) > base
    # a duplicate adds nothing; above the cap n* more correct answers add nothing either
    assert balance_score([0, 1, 3], CORRECT, GROUPS, COMPLETIONS, 3, n_star=2) == base
    assert balance_score([0, 3], CORRECT, GROUPS, COMPLETIONS, 3, n_star=1) == base
    assert balance_score([], CORRECT, GROUPS, COMPLETIONS, 3, n_star=2) == 0.0
    with pytest.raises(ValueError, match="n_star"):
        balance_score([0], CORRECT, GROUPS, COMPLETIONS, 3, n_star=0)


class FakeEngine:
    """Completions by temperature: 0.5 repeats the answer, 1.0 varies it (two correct spellings, two wrong)."""

    def __init__(self, tok):
        self.tok, self.calls = tok, []

    def generate(self, prompt_ids, params, seed=0, *, first_index=0):
        self.calls.append((params.temperature, seed))
        texts = {0.5: [["3"] * 4, ["5"] * 4], 1.0: [["3", " 3", "4", "9"], ["5", "5 ", "6", "2"]]}[params.temperature]
        enc = [[self.tok(t, add_special_tokens=False)["input_ids"] for t in ts] for ts in texts]
        flat = [c for cs in enc for c in cs]
        return RolloutBatch.from_token_lists([p for p in prompt_ids for _ in range(4)], flat, self.tok.pad_token_id,
                                             group_ids=[g for g in range(2) for _ in range(4)])


def _choose(engine, tok, temperatures, thresholds, keep="all_above"):
    rows = [PromptRow(0, "1+2=", "3", {"answer": "3"}), PromptRow(1, "2+3=", "5", {"answer": "5"})]
    return choose(engine, tok, RewardSet([RewardSpec(name="exact_match")]), rows, [[1, 2], [3, 4]],
                  SamplingParams(n=4), temperatures=temperatures, thresholds=thresholds, keep=keep, n_star=2,
                  success_threshold=1.0, seed=7)


def test_choose_picks_the_pair_with_the_best_balance():
    tok = build_tokenizer()
    engine = FakeEngine(tok)
    c = _choose(engine, tok, [0.5, 1.0], [0.0, 1.0])
    # T=0.5: one unique correct answer per prompt, kept at either threshold: min(1/2, 1) * 1 = 0.5
    # T=1.0, tau=1.0: 2 unique correct kept per prompt, nothing wrong: min(2/2, 1) * 2/2 = 1.0
    # T=1.0, tau=0.0: all 4 kept, 2 correct: 1 * 2/4 = 0.5
    assert c.scores == pytest.approx({(0.5, 0.0): 0.5, (0.5, 1.0): 0.5, (1.0, 0.0): 0.5, (1.0, 1.0): 1.0})
    assert (c.temperature, c.threshold, c.balance) == (1.0, 1.0, 1.0)
    assert engine.calls == [(0.5, 7), (1.0, 7)]  # one sample per temperature, the same seed for each
    # ties go to the first pair in grid order
    assert (_choose(engine, tok, [0.5], [1.0, 0.0]).threshold, _choose(engine, tok, [0.5], [0.0, 1.0]).threshold) \
        == (1.0, 0.0)
    # keep: best keeps one per prompt: T=1.0, tau=1.0 -> 1 correct kept: min(1/2, 1) * 1 = 0.5
    assert _choose(engine, tok, [1.0], [1.0], keep="best").balance == pytest.approx(0.5)


def test_probe_is_a_pure_function_of_the_seed():
    assert probe_indices(10, 4, 3) == probe_indices(10, 4, 3)
    assert len(set(probe_indices(10, 4, 3))) == 4 and probe_indices(10, 4, 3) != probe_indices(10, 4, 4)
    assert sorted(probe_indices(3, 5, 0)) == [0, 1, 2]  # a probe larger than the data is the whole data
