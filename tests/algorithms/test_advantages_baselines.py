"""Baseline/normalisation advantage estimators against hand-computed values, plus invariants."""

import copy
import json
import math
import random

import pytest
import torch
from helpers import make_batch

import postrl.algorithms.advantages_baselines as ab  # noqa: F401  (registers the estimators)
from postrl.algorithms import ADVANTAGES

NAMES = ["opo", "bnpo", "lite_ppo", "reinforce_pp_baseline", "stratified_grpo", "seed_grpo", "pass_at_k",
         "spo_single_stream", "gpg"]


def run(name, batch, state=None, **hp):
    if name == "pass_at_k":
        hp.setdefault("k", 2)  # the shared batches have groups of 4; k must be smaller
    entry = ADVANTAGES.get(name)
    return entry.fn(batch, *([{} if state is None else state] if "state" in entry.needs else []), **hp)


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), atol=tol)


# ------------------------------------------------------------------------------------------ registry
def test_every_estimator_is_registered_with_paper_formula_and_needs():
    for name in NAMES:
        e = ADVANTAGES.get(name)
        assert e.arxiv and e.paper and e.summary and e.formula, name
        assert e.needs == (("state",) if name == "spo_single_stream" else ()), name


def _rich_batch(rewards, groups, lengths):
    b = make_batch(rewards, groups, lengths=lengths)
    b.metadata["completion_text"] = [f"\\boxed{{{i % 3}}}" for i in range(len(rewards))]
    b.metadata["num_tool_calls"] = [i % 2 for i in range(len(rewards))]
    b.prompt_index = torch.tensor(groups) + 100
    return b


@pytest.mark.parametrize("name", NAMES)
def test_masked_tokens_are_zero_and_values_finite(name):
    b = _rich_batch([1, 0, 0, 1, 1, 1, 0, 1], [0] * 4 + [1] * 4, [1, 2, 3, 4, 4, 3, 2, 1])
    adv = run(name, b)
    assert adv.shape == b.loss_mask.shape and torch.isfinite(adv).all()
    assert adv[b.loss_mask == 0].abs().sum() == 0
    assert adv[b.loss_mask == 1].abs().sum() > 0  # the test could fail: some signal survives


@pytest.mark.parametrize("name", ["opo", "bnpo", "lite_ppo", "stratified_grpo", "seed_grpo", "pass_at_k", "gpg"])
def test_identical_rewards_in_every_group_give_zero(name):
    b = _rich_batch([1, 1, 1, 1, 0, 0, 0, 0], [0] * 4 + [1] * 4, [1, 2, 3, 4, 4, 3, 2, 1])
    assert torch.equal(run(name, b), torch.zeros_like(b.loss_mask))


@pytest.mark.parametrize("name", ["opo", "lite_ppo", "reinforce_pp_baseline", "stratified_grpo", "seed_grpo", "gpg"])
def test_adding_a_constant_to_all_rewards_changes_nothing(name):
    rewards = [0.3, 1.2, -0.4, 0.9, 2.0, 0.1, 0.5, 0.7]
    b1 = _rich_batch(rewards, [0] * 4 + [1] * 4, [1, 2, 3, 4, 4, 3, 2, 1])
    b2 = _rich_batch([r + 5.0 for r in rewards], [0] * 4 + [1] * 4, [1, 2, 3, 4, 4, 3, 2, 1])
    assert close(run(name, b1), run(name, b2), 1e-4)


# ------------------------------------------------------------------------------------------------ OPO
def test_opo_baseline_is_the_length_weighted_group_mean():
    # r = [1, 0], l = [3, 1]: b = (3*1 + 1*0) / 4 = 0.75 -> A = [0.25, -0.75] on every generated token
    adv = ADVANTAGES["opo"](make_batch([1, 0], [0, 0], lengths=[3, 1]))
    assert close(adv, [[0.25, 0.25, 0.25], [-0.75, 0, 0]])


def test_opo_equals_dr_grpo_when_lengths_are_equal_and_zero_for_singletons():
    b = make_batch([1, 0, 0, 1, 0.4], [0, 0, 0, 0, 1], lengths=[2] * 5)
    assert close(ADVANTAGES["opo"](b), ADVANTAGES["dr_grpo"](b))
    assert ADVANTAGES["opo"](b)[4].abs().sum() == 0


