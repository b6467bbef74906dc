"""Pair rules of `postrl online` (trainers/online_pairs.py) on hand-made candidates, and the step's
pair building (online_candidates.make_pairs) with the tiny tokenizer and exact_match."""

import math

import pytest
import torch

from postrl.trainers.online_pairs import (PAIR_RULES, Candidates, best_worst, delta, dno, judge_pair,
                                          rejection_sample, rso, spin, vs_mixture, vs_reference, win_rate, win_rates)

NAN = float("nan")


def policy(rewards, *extra):
    return Candidates(rewards=list(rewards), sources=["policy"] * (len(rewards) - len(extra)) + list(extra))


# ------------------------------------------------------------------------------------ best_worst
def test_best_worst_pairs_the_first_highest_with_the_first_lowest_reward():
    # max 1.0 at rows 1 and 3 -> row 1; min 0.0 at row 0
    assert best_worst(policy([0.0, 1.0, 0.5, 1.0])) == [(1, 0)]
    # min 0.2 at rows 2 and 3 -> row 2
    assert best_worst(policy([0.7, 0.9, 0.2, 0.2])) == [(1, 2)]


def test_best_worst_gives_no_pair_when_all_rewards_are_equal_or_missing():
    assert best_worst(policy([1.0, 1.0, 1.0])) == []
    assert best_worst(policy([NAN, 0.3, NAN])) == []  # one scored sample cannot make a pair


def test_best_worst_leaves_out_samples_without_a_reward_and_non_policy_responses():
    assert best_worst(policy([NAN, 0.2, NAN, 0.7])) == [(3, 1)]
    # the gold response (last, reward 5) is not a policy sample
    assert best_worst(policy([0.0, 1.0, 5.0], "gold")) == [(1, 0)]


# ------------------------------------------------------------------------------------ judge_pair
def test_judge_pair_takes_the_judges_winner_and_skips_exact_ties():
    c = Candidates([NAN] * 6, ["policy"] * 6, judged=[(0, 1, 0.8), (2, 3, 0.3), (4, 5, 0.5)])
    # 0.8 > 0.5: (0, 1); 0.3 < 0.5: (3, 2); 0.5: no pair
    assert judge_pair(c) == [(0, 1), (3, 2)]


# ------------------------------------------------------------------------------------------ spin
def test_spin_pairs_the_gold_response_with_every_policy_sample_whatever_the_rewards():
    c = policy([1.0, 0.0, 1.0, 1.0], "gold")
    assert spin(c) == [(3, 0), (3, 1), (3, 2)]


# ------------------------------------------------------------------------------------------- rso
def scripted(values):
    it = iter(values)
    return lambda: next(it)


def test_rejection_sample_follows_the_papers_accept_rule_by_hand():
    # rewards [1.0, 0.0, 0.5], beta 0.5, accept 2
    # pass 1 (M = 1.0): row 0 p = exp(0) = 1, u = 0.9 -> accept; row 1 p = exp(-2) = 0.135, u = 0.2 -> no;
    #                   row 2 p = exp(-1) = 0.368, u = 0.5 -> no
    # pass 2 (M = 0.5 over rows 1, 2): row 1 p = exp(-1) = 0.368, u = 0.3 -> accept; done
    assert rejection_sample([1.0, 0.0, 0.5], 2, 0.5, scripted([0.9, 0.2, 0.5, 0.3])) == [0, 1]
    # same, but u = 0.4 for row 1 in pass 2 -> no; row 2 p = exp(0) = 1, u = 0.99 -> accept
    assert rejection_sample([1.0, 0.0, 0.5], 2, 0.5, scripted([0.9, 0.2, 0.5, 0.4, 0.99])) == [0, 2]


def test_rejection_sample_accepts_with_probability_exp_of_the_reward_gap():
    # worse row first: it is accepted in pass 1 w.p. exp((0 - 1) / beta) = exp(-1) = 0.368 at beta 1
    g = torch.Generator().manual_seed(0)
    hits = sum(rejection_sample([0.0, 1.0], 1, 1.0, lambda: float(torch.rand((), generator=g))) == [0]
               for _ in range(4000))
    assert abs(hits / 4000 - math.exp(-1)) < 0.03


def test_rejection_sample_caps_the_count_and_always_takes_the_best_first_in_its_pass():
    assert sorted(rejection_sample([0.1, 0.2], 5, 0.5, scripted([0.0] * 10))) == [0, 1]
    assert rejection_sample([0.2, 0.9], 1, 0.5, scripted([0.99, 0.99])) == [1]


