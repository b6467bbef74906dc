"""Reasoning-length control: the `length` config section and the `LENGTH_SHAPERS` registry.

A length shaper rewrites the step's per-completion reward using each completion's length, its
correctness and (for some entries) state carried across steps or the token budget it was sampled
under. The trainer calls it once per step in `trainers/collect.py`, after reward shaping
(`rewards/shaping.py`, which sets `batch.rewards`) and before overlong filtering
(`algorithm.mask_truncated`); the result becomes `batch.rewards`, metrics are logged under
`length/...`, and the entry's state is saved in the checkpoint (`state["length_shaper"]`).

What is not here: DAPO's soft overlong punishment (`overlong_penalty`) and the plain
`length_penalty` are reward functions (`rewards/builtin.py`); overlong filtering is
`algorithm.mask_truncated`; HBPO's budget subgroups are sampled by `rollout/budgets.py`; the
truncation-aware group advantage is `algorithms/advantages_truncation.py`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from postrl.registry import Registry

LENGTH_SHAPERS = Registry("length shaper")
"""name -> fn(inputs: LengthInputs, state: dict, **hparams) -> (rewards [B] float32, metrics dict).

The entry returns the NEW reward of every completion. `state` is a JSON-serialisable dict the
entry may read and mutate (per-prompt history); it is checkpointed. needs: "budgets" (the rows
were sampled in HBPO budget subgroups, `rollout.budgets`; `inputs.budget` [B] holds each row's
budget in tokens)."""


@dataclass
class LengthInputs:
    """What a length shaper sees about one training batch of B completions."""

    rewards: torch.Tensor
    """[B] float32: the step's reward (after `rewards/shaping.py`), i.e. `batch.rewards`."""
    correct: torch.Tensor
    """[B] bool: the primary (first) reward function's raw value >= algorithm.success_threshold."""
    lengths: torch.Tensor
    """[B] float32: completion tokens the policy generated (the loss-masked count)."""
    truncated: torch.Tensor
    """[B] bool: cut at the length limit (finish_reason "length")."""
    prompt_index: torch.Tensor
    """[B] long: the dataset row (training split) of each completion's prompt."""
    group_ids: torch.Tensor
    """[B] long: completions of one prompt share an id."""
    step: int = 0
    """The RL step (0-based) the batch trains."""
    total_steps: int = 1
    """train.steps."""
    max_tokens: int = 256
    """rollout.max_new_tokens."""
    budget: torch.Tensor | None = None
    """[B] float32 token budget of each row (needs "budgets"), else None."""


def empty_inputs(max_tokens: int = 256, total_steps: int = 1) -> LengthInputs:
    """A batch of zero completions: a dry run of an entry checks its hyper-parameters."""
    z = torch.zeros(0)
    return LengthInputs(z, z.bool(), z, z.bool(), z.long(), z.long(), 0, total_steps, max_tokens, z)


# --------------------------------------------------------------------------------------- hapo
@LENGTH_SHAPERS.register("hapo", paper="HAPO: Training Language Models to Reason Concisely via History-Aware "
                         "Policy Optimization", arxiv="2505.11225",
                         summary="length reward relative to the shortest correct length seen so far for the prompt")
