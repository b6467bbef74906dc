"""Reward combiners on hand-sized batches, with the arithmetic written out."""

import math

import pytest
import torch

from postrl.rewards.combiners import COMBINERS, CombineInputs

NAN = float("nan")


def _inputs(raw, weights, group_ids=None, step=0, shaped=None, likelihood=None):
    raw = {k: torch.tensor(v, dtype=torch.float32) for k, v in raw.items()}
    shaped = {k: torch.tensor(v, dtype=torch.float32) for k, v in (shaped or {}).items()} or dict(raw)
    return CombineInputs(shaped, raw, weights, None if group_ids is None else torch.tensor(group_ids), step,
                         None if likelihood is None else torch.tensor(likelihood, dtype=torch.float32))


def test_weighted_sum_counts_none_as_zero():
    # a: [1, None, 0] x 1 + b: [0.5, 0.5, 1] x 2 = [2, 1, 2]
    out = COMBINERS["weighted_sum"](_inputs({"a": [1, NAN, 0], "b": [0.5, 0.5, 1]}, {"a": 1.0, "b": 2.0}))
    assert out.total.tolist() == [2.0, 1.0, 2.0]


def test_trust_weights_a_disagreeing_model_reward_and_anneals():
    raw = {"acc": [1, 1, 0, 0, 1, 1, 1, 0], "think": [0.2, 0.4, 0.9, 0.7, 0.5, 0.5, 0.8, 0.1]}
    inp = _inputs(raw, {"acc": 1.0, "think": 0.3}, group_ids=[0, 0, 0, 0, 1, 1, 2, 2], step=100)
    out = COMBINERS["trust"](inp, model="think", anneal_steps=500)
    anneal = math.exp(-100 / 500)
    # group 0: mu_c = (0.2 + 0.4) / 2 = 0.3 < mu_w = (0.9 + 0.7) / 2 = 0.8 -> gamma = exp(-0.5)
    g0 = math.exp(-0.5)
    expected = [1 + 0.3 * g0 * anneal * 0.2, 1 + 0.3 * g0 * anneal * 0.4, 0.3 * g0 * anneal * 0.9,
                0.3 * g0 * anneal * 0.7,
                1.0, 1.0,  # group 1: all correct -> no model-reward term
                1 + 0.3 * 1.0 * anneal * 0.8, 0.3 * 1.0 * anneal * 0.1]  # group 2: mu_c 0.8 >= mu_w 0.1 -> gamma 1
    assert out.total.tolist() == pytest.approx(expected, abs=1e-6)
    assert out.metrics["trust/gamma_mean"] == pytest.approx((g0 + 1) / 2)
    assert out.metrics["trust/active_groups"] == pytest.approx(2 / 3)
    assert out.metrics["trust/anneal"] == pytest.approx(anneal)


def test_trust_without_annealing_and_a_missing_model_reward():
    inp = _inputs({"acc": [1, 0], "think": [0.5, NAN]}, {"acc": 1.0, "think": 1.0}, group_ids=[0, 0], step=10_000)
    # the incorrect row's model reward is None: no incorrect mean -> no model-reward term at all
    assert COMBINERS["trust"](inp, model="think", anneal_steps=None).total.tolist() == [1.0, 0.0]
    inp = _inputs({"acc": [1, 0], "think": [0.5, 0.25]}, {"acc": 1.0, "think": 1.0}, group_ids=[0, 0], step=10_000)
    assert COMBINERS["trust"](inp, model="think", anneal_steps=None).total.tolist() == [1.5, 0.25]
    with pytest.raises(ValueError, match="kwargs.model must name"):
        COMBINERS["trust"](inp)
    with pytest.raises(ValueError, match="'thinking' is not a configured reward; the rewards are acc, think"):
        COMBINERS["trust"](inp, model="thinking")


def test_trust_thresholds_the_raw_outcome_but_uses_the_shaped_model_reward():
    # raw acc 0.6 >= 0.5 is correct even though its shaped value is negative
    inp = _inputs({"acc": [0.6, 0.4], "think": [1.0, 0.0]}, {"acc": 1.0, "think": 1.0}, group_ids=[0, 0],
                  shaped={"acc": [1.0, -1.0], "think": [2.0, 0.0]})
    # mu_c = 2 >= mu_w = 0 -> gamma 1; totals: shaped acc + shaped think
    assert COMBINERS["trust"](inp, model="think", anneal_steps=None).total.tolist() == [3.0, -1.0]


def test_constraints_replace_the_reward_of_violators():
    raw = {"exact": [1, 1, 1, 0], "format": [1, 0, NAN, 1]}
    inp = _inputs(raw, {"exact": 2.0, "format": 5.0})
    # row 1 fails the judge; row 2's judge does not apply; the judge's weight is not used
    out = COMBINERS["constraints"](inp, judges=["format"])
    assert out.total.tolist() == [2.0, 0.0, 2.0, 0.0]
    assert out.metrics["constraints/violation_frac"] == 0.25 and out.metrics["constraints/format/fail_frac"] == 0.25
    assert COMBINERS["constraints"](inp, judges=["format"], violation_reward=-1.0).total.tolist() == [2, -1, 2, 0]
    # two judges: a row must pass both
    raw2 = {"exact": [1, 1], "j1": [1, 1], "j2": [0.4, 0.6]}
    out2 = COMBINERS["constraints"](_inputs(raw2, {"exact": 1.0, "j1": 1.0, "j2": 1.0}), judges=["j1", "j2"])
    assert out2.total.tolist() == [0.0, 1.0]