def test_rso_with_a_tiny_beta_is_best_of_n_and_orders_each_pair_by_reward():
    # beta -> 0: only the best remaining is ever accepted: rows 1 (0.9) then 2 (0.5)
    c = policy([0.2, 0.9, 0.5, 0.1])
    c.rng = torch.Generator().manual_seed(0)
    assert rso(c, beta=1e-6, num_accepted=2) == [(1, 2)]
    c.rng = torch.Generator().manual_seed(0)
    assert rso(c, beta=1e-6, num_accepted=4) == [(1, 2), (0, 3)]


def test_rso_pairs_always_prefer_the_higher_reward_and_reject_bad_settings():
    for seed in range(20):
        c = policy([0.0, 1.0, 0.5, 0.25, 1.0, 0.0])
        c.rng = torch.Generator().manual_seed(seed)
        for i, j in rso(c, beta=0.5, num_accepted=4):
            assert c.rewards[i] > c.rewards[j]
    with pytest.raises(ValueError, match="num_accepted >= 2"):
        rso(policy([0.0, 1.0]), num_accepted=1)


# ------------------------------------------------------------------------------------------- dno
def test_dno_ranks_samples_with_the_gold_response_and_keeps_large_margins():
    # samples 0..2, gold 3. tie at the top (rows 1 and 3): the policy sample (row 1) wins
    assert dno(policy([0.0, 1.0, 0.0, 1.0], "gold")) == [(1, 0)]
    # only the gold is right: (gold, first worst)
    assert dno(policy([0.0, 0.0, 0.0, 1.0], "gold")) == [(3, 0)]
    # all equal: no strict preference
    assert dno(policy([1.0, 1.0, 1.0, 1.0], "gold")) == []
    # margin 1 is not exceeded by 1 - 0
    assert dno(policy([0.0, 1.0, 0.0, 1.0], "gold"), margin=1.0) == []
    assert dno(policy([0.0, 0.5, 2.0], "gold"), margin=1.0) == [(2, 0)]


# ----------------------------------------------------------------------------------------- delta
def test_delta_pairs_the_kth_strong_sample_with_the_kth_weak_one():
    c = Candidates([NAN] * 4, ["strong", "strong", "weak", "weak"])
    assert delta(c) == [(0, 2), (1, 3)]


# ------------------------------------------------------------------ pairings of the online losses
def test_win_rates_and_the_win_rate_rule_by_hand():
    # P(0>1) = 0.8, P(0>2) = 0.6, P(1>2) = 0.3
    # w0 = (0.8 + 0.6) / 2 = 0.7; w1 = (0.2 + 0.3) / 2 = 0.25; w2 = (0.4 + 0.7) / 2 = 0.55
    c = Candidates([NAN] * 3, ["policy"] * 3, judged=[(0, 1, 0.8), (0, 2, 0.6), (1, 2, 0.3)])
    assert win_rates(c) == pytest.approx({0: 0.7, 1: 0.25, 2: 0.55})
    assert win_rate(c) == [(0, 1)]
    # all equal: index order, never the same response twice
    tie = Candidates([NAN] * 3, ["policy"] * 3, judged=[(0, 1, 0.5), (0, 2, 0.5), (1, 2, 0.5)])
    assert win_rate(tie) == [(0, 1)]


def test_vs_reference_orders_by_the_judge_and_keeps_the_policy_sample_on_a_tie():
    c = Candidates([NAN] * 4, ["policy", "policy", "reference", "reference"], judged=[(0, 2, 0.7), (1, 3, 0.2)])
    assert vs_reference(c) == [(0, 2), (3, 1)]
    assert vs_reference(Candidates([NAN] * 2, ["policy", "reference"], judged=[(0, 1, 0.5)])) == [(0, 1)]
    assert vs_reference(Candidates([NAN] * 2, ["policy", "reference"], judged=[(0, 1, 0.5)]), skip_ties=True) == []


def test_vs_mixture_keeps_the_policy_sample_as_chosen():
    c = Candidates([1.0, 0.0, 0.0, 1.0], ["policy", "policy", "opponent", "opponent"])
    assert vs_mixture(c) == [(0, 2), (1, 3)]


def test_every_rule_has_a_paper_and_needs_from_the_documented_words():
    words = {"policy_samples", "two_samples", "gold", "judge", "judge_all", "pair_models", "random",
             "reference_sample", "mixture_opponent", "prox_opponent", "win_rates"}
    for e in PAIR_RULES:
        assert e.arxiv and e.paper and e.formula, e.name
        assert set(e.needs) <= words, e.name


# ---------------------------------------------------------------------------------- make_pairs
@pytest.fixture(scope="module")
def tok():
    from postrl.config import ModelSection
    from postrl.learner.models import load_tokenizer

    return load_tokenizer(ModelSection())