def hapo(inputs: LengthInputs, state: dict, *, weight: float = 1.0, form: Literal["cosine", "linear"] = "cosine",
         aggregate: Literal["min", "mean"] = "min", correct_floor: float = -0.7,
         tolerance: float = 0.1) -> tuple[torch.Tensor, dict[str, float]]:
    """History-aware length reward (HAPO sec. 3), added to the task reward.

        h_q     = history state of prompt q: the shortest correct completion length so far
                  (aggregate "min"; "mean": the mean length of all its correct completions)
        cosine: f = cos(min(pi/2 * len / h_q, pi))
                r_len = max(f, correct_floor) if correct, min(f, 0) if incorrect
        linear: correct:   1 - len/h_q         if len < h_q
                           0                   if h_q <= len < (1 + tolerance) h_q
                           max(correct_floor, -(len - (1 + tolerance) h_q) / h_q)   otherwise
                incorrect: 0 if len < (1 + tolerance) h_q, else max(-1, -(len - (1 + tolerance) h_q) / h_q)
        r'      = r + weight * r_len;      r_len = 0 while h_q is unknown (no correct answer yet)

    After the rewards, h_q is updated with the step's correct lengths (min: h_q = min(h_q, min
    correct len); mean: count-weighted running mean), so a completion is compared with earlier
    steps only. An incorrect completion gets only the negative part (min(f, 0)): a short wrong
    attempt is not penalised, so exploring shorter solutions stays cheap, while a long one is. The
    floor -0.7 keeps every correct completion above every incorrect one when weight <= 1 and r is 0/1.
    Defaults from the authors' code (github.com/HCY123902/HAPO: w_lr 1.0, cosine, mode min,
    clip -0.7, tolerance 0.1 for the linear form). state: {"h": {row: h_q}, "count": {row: n}}.
    """
    if form not in ("cosine", "linear") or aggregate not in ("min", "mean"):
        raise ValueError(f"length.kwargs: hapo takes form 'cosine' or 'linear' and aggregate 'min' or 'mean', got "
                         f"form={form!r}, aggregate={aggregate!r}")
    if weight < 0 or correct_floor > 0 or tolerance < 0:
        raise ValueError(f"length.kwargs: hapo needs weight >= 0, correct_floor <= 0 and tolerance >= 0, got "
                         f"weight={weight}, correct_floor={correct_floor}, tolerance={tolerance}")
    history = state.setdefault("h", {})
    counts = state.setdefault("count", {})
    r_len = torch.zeros(len(inputs.rewards))
    rows = inputs.prompt_index.tolist()
    for i, (row, n, ok) in enumerate(zip(rows, inputs.lengths.tolist(), inputs.correct.tolist())):
        h = history.get(str(row))
        if h is None or h <= 0:
            continue
        r_len[i] = _hapo_cosine(n, h, ok, correct_floor) if form == "cosine" else \
            _hapo_linear(n, h, ok, correct_floor, tolerance)
    known = [str(r) in history for r in rows]
    _update_history(history, counts, rows, inputs.lengths.tolist(), inputs.correct.tolist(), aggregate)
    metrics = {"hapo/reward_mean": float(r_len.mean()) if len(r_len) else 0.0,
               "hapo/known_frac": sum(known) / len(known) if known else 0.0,
               "hapo/prompts_with_history": float(len(history))}
    return inputs.rewards.float() + weight * r_len, metrics


def _hapo_cosine(n: float, h: float, correct: bool, floor: float) -> float:
    f = math.cos(min(math.pi / 2 * n / h, math.pi))
    return max(f, floor) if correct else min(f, 0.0)


def _hapo_linear(n: float, h: float, correct: bool, floor: float, tol: float) -> float:
    over = -(n - (1 + tol) * h) / h
    if correct:
        return 1 - n / h if n < h else 0.0 if n < (1 + tol) * h else max(floor, over)
    return 0.0 if n < (1 + tol) * h else max(-1.0, over)


def _update_history(history: dict, counts: dict, rows: list[int], lengths: list[float], correct: list[bool],
                    aggregate: str) -> None:
    """h_q <- the step's correct lengths of prompt q folded in (min, or count-weighted mean)."""
    seen: dict[str, list[float]] = {}
    for row, n, ok in zip(rows, lengths, correct):
        if ok:
            seen.setdefault(str(row), []).append(float(n))
    for key, ns in seen.items():
        if aggregate == "min":
            history[key] = min(ns + ([history[key]] if key in history else []))
        else:
            c = counts.get(key, 0)
            history[key] = (history.get(key, 0.0) * c + sum(ns)) / (c + len(ns))
            counts[key] = c + len(ns)


# --------------------------------------------------------------------------------------- hbpo
@LENGTH_SHAPERS.register("hbpo", paper="Hierarchical Budget Policy Optimization for Adaptive Reasoning",
                         arxiv="2507.15844", needs=("budgets",),
                         summary="budget-aware piecewise reward per budget subgroup: cosine decay and a deviation "
                         "penalty beyond the budget, capped by the budget's own reward")