# ----------------------------------------------------------------------------------------------- BNPO
def test_bnpo_beta_fit_from_group_success_rates():
    # p = [0.25, 0.5, 0.75]: mean m = 0.5, unbiased var v = (0.0625 + 0 + 0.0625) / 2 = 0.0625
    # c = m(1-m)/v - 1 = 3; a = b = 1.5 -> alpha = beta = 1 + 1.5/3 = 1.5
    # f(p) = sqrt(p(1-p)) / B(1.5, 1.5), B(1.5, 1.5) = pi/8
    # p = 0.5:  1/f = (pi/8)/0.5 = 0.785398 -> A = +-0.5 * 0.785398 = +-0.392699
    # p = 0.25: 1/f = (pi/8)/sqrt(0.1875) = 0.906900 -> A(r=1) = 0.75*0.9069 = 0.680175, A(r=0) = -0.226725
    b = make_batch([1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0], [0] * 4 + [1] * 4 + [2] * 4)
    adv = ADVANTAGES["bnpo"](b)[:, 0]
    assert close(adv[:4], [0.680175, -0.226725, -0.226725, -0.226725])
    assert close(adv[4:8], [0.392699, 0.392699, -0.392699, -0.392699])
    assert close(adv[8:], [0.226725, 0.226725, 0.226725, -0.680175])
    # alpha = beta = 3/2 is GRPO up to pi/8: (r - p) / std_pop * pi/8
    grpo_pop = ADVANTAGES["grpo"](b, eps=0.0)[:, 0] * math.sqrt(4 / 3)  # unbiased -> population std
    assert close(adv, grpo_pop * math.pi / 8)


def test_bnpo_single_group_is_reinforce_with_baseline():
    # one group: no moments, alpha = beta = 1, f = 1 -> A = r - p = [0.5, -0.5, -0.5, 0.5]
    adv = ADVANTAGES["bnpo"](make_batch([1, 0, 0, 1], [0] * 4))[:, 0]
    assert close(adv, [0.5, -0.5, -0.5, 0.5])


