"""Reward combiners: how the per-function rewards of a step's batch become one reward per completion.

A reward function (`REWARDS`) sees one completion at a time. A combiner sees every function's
values for the whole batch, with the group ids and the step, so it can weight one reward by how
another behaves in the group (SophiaVL-R1's trust weight), treat some functions as constraints
(CGPO's judges) or add a group-relative bonus (GRPO-CARE). `config.reward_combine` names one;
`weighted_sum` is the default. The trainer calls it once per step through `rewards/shaping.py`,
after each function's own normalisation and clipping (`rewards[i].normalize`, `rewards[i].clip`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch

from postrl.registry import Registry

COMBINERS = Registry("reward combiner")
"""name -> fn(inputs: CombineInputs, **hparams) -> CombineOutput(total [B], metrics).

A combiner refers to reward functions by their display names (the function name, `fn` of
`module:fn`, repeats as `name_2`). needs: "groups" (it compares the completions of one prompt:
`inputs.group_ids` is set, rollout.n must be >= 2, and it cannot score rows outside the training
batch, so estimators that need "greedy_rewards" or "mc_values" cannot be used with it);
"answer_likelihood" (the trainer fills `inputs.answer_likelihood` [B]: exp of the mean log-prob of
each completion's answer tokens given the prompt and the reasoning before them, under an EMA copy
of the policy that the trainer updates after each step (`learner/ema.py`, checkpointed); the
answer span, the EMA decay and its interval come from the combiner's resolved `answer_pattern`,
`fallback`, `ema_decay` and `ema_every`; one local learner process only)."""


@dataclass
class CombineInputs:
    """Everything a combiner may read about one batch of B completions."""

    rewards: dict[str, torch.Tensor]
    """display name -> [B] float32 after the function's normalisation/clipping; NaN where it returned None."""
    raw: dict[str, torch.Tensor]
    """display name -> [B] float32 as the function returned it (NaN for None): for thresholds."""
    weights: dict[str, float]
    """display name -> the config's weight."""
    group_ids: torch.Tensor | None = None
    """[B] long; None when the rows are not a training batch (greedy baselines, Monte-Carlo values)."""
    step: int = 0
    """The RL step (0-based) the batch trains."""
    answer_likelihood: torch.Tensor | None = None
    """[B] float32 (needs "answer_likelihood"); NaN where no answer span was found."""


@dataclass
class CombineOutput:
    total: torch.Tensor
    """[B] float32: the reward the advantage estimator reads (`batch.rewards`)."""
    metrics: dict[str, float] = field(default_factory=dict)


def weighted(inputs: CombineInputs, exclude: Sequence[str] = ()) -> torch.Tensor:
    """sum_k w_k r_k over the functions not in `exclude`; a None (NaN) value counts as 0."""
    B = len(next(iter(inputs.rewards.values())))
    total = torch.zeros(B, dtype=torch.float32)
    for name, r in inputs.rewards.items():
        if name not in exclude:
            total += inputs.weights[name] * torch.nan_to_num(r, nan=0.0)
    return total


def _function(inputs: CombineInputs, name: str | None, key: str, combiner: str) -> str:
    """The display name a hyper-parameter refers to (None: the first function), or a clear error."""
    if name is None:
        return next(iter(inputs.raw))
    if name not in inputs.raw:
        raise ValueError(f"reward_combine {combiner}: {key}={name!r} is not a configured reward; the rewards are "
                         f"{', '.join(inputs.raw)}")
    return name


def _groups(inputs: CombineInputs, combiner: str) -> list[torch.Tensor]:
    if inputs.group_ids is None:
        raise ValueError(f"reward_combine {combiner} compares the completions of a prompt and needs group ids")
    return [(inputs.group_ids == g).nonzero().flatten() for g in inputs.group_ids.unique().tolist()]


@COMBINERS.register("weighted_sum", paper="(standard practice; TRL's reward_weights)",
                    summary="sum_k w_k r_k over the reward functions (None counts as 0)")
def weighted_sum(inputs: CombineInputs) -> CombineOutput:
    """The weighted sum of the (normalised, clipped) rewards.

        r_i = sum_k w_k r_{k,i}          a None (NaN) r_{k,i} counts as 0
    """
    return CombineOutput(weighted(inputs))


@COMBINERS.register("trust", paper="SophiaVL-R1: Reinforcing MLLMs Reasoning with Thinking Reward (Trust-GRPO)",
                    arxiv="2505.17018", needs=("groups",),
                    summary="a model (thinking) reward weighted by its agreement with the outcome in the group, "
                            "annealed over steps")