def hbpo(inputs: LengthInputs, state: dict, *, beta: float = 4.0, max_length: int | None = None,
         alpha: float | None = None, correct_reward: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """HBPO's budget-aware reward (sec. 3.2, eqs. f1, f2) for a completion sampled under budget b.

        f1(n, b) = beta * cos(pi * n / (2 L_max)) - alpha * |n - b|
        f2(b)    = beta * cos(pi * b / (2 L_max))
        R(n | b) = min(f1(n, b), f2(b))   if correct and n <= L_max
                   0                      otherwise
        r'       = r + correct * (R(n | b) - correct_reward)

    n is the completion length in tokens, b the row's budget (`rollout.budgets`). Beyond the budget
    R = f1 (cosine decay plus the deviation penalty); within it R is capped by f2(b), so a small
    budget pays more for a short answer and a large budget less penalty for a long one. The paper
    writes R = f2(b) for n <= b; the authors' code (github.com/ZJU-REAL/HBPO,
    rllm/rewards/math_reward.py) uses min(f1, f2), which differs only for short completions far
    below b (where f1 < f2) and keeps R non-decreasing inside the budget; we follow the code.
    `correct_reward` is what a correct completion already gets in r (1 for a 0/1 verifier): R
    replaces it, so with one 0/1 reward r' is exactly the paper's reward (0 when incorrect) and
    other reward terms (format, ...) are kept. Defaults from the code: beta = 4, L_max = the
    training response limit (`max_length` None: rollout.max_new_tokens; the paper's 4096),
    alpha = 1 / L_max. Budgets 512/1024/2048/2560 with n = 16 are the paper's setting.
    """
    L = int(max_length if max_length is not None else inputs.max_tokens)
    a = 1.0 / L if alpha is None else float(alpha)
    if L < 1 or a < 0 or beta <= 0:
        raise ValueError(f"length.kwargs: hbpo needs max_length >= 1, alpha >= 0 and beta > 0, got "
                         f"max_length={L}, alpha={a}, beta={beta}")
    if inputs.budget is None:
        raise ValueError("length shaper 'hbpo' needs each row's budget: set rollout.budgets (the budget subgroups)")
    n, b = inputs.lengths.double(), inputs.budget.double()
    f1 = beta * torch.cos(math.pi * n / (2 * L)) - a * (n - b).abs()
    f2 = beta * torch.cos(math.pi * b / (2 * L))
    ok = inputs.correct & (n <= L)
    R = torch.where(ok, torch.minimum(f1, f2), torch.zeros_like(n))
    new = inputs.rewards.double() + inputs.correct.double() * (R - correct_reward)
    metrics = {"hbpo/within_budget_frac": float((n <= b).double().mean()) if len(n) else 0.0,
               "hbpo/budget_reward_mean": float(R[inputs.correct].mean()) if bool(inputs.correct.any()) else 0.0}
    return new.float(), metrics


# ---------------------------------------------------------------------------- length_schedule
@LENGTH_SHAPERS.register("length_schedule", paper="Kimi k1.5: Scaling Reinforcement Learning with LLMs",
                         arxiv="2501.12599", summary="Kimi k1.5's group-relative length reward with a coefficient "
                         "that follows a schedule (constant / linear / cosine warm-up)")
def length_schedule(inputs: LengthInputs, state: dict, *, coef: float = 1.0, coef_start: float = 0.0,
                    schedule: Literal["constant", "linear", "cosine"] = "constant", start_step: int = 0,
                    warmup_steps: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Kimi k1.5's length penalty (sec. 2.3.3) scaled by a scheduled coefficient c(step).

        lambda_i = 0.5 - (len_i - min_len) / (max_len - min_len)     min/max over the prompt's group
        r_len_i  = lambda_i if correct, min(0, lambda_i) if incorrect;   0 when max_len == min_len
        r'_i     = r_i + c(step) * r_len_i
        c(step)  = coef_start                                   step < start_step
                   constant: coef                               step >= start_step
                   linear:   coef_start + (coef - coef_start) * u
                   cosine:   coef_start + (coef - coef_start) * (1 - cos(pi * u)) / 2
                   u = min(1, (step - start_step) / warmup_steps)

    Kimi warms the penalty up: plain policy optimisation first, then a constant length penalty
    (`schedule: constant, start_step: S`); linear and cosine ramps anneal the pressure instead.
    warmup_steps None: the ramp ends at the last step (train.steps - 1). The paper gives no
    weight for the length reward: coef = 1 (open-r1's `len_reward` adds it with weight 1) is not
    confirmed. Lengths are completion tokens. A group of one completion gets 0.
    """
    if schedule not in ("constant", "linear", "cosine") or start_step < 0 or (warmup_steps is not None
                                                                             and warmup_steps < 1):
        raise ValueError(f"length.kwargs: length_schedule takes schedule constant/linear/cosine, start_step >= 0 "
                         f"and warmup_steps >= 1 or null, got schedule={schedule!r}, start_step={start_step}, "
                         f"warmup_steps={warmup_steps}")
    c = scheduled_coef(inputs.step, coef, coef_start, schedule, start_step,
                       warmup_steps or max(1, inputs.total_steps - 1 - start_step))
    lam = group_length_lambda(inputs.lengths, inputs.group_ids)
    r_len = torch.where(inputs.correct, lam, lam.clamp(max=0.0))
    metrics = {"length_schedule/coef": c, "length_schedule/reward_mean": float(r_len.mean()) if len(r_len) else 0.0}
    return (inputs.rewards.double() + c * r_len.double()).float(), metrics


def scheduled_coef(step: int, coef: float, coef_start: float, schedule: str, start_step: int, warmup: int) -> float:
    """c(step) of `length_schedule` (a pure function of the step, so resume is exact)."""
    if step < start_step:
        return float(coef_start)
    if schedule == "constant":
        return float(coef)
    u = min(1.0, (step - start_step) / warmup)
    g = u if schedule == "linear" else (1 - math.cos(math.pi * u)) / 2
    return float(coef_start + (coef - coef_start) * g)


def group_length_lambda(lengths: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """[B] 0.5 - (len - min_G) / (max_G - min_G), 0 in groups whose lengths are all equal."""
    out = torch.zeros(len(lengths), dtype=torch.float64)
    n = lengths.double()
    for g in torch.unique(group_ids).tolist():
        rows = group_ids == g
        lo, hi = n[rows].min(), n[rows].max()
        if hi > lo:
            out[rows] = 0.5 - (n[rows] - lo) / (hi - lo)
    return out


# ------------------------------------------------------------------------------- in the loop
class LengthShaper:
    """The configured entry, its hyper-parameters and its state; `apply` is the trainer's hook."""

    def __init__(self, name: str, kwargs: dict[str, Any], *, success_threshold: float = 1.0,
                 max_tokens: int = 256, total_steps: int = 1):
        self.entry = LENGTH_SHAPERS.get(name)
        self.kwargs = dict(kwargs)
        self.threshold, self.max_tokens, self.total_steps = success_threshold, max_tokens, total_steps
        self.state: dict[str, Any] = {}

    def __call__(self, inputs: LengthInputs) -> tuple[torch.Tensor, dict[str, float]]:
        new, metrics = self.entry.fn(inputs, self.state, **self.kwargs)
        out = {f"length/{k}": float(v) for k, v in metrics.items()}
        out["length/reward_delta_mean"] = float((new - inputs.rewards).mean()) if len(new) else 0.0
        return new.float(), out

    def apply(self, batch, idx: list[int], result, reward_set, step: int) -> dict[str, float]:
        """Rewrite `batch.rewards` of the step's training batch; returns the `length/...` metrics."""
        from postrl.trainers.scoring import primary_success

        budget = batch.metadata.get("budget")
        inputs = LengthInputs(
            rewards=batch.rewards.float(),
            correct=primary_success(result, reward_set, self.threshold).bool(),
            lengths=batch.loss_mask.sum(-1).float(),
            truncated=torch.tensor([r == "length" for r in batch.metadata["finish_reason"]], dtype=torch.bool),
            prompt_index=torch.tensor(idx, dtype=torch.long)[batch.group_ids],
            group_ids=batch.group_ids, step=step, total_steps=self.total_steps, max_tokens=self.max_tokens,
            budget=None if budget is None else torch.tensor(budget, dtype=torch.float32))
        batch.rewards, metrics = self(inputs)
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = copy.deepcopy(state)


def build_length_shaper(cfg) -> LengthShaper | None:
    """The `LengthShaper` of an `RLConfig`, or None when `length` is not set."""
    if cfg.length is None:
        return None
    return LengthShaper(cfg.length.name, cfg.length.kwargs, success_threshold=cfg.algorithm.success_threshold,
                        max_tokens=cfg.rollout.max_new_tokens, total_steps=cfg.train.steps)


def check_config(cfg) -> None:
    """What the `length` section needs of an `RLConfig`; errors name the key and the fix."""
    c = cfg.length
    if c is None:
        return
    LENGTH_SHAPERS.check_name(c.name, "length.name")
    LENGTH_SHAPERS.check_kwargs(c.name, c.kwargs, "length.kwargs")
    entry = LENGTH_SHAPERS.get(c.name)
    if "budgets" in entry.needs and cfg.rollout.budgets is None:
        raise ValueError(f"length shaper {c.name!r} rewards each completion against the token budget it was sampled "
                         "under; set rollout.budgets (e.g. [512, 1024, 2048, 2560], rollout.n divisible by their count)")
    if cfg.env is not None:
        raise ValueError(f"length.name={c.name!r} shapes single-turn completions; it cannot be used with env "
                         "(multi-turn episodes): drop the length section")
    from postrl.algorithms import ADVANTAGES

    clash = [n for n in ("greedy_rewards", "mc_values") if n in ADVANTAGES.get(cfg.algorithm.advantage).needs]
    if clash:
        raise ValueError(f"length.name={c.name!r} changes the training batch's rewards, but "
                         f"algorithm.advantage={cfg.algorithm.advantage!r} also scores rows outside the batch "
                         f"({clash[0]}), which would not be length-shaped; use another estimator (grpo, rloo, ...)")
    # a dry run on an empty batch: the entry's own checks name a bad hyper-parameter now, not at step 1
    entry.fn(empty_inputs(cfg.rollout.max_new_tokens, cfg.train.steps), {}, **c.kwargs)