def _cfg(rule, **online):
    from postrl.config import resolve
    from postrl.trainers.online_config import OnlineConfig

    raw = {"rollout": {"n": 2}, "online": {"pair_rule": rule, **online}}
    return resolve(OnlineConfig, raw, source="test config")


def _row(q, a):
    from postrl.data.loading import PromptRow

    return PromptRow(index=0, prompt=q, answer=a, columns={"answer": a})


def test_make_pairs_scores_with_the_rewards_drops_identical_pairs_and_counts(tok):
    from postrl.rewards import RewardSet
    from postrl.trainers.online_candidates import make_pairs, pair_metrics

    cfg = _cfg("spin", gold_column="answer")
    eos = tok.eos_token_id
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"] + [eos]  # noqa: E731
    rows = [_row("1+2=", "3"), _row("2+2=", "4")]
    prompts = [tok("1+2=", add_special_tokens=False)["input_ids"], tok("2+2=", add_special_tokens=False)["input_ids"]]
    # prompt 0: samples "3" (= gold) and "5"; prompt 1: both samples equal the gold "4"
    responses = [[ids("3"), ids("5"), ids("3")], [ids("4"), ids("4"), ids("4")]]
    sources = [["policy", "policy", "gold"]] * 2
    sp = make_pairs(cfg, tok, rows, prompts, responses, sources, RewardSet(cfg.rewards), None,
                    torch.Generator(), cfg.loss_needs)
    # spin: (gold, 0) identical -> dropped; (gold, 1) kept; prompt 1 has only identical pairs
    assert [(p.prompt, p.chosen, p.rejected) for p in sp.pairs] == [(0, ids("3"), ids("5"))]
    assert (sp.pairs[0].chosen_reward, sp.pairs[0].rejected_reward) == (1.0, 0.0)
    assert sp.identical_dropped == 3 and sp.prompts_without_pair == 1
    m = pair_metrics(sp, 2)
    assert m["pairs/count"] == 1 and m["pairs/prompts_without_pair"] == 0.5 and m["pairs/reward_margin"] == 1.0
    # policy samples: "3", "5", "4", "4" -> rewards 1, 0, 1, 1
    assert m["reward/policy_mean"] == 0.75


def test_make_pairs_fills_the_win_probability_from_rewards_without_a_judge(tok):
    from postrl.rewards import RewardSet
    from postrl.trainers.online_candidates import make_pairs

    cfg = _cfg("best_worst")
    eos = tok.eos_token_id
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"] + [eos]  # noqa: E731
    prompts = [tok("1+2=", add_special_tokens=False)["input_ids"]]
    sp = make_pairs(cfg, tok, [_row("1+2=", "3")], prompts, [[ids("7"), ids("3")]], [["policy", "policy"]],
                    RewardSet(cfg.rewards), None, torch.Generator(), ("reference", "win_prob", "online_kl"))
    # chosen "3" (reward 1) over "7" (0): P = sigmoid(1 - 0) = 0.7311; online_kl: the first policy sample
    assert sp.pairs[0].chosen == ids("3") and sp.pairs[0].win_prob == pytest.approx(0.731059, abs=1e-6)
    assert sp.pairs[0].kl_response == ids("7")


def test_make_pairs_calls_the_judge_on_decoded_texts(tok):
    from postrl.rewards import RewardSet
    from postrl.trainers.online_candidates import make_pairs

    cfg = _cfg("judge_pair")
    calls = []

    def longer_wins(prompts, a, b):
        calls.append((prompts, a, b))
        return [1.0 if len(x) > len(y) else 0.0 for x, y in zip(a, b)]

    eos = tok.eos_token_id
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"] + [eos]  # noqa: E731
    prompts = [tok("1+2=", add_special_tokens=False)["input_ids"]]
    sp = make_pairs(cfg, tok, [_row("1+2=", "3")], prompts, [[ids("3"), ids("333")]], [["policy", "policy"]],
                    RewardSet(cfg.rewards), longer_wins, torch.Generator(), cfg.loss_needs)
    assert calls == [(["1+2="], ["3"], ["333"])]
    assert sp.pairs[0].chosen == ids("333") and sp.pairs[0].chosen_reward == 0.0


def test_gold_ids_names_the_missing_column_and_the_fix(tok):
    from postrl.data.loading import DataError
    from postrl.trainers.online_candidates import gold_ids

    with pytest.raises(DataError, match="column 'solution' is missing; online.gold_column"):
        gold_ids(tok, _row("1+2=", "3"), "solution", 4, 64)
    assert gold_ids(tok, _row("1+2=", "3"), "answer", 4, 64) == tok("3", add_special_tokens=False)["input_ids"] + [
        tok.eos_token_id]
    with pytest.raises(DataError, match="raise train.max_length"):
        gold_ids(tok, _row("1+2=", "3"), "answer", 4, 5)