def trust(inputs: CombineInputs, *, model: str | None = None, outcome: str | None = None, threshold: float = 0.5,
          anneal_steps: float | None = 500.0) -> CombineOutput:
    """Trust-GRPO: trust a model reward only as far as it prefers the group's correct completions.

        correct_i = outcome_i >= threshold                       (the outcome reward, before shaping)
        mu_c = mean_{correct i in g} R^t_i,   mu_w = mean_{incorrect i in g} R^t_i
        gamma_g = 1                  if mu_c >= mu_w
                  exp(mu_c - mu_w)   otherwise                    (in (0, 1): the model reward disagrees)
        r_i = sum_{k != model} w_k r_{k,i} + w_model * gamma_g * exp(-step / anneal_steps) * R^t_i

    R^t is the reward function named `model` (the paper's thinking reward model, here any
    reward, e.g. `reward_model`); `outcome` is the rule-based outcome reward (default: the first
    function). The model reward's `weight` is the paper's alpha (0.3 in the released code, whose
    `T` = anneal_steps is 500); anneal_steps None turns annealing off. A group without both a
    correct and an incorrect completion gets no model-reward term (gamma is undefined; the
    released code zeroes the thinking reward there too). A model reward of None counts as 0 and
    is left out of the means. The paper's text of eqs. 1-4 could not be read here; the formula
    follows the authors' released code (verl `CustomRewardManager`).
    """
    if model is None:
        raise ValueError("reward_combine trust: kwargs.model must name the model (thinking) reward, e.g. "
                         "{model: reward_model}")
    model = _function(inputs, model, "model", "trust")
    outcome = _function(inputs, outcome, "outcome", "trust")
    if model == outcome:
        raise ValueError(f"reward_combine trust: model and outcome are both {model!r}; name two different rewards")
    anneal = math.exp(-inputs.step / anneal_steps) if anneal_steps else 1.0
    thinking = inputs.rewards[model]
    correct = torch.nan_to_num(inputs.raw[outcome], nan=-math.inf) >= threshold
    gamma = torch.zeros_like(thinking)  # 0: no model-reward term for this row
    gammas = []
    for rows in _groups(inputs, "trust"):
        t, c = thinking[rows], correct[rows]
        ok = ~t.isnan()
        if not (c & ok).any() or not (~c & ok).any():
            continue
        mu_c, mu_w = float(t[c & ok].mean()), float(t[~c & ok].mean())
        g = 1.0 if mu_c >= mu_w else math.exp(mu_c - mu_w)
        gamma[rows] = g
        gammas.append(g)
    total = weighted(inputs, exclude=(model,)) + inputs.weights[model] * gamma * anneal * torch.nan_to_num(thinking)
    n_groups = len(inputs.group_ids.unique())
    return CombineOutput(total, {"trust/gamma_mean": sum(gammas) / len(gammas) if gammas else float("nan"),
                                 "trust/active_groups": len(gammas) / max(n_groups, 1), "trust/anneal": anneal})


@COMBINERS.register("constraints", paper="The Perfect Blend: Redefining RLHF with Mixture of Judges (CGPO)",
                    arxiv="2409.20370",
                    summary="mixture of judges: a completion that fails any judge gets violation_reward")