def test_bnpo_all_right_or_all_wrong_groups_are_zero_not_infinite():
    b = make_batch([1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0], [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4)
    adv = ADVANTAGES["bnpo"](b)[:, 0]
    assert torch.isfinite(adv).all() and adv[:8].abs().sum() == 0 and adv[8:].abs().sum() > 0


def test_bnpo_maps_the_reward_range_affinely_and_rejects_rewards_outside_it():
    binary = [1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0]
    groups = [0] * 4 + [1] * 4 + [2] * 4
    signed = ADVANTAGES["bnpo"](make_batch([2 * r - 1 for r in binary], groups), reward_min=-1.0)
    assert close(signed, ADVANTAGES["bnpo"](make_batch(binary, groups)))
    with pytest.raises(ValueError, match="reward_min, reward_max"):
        ADVANTAGES["bnpo"](make_batch([2.0, 0.0], [0, 0]))


# ------------------------------------------------------------------------------------------- Lite PPO
def test_lite_ppo_centres_per_group_and_scales_by_the_batch_std():
    # group means [0.5, 0.5 | 1, 1] -> centred [0.5, -0.5, 0, 0]
    # batch std of [1, 0, 1, 1]: mean 0.75, sq dev 0.0625*3 + 0.5625 = 0.75, /3 = 0.25 -> 0.5
    adv = ADVANTAGES["lite_ppo"](make_batch([1, 0, 1, 1], [0, 0, 1, 1]))[:, 0]
    assert close(adv, [1.0, -1.0, 0.0, 0.0])
    # GRPO would scale group 0 by its own std (0.7071): +-0.7071 instead
    assert not close(adv, ADVANTAGES["grpo"](make_batch([1, 0, 1, 1], [0, 0, 1, 1]))[:, 0])


def test_lite_ppo_is_scale_invariant():
    b1, b2 = make_batch([1, 0, 3, 1], [0, 0, 1, 1]), make_batch([3, 0, 9, 3], [0, 0, 1, 1])
    assert close(ADVANTAGES["lite_ppo"](b1), ADVANTAGES["lite_ppo"](b2))


# -------------------------------------------------------------------------------- REINFORCE++-baseline
def test_reinforce_pp_baseline_centres_per_group_then_whitens_tokens():
    # centred outcome: group 0 [1, 0] -> [0.5, -0.5]; group 1 [1, 1] -> [0, 0]
    # valid tokens (lengths 2, 1, 1, 1): [0.5, 0.5, -0.5, 0, 0], mean 0.1
    # deviations [0.4, 0.4, -0.6, -0.1, -0.1]: sq sum 0.7, unbiased var 0.175, std 0.418330
    adv = ADVANTAGES["reinforce_pp_baseline"](make_batch([1, 0, 1, 1], [0, 0, 1, 1], lengths=[2, 1, 1, 1]))
    assert close(adv[0], [0.956183, 0.956183]) and close(adv[1:, 0], [-1.434274, -0.239046, -0.239046])
    assert adv[1:, 1].abs().sum() == 0
    # a group of equal rewards is NOT zero: the paper subtracts the token-weighted batch mean


def test_reinforce_pp_baseline_ignores_per_group_offsets_and_keeps_kl_as_return_to_go():
    b1 = make_batch([1, 0, 1, 1], [0, 0, 1, 1], lengths=[2, 1, 1, 1])
    b2 = make_batch([4, 3, -1, -1], [0, 0, 1, 1], lengths=[2, 1, 1, 1])  # +3 on group 0, -2 on group 1
    assert close(ADVANTAGES["reinforce_pp_baseline"](b1), ADVANTAGES["reinforce_pp_baseline"](b2))
    # one group [1, 0] -> [0.5, -0.5]; KL token rewards row 0 [-0.1, -0.2]:
    # G row 0 = [0.5 - 0.3, 0.5 - 0.2] = [0.2, 0.3], row 1 = [-0.5, -0.5]
    b = make_batch([1, 0], [0, 0], lengths=[2, 2], token_rewards=[[-0.1, -0.2], [0.0, 0.0]])
    G = torch.tensor([0.2, 0.3, -0.5, -0.5])
    assert close(ADVANTAGES["reinforce_pp_baseline"](b).flatten(), (G - G.mean()) / G.std())


# ------------------------------------------------------------------------------------- Stratified GRPO
def test_stratified_grpo_blends_stratum_and_group_normalisation():
    # one group r = [1, 0, 1, 1], strata (tool calls) [0, 0, 1, 1]
    # SAN: stratum 0 [1, 0] -> mean 0.5, pop std 0.5 -> [1, -1]; stratum 1 [1, 1] -> [0, 0]
    # GN:  mean 0.75, pop std sqrt((3*0.0625 + 0.5625)/4) = 0.433013 -> [0.57735, -1.73205, 0.57735, 0.57735]
    # alpha 0.8: [0.8 + 0.11547, -0.8 - 0.34641, 0.11547, 0.11547]
    b = make_batch([1, 0, 1, 1], [0] * 4)
    b.metadata["num_tool_calls"] = [0, 0, 1, 1]
    adv = ADVANTAGES["stratified_grpo"](b)[:, 0]
    assert close(adv, [0.915470, -1.146410, 0.115470, 0.115470])
    assert close(ADVANTAGES["stratified_grpo"](b, alpha=1.0)[:, 0], [1, -1, 0, 0])


def test_stratified_grpo_strata_stay_inside_a_prompt_and_key_is_configurable():
    # the same stratum value in two prompts must not pool: each group is its own comparison
    b = make_batch([1, 0, 5, 3], [0, 0, 1, 1])
    b.metadata["searches"] = [2, 2, 2, 2]
    assert close(ADVANTAGES["stratified_grpo"](b, stratum_key="searches")[:, 0], [1, -1, 1, -1])


def test_stratified_grpo_without_the_metadata_column_names_it():
    with pytest.raises(ValueError, match="'num_tool_calls'"):
        ADVANTAGES["stratified_grpo"](make_batch([1, 0], [0, 0]))


# -------------------------------------------------------------------------------------------- SEED-GRPO
def _seed_batch(rewards, texts, groups=None):
    b = make_batch(rewards, groups or [0] * len(rewards))
    b.metadata["completion_text"] = texts
    return b


def test_seed_grpo_scales_by_one_minus_normalised_semantic_entropy():
    # answers 2, 2, 3, 2 -> clusters {2: 3, 3: 1}
    # SE = -(0.75 ln 0.75 + 0.25 ln 0.25) = 0.215762 + 0.346574 = 0.562335; SE_max = ln 4 = 1.386294
    # scale = 1 - 0.405639 = 0.594361; A = r - 0.75 = [0.25, 0.25, -0.75, 0.25] -> * scale
    texts = ["so \\boxed{2}", "$\\boxed{ 2 }$.", "the answer is 3", "<answer>2.0</answer>"]
    adv = ADVANTAGES["seed_grpo"](_seed_batch([1, 1, 0, 1], texts))[:, 0]
    assert close(adv, [0.148590, 0.148590, -0.445771, 0.148590])


def test_seed_grpo_one_answer_is_unscaled_and_all_distinct_answers_shrink_by_alpha():
    b_same = _seed_batch([1, 0, 0, 1], ["\\boxed{7}"] * 4)
    assert close(ADVANTAGES["seed_grpo"](b_same), ADVANTAGES["dr_grpo"](b_same))
    b_diff = _seed_batch([1, 0, 0, 1], ["\\boxed{1}", "\\boxed{2}", "no idea", "\\boxed{4}"])
    assert ADVANTAGES["seed_grpo"](b_diff).abs().sum() == 0  # SE = SE_max, alpha = 1
    assert close(ADVANTAGES["seed_grpo"](b_diff, alpha=0.5), 0.5 * ADVANTAGES["dr_grpo"](b_diff))


def test_seed_grpo_needs_completion_text_and_a_sane_alpha():
    with pytest.raises(ValueError, match="completion_text"):
        ADVANTAGES["seed_grpo"](make_batch([1, 0], [0, 0]))
    with pytest.raises(ValueError, match="alpha"):
        ADVANTAGES["seed_grpo"](_seed_batch([1, 0], ["1", "2"]), alpha=1.5)


def test_final_answer_extraction_and_normalisation():
    assert ab.final_answer("x \\boxed{\\frac{1}{2}} y \\boxed{ 3 }") == "3"
    assert ab.final_answer("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert ab.final_answer("<answer> 1,000 </answer>") == "1000"
    assert ab.final_answer("so x = 3.0.") == "3"
    assert ab.final_answer("I give up") is None


# --------------------------------------------------------------------------------------------- pass@k
def test_pass_at_k_closed_form_for_four_samples_one_correct_k2():
    # N = 4, N_neg = 3, k = 2: R = 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5, sigma = 0.5
    # A_pos = 0.5 / 0.5 = 1;  A_neg = (1 - 0.5 - C(2,1)/C(3,1)) / 0.5 = (0.5 - 2/3) / 0.5 = -1/3
    adv = ADVANTAGES["pass_at_k"](make_batch([1, 0, 0, 0], [0] * 4), k=2)[:, 0]
    assert close(adv, [1.0, -1 / 3, -1 / 3, -1 / 3], 1e-5)


def test_pass_at_k_with_k1_is_grpo_with_population_std():
    b = make_batch([1, 0, 0, 1, 1, 0, 0, 0], [0] * 4 + [1] * 4)
    expected = ADVANTAGES["grpo"](b, eps=0.0) * torch.tensor([math.sqrt(4 / 3)] * 8)[:, None]
    assert close(ADVANTAGES["pass_at_k"](b, k=1), expected, 1e-4)


def test_pass_at_k_matches_binomial_reference():
    rng = random.Random(0)
    for _ in range(20):
        n = rng.randint(2, 9)
        k = rng.randint(1, n - 1)
        rewards = [float(rng.random() < 0.4) for _ in range(n)]
        adv = ADVANTAGES["pass_at_k"](make_batch(rewards, [0] * n), k=k)[:, 0]
        c = int(sum(rewards))
        R = 1 - math.comb(n - c, k) / math.comb(n, k)
        s = math.sqrt(R * (1 - R)) + 1e-6
        neg = (1 - R - (math.comb(n - c - 1, k - 1) / math.comb(n - 1, k - 1) if n - c >= 1 else 0)) / s
        ref = [(1 - R) / s if r else neg for r in rewards]
        assert close(adv, ref, 1e-4), (n, c, k)


def test_pass_at_k_is_zero_when_every_k_subset_already_passes_and_rejects_big_k():
    # N = 4, one wrong, k = 2: every pair holds a correct answer -> R = 1, no signal
    assert ADVANTAGES["pass_at_k"](make_batch([1, 1, 1, 0], [0] * 4), k=2).abs().sum() == 0
    with pytest.raises(ValueError, match="k=4 needs groups of more than k"):
        ADVANTAGES["pass_at_k"](make_batch([1, 0, 0, 0], [0] * 4), k=4)


# ------------------------------------------------------------------------------------------------ SPO
def _spo_batch(rewards, prompts):
    b = make_batch(rewards, list(range(len(rewards))))
    b.prompt_index = torch.tensor(prompts)
    return b


def test_spo_uses_the_tracker_as_baseline_then_updates_it():
    state = {}
    # fresh prompts: v = 0.5/(0.5+0.5) = 0.5; A = [0.5, -0.5, 0.5], mean 1/6 -> [1/3, -2/3, 1/3]
    # unbiased std sqrt((1/9 + 4/9 + 1/9)/2) = 0.57735 -> [0.57735, -1.154701, 0.57735]
    adv = ADVANTAGES["spo_single_stream"](_spo_batch([1, 0, 1], [7, 8, 9]), state)
    assert close(adv[:, 0], [0.57735, -1.154701, 0.57735])
    # update: alpha <- 0.96*0.5 + r, beta <- 0.96*0.5 + (1 - r)
    expected = {"7": [1.48, 0.48], "8": [0.48, 1.48], "9": [1.48, 0.48]}
    assert {k: pytest.approx(v) for k, v in expected.items()} == state["spo_single_stream"]
    # second visit: v7 = 1.48/1.96 = 0.755102, v8 = 0.48/1.96 = 0.244898, v10 (new) = 0.5
    adv = ADVANTAGES["spo_single_stream"](_spo_batch([0, 0, 1], [7, 8, 10]), state)[:, 0]
    raw = torch.tensor([0 - 0.755102, 0 - 0.244898, 1 - 0.5])
    assert close(adv, (raw - raw.mean()) / raw.std())


def test_spo_state_round_trips_through_json():
    state = {}
    ADVANTAGES["spo_single_stream"](_spo_batch([1, 0, 1, 1], [1, 2, 3, 1]), state)
    restored = json.loads(json.dumps(state))
    kept = copy.deepcopy(state)
    nxt = _spo_batch([0, 1, 1, 0], [1, 2, 4, 3])
    a1 = ADVANTAGES["spo_single_stream"](nxt, kept)
    a2 = ADVANTAGES["spo_single_stream"](nxt, restored)
    assert torch.equal(a1, a2) and json.loads(json.dumps(kept)) == restored


def test_spo_decays_once_per_step_for_repeated_prompts_and_needs_prompt_index():
    state = {}
    # prompt 5 twice with r = [1, 0]: alpha = 0.96*0.5 + 1 = 1.48, beta = 0.96*0.5 + 1 = 1.48
    ADVANTAGES["spo_single_stream"](_spo_batch([1, 0], [5, 5]), state, rho=0.96)
    assert state["spo_single_stream"]["5"] == pytest.approx([1.48, 1.48])
    with pytest.raises(ValueError, match="prompt_index"):
        ADVANTAGES["spo_single_stream"](make_batch([1, 0], [0, 1]), {})


# ------------------------------------------------------------------------------------------------ GPG
def test_gpg_rescales_by_batch_over_valid_rows():
    # group 0 [1, 0] valid, group 1 [1, 1] invalid: alpha = 4 / (4 - 2) = 2
    # A = 2 * [0.5, -0.5, 0, 0] = [1, -1, 0, 0]
    assert close(ADVANTAGES["gpg"](make_batch([1, 0, 1, 1], [0, 0, 1, 1]))[:, 0], [1, -1, 0, 0])


def test_gpg_counts_equal_groups_as_invalid_and_matches_dr_grpo_when_all_valid():
    # group 0 [0.1]*3 is invalid, group 1 [1, 0, 0] valid: alpha = 6/3 = 2; group 1 mean 1/3
    adv = ADVANTAGES["gpg"](make_batch([0.1, 0.1, 0.1, 1, 0, 0], [0, 0, 0, 1, 1, 1]))[:, 0]
    assert close(adv, [0, 0, 0, 4 / 3, -2 / 3, -2 / 3])
    b = make_batch([1, 0, 0.2, 0.7], [0, 0, 1, 1])
    assert close(ADVANTAGES["gpg"](b), ADVANTAGES["dr_grpo"](b))
    assert close(ADVANTAGES["gpg"](b, scale_by_std=True), ADVANTAGES["grpo"](b))
