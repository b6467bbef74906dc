"""Pair rules of online preference training: which (chosen, rejected) pairs a prompt's responses give.

A rule sees one prompt's candidate responses as `Candidates` (their rewards, where each came
from, the pairwise judge's verdicts) and returns (chosen, rejected) index pairs into them; it
never sees tokens or models. The trainer (`trainers/online_pref.py`) builds the candidates from
what the rule's registry entry `needs`:

- "policy_samples": `rollout.n` completions sampled from the current policy (sources "policy");
- "two_samples": the rule compares samples of the policy, so `rollout.n` >= 2;
- "gold": the dataset's reference response (`online.gold_column`) appended last (source "gold");
- "judge": the pairwise judge's P(i beats j) for consecutive policy samples (0, 1), (2, 3), ...
  in `judged` (so `rollout.n` must be even); "judge_all": for every pair i < j of policy samples;
- "reference_sample": `rollout.n` samples of the reference model (source "reference"), the k-th
  judged against the k-th policy sample;
- "mixture_opponent": `rollout.n` samples of the geometric mixture pi_theta^(1-m) pi_ref^m
  (`rollout/mixture.py`, m = the loss's `mixture_coef`; source "opponent");
- "prox_opponent": `rollout.n` samples of the current Nash-MP snapshot (anchor or half-step,
  alternating every `prox_steps` of the loss; source "opponent");
- "pair_models": `rollout.n` completions of `online.strong_model` (source "strong") then as many
  of `online.weak_model` (source "weak") instead of the policy's;
- "random": the rule draws from `rng` (a per-step seeded generator, so a resumed run agrees).

Rewards are the weighted sum of the configured `rewards`; NaN means "no reward" and such a
response is never paired by a reward-based rule. Pairs of identical token sequences are
dropped by the trainer (they carry no preference signal), whatever the rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from postrl.registry import Registry

PAIR_RULES = Registry("pair rule")
"""name -> fn(c: Candidates, **hparams) -> list[(chosen index, rejected index)]."""


@dataclass
class Candidates:
    """The responses of one prompt that a pair rule chooses from."""

    rewards: list[float]
    """Total reward of each response (NaN: no reward)."""
    sources: list[str]
    """Where each response came from: "policy", "gold", "strong", "weak", "reference" or "opponent"."""
    judged: list[tuple[int, int, float]] = field(default_factory=list)
    """(i, j, P(response i beats response j)) from the pairwise judge (needs "judge")."""
    rng: torch.Generator | None = None
    """Per-step random stream (needs "random")."""

    def of(self, source: str) -> list[int]:
        return [i for i, s in enumerate(self.sources) if s == source]


def _finite(c: Candidates, rows: list[int]) -> list[int]:
    return [i for i in rows if not math.isnan(c.rewards[i])]


def _best_and_worst(c: Candidates, rows: list[int]) -> tuple[int, int] | None:
    """(first highest-reward row, first lowest-reward row) of `rows` with a reward, or None."""
    rows = _finite(c, rows)
    if len(rows) < 2:
        return None
    best = max(rows, key=lambda i: (c.rewards[i], -i))  # ties: the earliest row
    worst = min(rows, key=lambda i: (c.rewards[i], i))
    return best, worst


@PAIR_RULES.register("best_worst", paper="Direct Language Model Alignment from Online AI Feedback (OAIF)",
                     arxiv="2402.04792", needs=("policy_samples", "two_samples"),
                     summary="online DPO / iterative RLHF: the highest- against the lowest-reward policy sample")
def best_worst(c: Candidates) -> list[tuple[int, int]]:
    """Online DPO with a pointwise judge (OAIF; iterative DPO in "RLHF Workflow", arXiv 2405.07863).

        y_w = argmax_i r(x, y_i),  y_l = argmin_i r(x, y_i),  y_1..y_n ~ pi_theta(. | x)

    One pair per prompt; OAIF samples n = 2 and lets the judge pick, which with a reward judge is
    this rule at n = 2. Edge cases: a group whose rewards are all equal gives no pair; ties pick
    the earliest sample; samples without a reward (NaN) are left out.
    """
    pair = _best_and_worst(c, c.of("policy"))
    if pair is None or c.rewards[pair[0]] == c.rewards[pair[1]]:
        return []
    return [pair]


@PAIR_RULES.register("judge_pair", paper="Direct Language Model Alignment from Online AI Feedback (OAIF)",
                     arxiv="2402.04792", needs=("policy_samples", "two_samples", "judge"),
                     summary="two policy samples, the pairwise judge's preferred one is chosen (TRL OnlineDPO)")
def judge_pair(c: Candidates) -> list[tuple[int, int]]:
    """OAIF / TRL's OnlineDPOTrainer: two samples per prompt, labelled by a pairwise judge.

        p = P(y_a > y_b | x) from the judge;  (y_w, y_l) = (y_a, y_b) if p > 0.5, (y_b, y_a) if p < 0.5

    With rollout.n > 2 the samples are judged in consecutive pairs (0, 1), (2, 3), ... and each
    gives one pair. A tie (p = 0.5 exactly) gives no pair.
    """
    out = []
    for i, j, p in c.judged:
        if p > 0.5:
            out.append((i, j))
        elif p < 0.5:
            out.append((j, i))
    return out


@PAIR_RULES.register("spin", paper="Self-Play Fine-Tuning Converts Weak Language Models to Strong Language Models",
                     arxiv="2401.01335", needs=("policy_samples", "gold"),
                     summary="self-play: the dataset's reference answer against each of the policy's own samples")
def spin(c: Candidates) -> list[tuple[int, int]]:
    """SPIN (Algorithm 1): chosen = the SFT data's response y, rejected = the policy's own y'.

        y ~ p_data(. | x),  y' ~ p_theta_t(. | x)
        loss = l( lambda log p_theta(y|x)/p_theta_t(y|x) - lambda log p_theta(y'|x)/p_theta_t(y'|x) )

    With the logistic l this is DPO with the previous iterate p_theta_t as reference
    (`online.reference: previous_iterate`, `loss.name: dpo`, beta = lambda). One pair per policy
    sample (the paper samples one per prompt, rollout.n = 1). Rewards play no part: a sample
    that equals the reference token for token is dropped by the trainer, any other sample is
    rejected even when it is also correct, as in the paper.
    """
    gold = c.of("gold")[0]
    return [(gold, i) for i in c.of("policy")]


def rejection_sample(rewards: list[float], num_samples: int, beta: float,
                     uniform: Callable[[], float]) -> list[int]:
    """RSO's statistical rejection sampling (arXiv 2309.06657, Algorithm 1): indices of
    `num_samples` responses accepted, in acceptance order.

    Target pi*(y|x) ∝ pi_sft(y|x) exp(r(x, y) / beta) with the responses drawn from pi_sft as
    proposals. Each pass over the responses not yet accepted draws u ~ U[0, 1) per response in
    order and accepts it when u < exp((r - M) / beta), M the highest reward among them (so the
    best one is always accepted); passes repeat until `num_samples` are accepted. `num_samples`
    is capped at the number of responses.
    """
    remaining = list(range(len(rewards)))
    accepted: list[int] = []
    num_samples = min(num_samples, len(rewards))
    while len(accepted) < num_samples:
        top = max(rewards[i] for i in remaining)
        for i in list(remaining):
            if uniform() >= math.exp((rewards[i] - top) / beta):
                continue
            accepted.append(i)
            remaining.remove(i)
            if len(accepted) == num_samples:
                break
    return accepted


@PAIR_RULES.register("rso", paper="Statistical Rejection Sampling Improves Preference Optimization",
                     arxiv="2309.06657", needs=("policy_samples", "two_samples", "random"),
                     summary="rejection-sample toward pi* ∝ pi exp(r/beta), then pair the accepted samples by reward")
def rso(c: Candidates, *, beta: float = 0.5, num_accepted: int = 2) -> list[tuple[int, int]]:
    """RSO "rso-sample-rank": accept `num_accepted` of the policy's samples by statistical
    rejection sampling (`rejection_sample`) toward

        pi*(y|x) ∝ pi_sft(y|x) exp(r(x, y) / beta),  accept y_i w.p. exp((r_i - max_j r_j) / beta)

    then pair the accepted in acceptance order, (a1, a2), (a3, a4), ..., each ordered by reward;
    an equal-reward pair is dropped. Train with `loss.name: dpo` (sigmoid) or `hinge` (SLiC /
    RSO's hinge-norm). Defaults: the paper samples 64 and accepts 8 from a reward scale where
    beta = 0.5 worked best; at rollout.n = 8 here, 2 accepted give one pair per prompt (the
    paper's 8-of-64 ratio and beta for other reward scales could not be confirmed; tune beta to
    the spread of your rewards: small beta -> best-of-n, large beta -> uniform). Samples without
    a reward are left out. As proposal this loop uses the current policy (the paper: the SFT
    policy, once): with `online.iterations: 1` and few steps the two coincide.
    """
    if beta <= 0 or num_accepted < 2:
        raise ValueError(f"online.pair_kwargs: rso needs beta > 0 and num_accepted >= 2 (got beta={beta}, "
                         f"num_accepted={num_accepted})")
    rows = _finite(c, c.of("policy"))
    if len(rows) < 2:
        return []
    gen = c.rng

    def uniform() -> float:
        return float(torch.rand((), generator=gen))

    picked = [rows[k] for k in rejection_sample([c.rewards[i] for i in rows], num_accepted, beta, uniform)]
    out = []
    for a, b in zip(picked[0::2], picked[1::2]):
        if c.rewards[a] != c.rewards[b]:
            out.append((a, b) if c.rewards[a] > c.rewards[b] else (b, a))
    return out


@PAIR_RULES.register("dno", paper="Direct Nash Optimization: Teaching Language Models to Self-Improve with "
                     "General Preferences", arxiv="2404.03715", needs=("policy_samples", "gold"),
                     summary="DNO-Prct: policy samples and the gold response, best vs worst, kept on a large margin")
def dno(c: Candidates, *, margin: float = 0.0) -> list[tuple[int, int]]:
    """DNO-Prct (Algorithm 2): rank the policy's samples together with the gold (teacher)
    response by the oracle, pair the best with the worst, keep large-margin pairs only.

        Y = {y_1..y_n ~ pi_t(. | x)} ∪ {y_gold};  y_w = argmax_Y r,  y_l = argmin_Y r
        keep (y_w, y_l) iff r(y_w) - r(y_l) > margin
        pi_{t+1} = argmax E log sigmoid( eta log pi(y_w)/pi_t(y_w) - eta log pi(y_l)/pi_t(y_l) )

    i.e. DPO on the kept pairs with the previous iterate as reference (`online.reference:
    previous_iterate`). The oracle is the configured reward (the paper: GPT-4 scores). The gold
    response is scored like a sample; ties at the top go to a policy sample (it comes first), so
    the gold is chosen only when it beats every sample. `margin`: the paper filters by a margin
    on its score scale whose value we could not confirm; 0 keeps every strict preference.
    """
    pair = _best_and_worst(c, c.of("policy") + c.of("gold"))
    if pair is None or not c.rewards[pair[0]] - c.rewards[pair[1]] > margin:
        return []
    return [pair]


@PAIR_RULES.register("delta", paper="The Delta Learning Hypothesis: Preference Tuning on Weak Data can Yield "
                     "Strong Gains", arxiv="2507.06187", needs=("pair_models",),
                     summary="chosen from a stronger model, rejected from a weaker one, no judge")
def delta(c: Candidates) -> list[tuple[int, int]]:
    """Delta learning: y_w ~ pi_strong(. | x), y_l ~ pi_weak(. | x), no judge and no reward.

        pairs (y_w^k, y_l^k), k = 1..n, the k-th sample of each model

    The paper pairs a 3B model's response (chosen) with a 1.5B model's (rejected), both weaker
    than the tuned model, and trains DPO: the relative quality gap, not the absolute quality,
    carries the signal.
    """
    return list(zip(c.of("strong"), c.of("weak")))


# ------------------------------------------------------------------ pairings of the online losses
def win_rates(c: Candidates) -> dict[int, float]:
    """Win rate of each judged response: mean over the others of P(it beats them), from `judged`
    (P(j beats i) = 1 - P(i beats j))."""
    wins: dict[int, list[float]] = {}
    for i, j, p in c.judged:
        wins.setdefault(i, []).append(p)
        wins.setdefault(j, []).append(1.0 - p)
    return {i: sum(v) / len(v) for i, v in sorted(wins.items())}


@PAIR_RULES.register("win_rate", paper="Self-Play Preference Optimization for Language Model Alignment (SPPO)",
                     arxiv="2405.00675", needs=("policy_samples", "two_samples", "judge_all", "win_rates"),
                     summary="every pair of policy samples judged; highest against lowest win rate (SPPO)")
def win_rate(c: Candidates) -> list[tuple[int, int]]:
    """SPPO's estimate of P(y > pi_t | x): each sample's mean win probability against the others.

        w_i = 1/(K-1) sum_{j != i} P(y_i > y_j | x);  y_w = argmax_i w_i,  y_l = argmin_{i != w} w_i

    One pair per prompt; ties go to the lowest index, so a group whose win rates are all equal
    still gives (y_1, y_2): SPPO's loss then pulls both toward the same target.
    """
    rates = win_rates(c)
    if len(rates) < 2:
        return []
    best = max(rates, key=lambda i: (rates[i], -i))
    worst = min((i for i in rates if i != best), key=lambda i: (rates[i], i))
    return [(best, worst)]


@PAIR_RULES.register("vs_reference", paper="Exploratory Preference Optimization: Harnessing Implicit "
                     "Q*-Approximation for Sample-Efficient RLHF (XPO)", arxiv="2405.21046",
                     needs=("policy_samples", "reference_sample"),
                     summary="a policy sample against a reference-model sample, ordered by the judge (XPO)")
def vs_reference(c: Candidates, *, skip_ties: bool = False) -> list[tuple[int, int]]:
    """XPO's pairs: y ~ pi_theta, y~ ~ pi_ref, labelled by the judge (a tie keeps y as chosen).

        (y_w, y_l) = (y, y~) if P(y > y~ | x) >= 0.5 else (y~, y)

    As TRL's XPOTrainer (chosen = policy where its score >= the reference's). With a 0/1
    verifier as judge most pairs tie, and "tie -> own sample chosen" then trains the policy
    toward whatever it samples: `skip_ties: true` drops pairs with P = 0.5 exactly (on the tiny
    arithmetic task this is the difference between collapse and improvement, docs/online_preference.md).
    """
    return [(i, j) if p >= 0.5 else (j, i) for i, j, p in c.judged if not (skip_ties and p == 0.5)]


@PAIR_RULES.register("vs_mixture", paper="Nash Learning from Human Feedback (Nash-MD)", arxiv="2312.00886",
                     needs=("policy_samples", "mixture_opponent"),
                     summary="the policy's own sample against one of the geometric policy/reference mixture (Nash-MD)")
def vs_mixture(c: Candidates) -> list[tuple[int, int]]:
    """Nash-MD's pairs, not reordered: chosen_* hold y ~ pi_theta, rejected_* the opponent
    y' ~ pi_mix ∝ pi_theta^(1-m) pi_ref^m; the loss reads P(y > y') from `chosen_win_prob`.
    """
    return list(zip(c.of("policy"), c.of("opponent")))


@PAIR_RULES.register("vs_prox", paper="Accelerating Nash Learning from Human Feedback via Mirror Prox (Nash-MP)",
                     arxiv="2505.19731", needs=("policy_samples", "prox_opponent"),
                     summary="the policy's own sample against one of the current mirror-prox snapshot (Nash-MP)")
def vs_prox(c: Candidates) -> list[tuple[int, int]]:
    """Nash-MP's pairs, not reordered: chosen_* hold y ~ pi_theta, rejected_* the opponent
    y' ~ pi_k (half phase) or pi_{k+1/2} (full phase); the loss reads P(y > y') from `chosen_win_prob`.
    """
    return list(zip(c.of("policy"), c.of("opponent")))