def constraints(inputs: CombineInputs, *, judges: Sequence[str] = (), threshold: float = 0.5,
                violation_reward: float = 0.0) -> CombineOutput:
    """CGPO's judges as constraints: only completions that satisfy every judge keep their reward (CRPG).

        feasible_i = for every judge j: judge_{j,i} >= threshold  or  judge_{j,i} is None (not applicable)
        r_i = sum_{k not a judge} w_k r_{k,i}    if feasible_i
              violation_reward                   otherwise

    A judge is a reward function whose value (before shaping) at or above `threshold` means
    the constraint holds (e.g. `format`: 1 when the format is right; a code sandbox's pass
    flag); judges are left out of the sum, so their weights are not used. CRPG multiplies the
    calibrated reward sigma(r(x, y) - r(x, y_ref)), which lies in (0, 1), by the feasibility
    indicator, so an infeasible completion gets 0, below every feasible one: violation_reward 0
    is that rule. With rewards that can be negative, set violation_reward below their range. The
    calibration against a reference response is not done here.
    """
    judges = list(judges)
    if not judges:
        raise ValueError("reward_combine constraints: kwargs.judges must list at least one reward that acts as a "
                         "judge, e.g. {judges: [format]}")
    for j in judges:
        _function(inputs, j, "judges", "constraints")
    if len(set(judges)) == len(inputs.raw):
        raise ValueError("reward_combine constraints: every reward is a judge, so nothing is left to reward; keep at "
                         "least one reward out of kwargs.judges")
    feasible = torch.ones(len(inputs.raw[judges[0]]), dtype=torch.bool)
    for j in judges:
        v = inputs.raw[j]
        feasible &= v.isnan() | (v >= threshold)
    total = torch.where(feasible, weighted(inputs, exclude=judges), torch.full_like(feasible, violation_reward,
                                                                                     dtype=torch.float32))
    metrics = {"constraints/violation_frac": float((~feasible).float().mean())}
    for j in judges:
        metrics[f"constraints/{j}/fail_frac"] = float((inputs.raw[j] < threshold).float().mean())
    return CombineOutput(total, metrics)


@COMBINERS.register("consistency", paper="GRPO-CARE: Consistency-Aware Reinforcement Learning for Multimodal "
                    "Reasoning", arxiv="2506.16141", needs=("groups", "answer_likelihood"),
                    summary="bonus for accurate completions whose answer is likely given their reasoning under an "
                            "EMA reference, relative to the group")
def consistency(inputs: CombineInputs, *, outcome: str | None = None, bonus: float = 0.5, margin: float = 0.0,
                upper_bound: float | None = 0.95, min_accuracy: float = 0.1,
                answer_pattern: str = r"(?s)<answer>(.*?)</answer>",
                fallback: Literal["last_number", "none"] = "last_number", ema_decay: float = 0.995,
                ema_every: int = 10) -> CombineOutput:
    """GRPO-CARE's consistency bonus (it replaces the KL penalty: use it with algorithm.kl_coef 0).

        a_i = outcome_i (before shaping);   c_i = min(p_ref(answer_i | prompt, reasoning_i), upper_bound)
        p_ref(answer | ...) = exp(mean_{t in answer} log pi_ema(y_t | x, y_<t))     (answer_likelihood)
        accurate_i = a_i > min_accuracy  and  a_i >= mean_g(a)              (relative high-accuracy selection)
        m_g = mean_{accurate i in g} c_i
        bonus_i = bonus * a_i   if accurate_i and c_i >= m_g - margin   else 0
        r_i = sum_k w_k r_{k,i} + bonus_i

    pi_ema is a slowly updated copy of the policy: theta_ema <- ema_decay * theta_ema +
    (1 - ema_decay) * theta every `ema_every` RL steps (ema_decay 1: the frozen initial policy).
    The answer is group 1 of the last `answer_pattern` match in the completion, else (fallback
    last_number) the last number; without one c_i is undefined and gets no bonus. Defaults are
    the authors' released SEED-Bench-R1 script (bonus_coefficient 0.5, confidence_upper_bound
    0.95, ref_ema_decay 0.995, ref_ema_update_every 10, no margin; 0.01 for general video data);
    `min_accuracy` 0.1 is their code's accuracy floor. The EMA update there counts optimizer
    steps; here RL steps (the same with one update per batch).
    """
    if inputs.answer_likelihood is None:
        raise ValueError("reward_combine consistency needs the answer likelihoods (the trainer fills them)")
    outcome = _function(inputs, outcome, "outcome", "consistency")
    a = torch.nan_to_num(inputs.raw[outcome], nan=0.0)
    c = inputs.answer_likelihood.float()
    if upper_bound is not None:
        c = c.clamp(max=upper_bound)
    extra = torch.zeros_like(a)
    for rows in _groups(inputs, "consistency"):
        ag, cg = a[rows], c[rows]
        accurate = (ag > min_accuracy) & (ag >= ag.mean())
        known = accurate & ~cg.isnan()
        if not known.any():
            continue
        m = cg[known].mean()
        gets = known & (cg >= m - margin)
        extra[rows] = torch.where(gets, bonus * ag, torch.zeros_like(ag))
    return CombineOutput(weighted(inputs) + extra, {
        "consistency/bonus_mean": float(extra.mean()), "consistency/bonus_frac": float((extra != 0).float().mean()),
        "consistency/likelihood_mean": float(c.nanmean()) if not c.isnan().all() else float("nan")})