def test_constraints_reject_bad_judges():
    inp = _inputs({"exact": [1.0], "format": [1.0]}, {"exact": 1.0, "format": 1.0})
    with pytest.raises(ValueError, match="at least one reward that acts as a judge"):
        COMBINERS["constraints"](inp)
    with pytest.raises(ValueError, match="every reward is a judge"):
        COMBINERS["constraints"](inp, judges=["exact", "format"])
    with pytest.raises(ValueError, match="'formt' is not a configured reward"):
        COMBINERS["constraints"](inp, judges=["formt"])


def test_consistency_bonus_goes_to_accurate_completions_likely_under_the_reference():
    # group 0: a = [1, 1, 1, 0], mean 0.75 -> accurate rows 0, 1, 2; c clamped to 0.95:
    # [0.9, 0.5, 0.95, 0.8]; m = (0.9 + 0.5 + 0.95) / 3 = 0.78333 -> rows 0 and 2 get 0.5 * 1
    # group 1: a = [0.05, 0.05]: below min_accuracy 0.1 -> nothing
    raw = {"acc": [1, 1, 1, 0, 0.05, 0.05], "fmt": [1, 1, 1, 1, 0, 0]}
    inp = _inputs(raw, {"acc": 1.0, "fmt": 0.5}, group_ids=[0, 0, 0, 0, 1, 1],
                  likelihood=[0.9, 0.5, 0.99, 0.8, 0.9, 0.9])
    out = COMBINERS["consistency"](inp)
    base = [1.5, 1.5, 1.5, 0.5, 0.05, 0.05]
    assert out.total.tolist() == pytest.approx([b + x for b, x in zip(base, [0.5, 0, 0.5, 0, 0, 0])])
    assert out.metrics["consistency/bonus_frac"] == pytest.approx(2 / 6)
    # margin 0.3: row 1 (0.5 >= 0.7833 - 0.3) also gets it; bonus 1.0 doubles it
    out = COMBINERS["consistency"](inp, margin=0.3, bonus=1.0)
    assert out.total.tolist() == pytest.approx([b + x for b, x in zip(base, [1, 1, 1, 0, 0, 0])])


def test_consistency_skips_rows_without_an_answer():
    # row 1 is accurate but has no answer span (NaN): left out of the mean, no bonus
    inp = _inputs({"acc": [1, 1, 0]}, {"acc": 1.0}, group_ids=[0, 0, 0], likelihood=[0.4, NAN, 0.9])
    assert COMBINERS["consistency"](inp).total.tolist() == pytest.approx([1.5, 1.0, 0.0])
    inp = _inputs({"acc": [1, 0]}, {"acc": 1.0}, group_ids=[0, 0], likelihood=[NAN, NAN])
    assert COMBINERS["consistency"](inp).total.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="needs the answer likelihoods"):
        COMBINERS["consistency"](_inputs({"acc": [1.0]}, {"acc": 1.0}, group_ids=[0]))


def test_every_combiner_has_a_paper_and_a_formula():
    for e in COMBINERS:
        assert e.paper and e.summary and e.formula, e.name
    assert COMBINERS.get("consistency").arxiv == "2506.16141" and COMBINERS.get("trust").arxiv == "2505.17018"
    assert COMBINERS.get("constraints").arxiv == "2409.20370"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_invariants_on_random_batches(seed):
    g = torch.Generator().manual_seed(seed)
    B = 12
    raw = {"acc": (torch.rand(B, generator=g) > 0.5).float().tolist(), "m": torch.rand(B, generator=g).tolist(),
           "j": [1.0] * B}
    weights = {"acc": 1.0, "m": 0.3, "j": 1.0}
    groups = [i // 4 for i in range(B)]
    plain = COMBINERS["weighted_sum"](_inputs(raw, weights)).total
    # every judge passes: constraints is the weighted sum without the judges
    cons = COMBINERS["constraints"](_inputs(raw, weights), judges=["j"]).total
    assert torch.allclose(cons, plain - 1.0)
    # fully annealed trust is the weighted sum without the model reward (m >= 0); gamma <= 1, so
    # unannealed it lies between that and the plain weighted sum
    late = COMBINERS["trust"](_inputs(raw, weights, groups, step=10**6), model="m", anneal_steps=1.0).total
    assert torch.allclose(late, plain - 0.3 * torch.tensor(raw["m"]))
    early = COMBINERS["trust"](_inputs(raw, weights, groups), model="m").total
    assert (early <= plain + 1e-6).all() and (early >= late - 1e-6).all()
    # the consistency bonus is never negative and only goes to rows with a positive outcome
    lik = torch.rand(B, generator=g).tolist()
    out = COMBINERS["consistency"](_inputs(raw, weights, groups, likelihood=lik)).total
    bonus = out - plain
    assert (bonus >= 0).all() and (bonus[torch.tensor(raw["acc"]) == 0] == 0).all()
