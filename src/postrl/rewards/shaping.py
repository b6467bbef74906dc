"""Reward shaping between scoring and advantages: per-function normalisation and clipping, then
the configured combiner (`rewards/combiners.py`).

Reward functions (and Ray reward workers) return raw values per function. Once per RL step the
trainer hands the step's final batch to `RewardShaper.__call__`, which

1. normalises each function's values as its `rewards[i].normalize` says:
       batch:   r' = (r - mean_B(r)) / (std_B(r) + eps)           over this step's batch
       running: r' = (r - mu_t) / (sigma_t + eps)                 mu_t, sigma_t over every training
                reward so far, this batch included (Welford/Chan, kept in the checkpoint)
   (std unbiased; None values are left out of the statistics and stay None);
2. clips them to `rewards[i].clip` = [lo, hi] (after normalisation, as r~ = clip((r - mu) / sigma,
   -delta, delta) in "Secrets of RLHF in Large Language Models Part I: PPO", arXiv 2307.04964);
3. combines them with `reward_combine` into `batch.rewards`.

Rows scored outside the training batch in the same step (ReMax's greedy baselines, Monte-Carlo
segment values) go through `per_sample`, the same transform without refitting and without
groups. Evaluation keeps the raw weighted sum. The running statistics are OpenRLHF's
`normalize_reward` idea (a running mean/std of the reward) applied per reward function.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from postrl.rewards.combine import RewardResult, display_names
from postrl.rewards.combiners import COMBINERS, CombineInputs

EPS = 1e-8


class RunningMoments:
    """Count, mean and sum of squared deviations of every value seen (Chan et al.'s parallel
    Welford update, in float64), so the mean and unbiased std of all rewards so far are exact
    to rounding and fit in a checkpoint's JSON."""

    def __init__(self, count: int = 0, mean: float = 0.0, m2: float = 0.0):
        self.count, self.mean, self.m2 = count, mean, m2

    def update(self, values: Sequence[float]) -> None:
        n = len(values)
        if n == 0:
            return
        b_mean = math.fsum(values) / n
        b_m2 = math.fsum((v - b_mean) ** 2 for v in values)
        total = self.count + n
        delta = b_mean - self.mean
        self.mean += delta * n / total
        self.m2 += b_m2 + delta * delta * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0

    def state(self) -> list:
        return [self.count, self.mean, self.m2]


def batch_moments(values: torch.Tensor) -> tuple[float, float]:
    """(mean, unbiased std) of the non-NaN values (0, 0 when there are none; std 0 for one)."""
    ok = values[~values.isnan()].double()
    if ok.numel() == 0:
        return 0.0, 0.0
    return float(ok.mean()), float(ok.std()) if ok.numel() > 1 else 0.0


def shape(values: torch.Tensor, mean: float | None, std: float | None, clip: Sequence[float] | None) -> torch.Tensor:
    """(values - mean) / (std + eps) when `mean` is given, then clamped to `clip`; NaN stays NaN."""
    out = values.double()
    if mean is not None:
        out = (out - mean) / (std + EPS)
    if clip is not None:
        out = out.clamp(min=clip[0], max=clip[1])  # clamp keeps NaN
    return out.float()


class RewardShaper:
    """Per-function normalisation/clipping and the combiner, with the state they carry across steps."""

    def __init__(self, specs: Sequence[Any], combine_name: str = "weighted_sum",
                 combine_kwargs: dict[str, Any] | None = None, *, likelihood=None):
        self.names = display_names(specs)
        self.weights = {n: float(s.weight) for n, s in zip(self.names, specs)}
        self.normalize = {n: getattr(s, "normalize", "none") for n, s in zip(self.names, specs)}
        self.clip = {n: getattr(s, "clip", None) for n, s in zip(self.names, specs)}
        self.entry = COMBINERS.get(combine_name)
        self.kwargs = dict(combine_kwargs or {})
        self.hparams = {**self.entry.defaults, **self.kwargs}
        if "answer_likelihood" in self.entry.needs and likelihood is None:
            raise ValueError(f"reward_combine {combine_name!r} needs answer likelihoods under an EMA reference; "
                             "build the shaper with build_shaper")
        self.likelihood = likelihood
        self.moments = {n: RunningMoments() for n in self.names if self.normalize[n] == "running"}
        self.fitted: dict[str, tuple[float, float]] = {}
        """name -> (mean, std) of the last fit: what `per_sample` applies."""

    # ----------------------------------------------------------------------------------- scoring
    def __call__(self, result: RewardResult, batch, step: int) -> tuple[RewardResult, dict[str, float]]:
        """The training batch's rewards: fit the statistics on it, shape, combine. Returns the
        result with the new total (per_function stays raw) and the step's shaping metrics."""
        metrics: dict[str, float] = {}
        for name in self.names:
            values = result.per_function[name]
            if self.normalize[name] == "batch":
                self.fitted[name] = batch_moments(values)
            elif self.normalize[name] == "running":
                self.moments[name].update(values[~values.isnan()].double().tolist())
                self.fitted[name] = (self.moments[name].mean, self.moments[name].std)
            if name in self.fitted:
                metrics[f"reward_shaping/{name}/mean"], metrics[f"reward_shaping/{name}/std"] = self.fitted[name]
        likelihood = self.likelihood(batch) if self.likelihood is not None else None
        out = self._combine(result, batch.group_ids, step, likelihood)
        return RewardResult(out.total, result.per_function), {**metrics, **out.metrics}

    def per_sample(self, result: RewardResult, step: int = 0) -> RewardResult:
        """Rows outside the training batch: this step's fitted transform, no groups, no refit."""
        if "groups" in self.entry.needs:
            raise ValueError(f"reward_combine {self.entry.name!r} compares the completions of a prompt and cannot "
                             "score rows outside the training batch")
        return RewardResult(self._combine(result, None, step, None).total, result.per_function)

    def _combine(self, result: RewardResult, group_ids, step: int, likelihood):
        shaped = {}
        for name in self.names:
            mean, std = self.fitted.get(name, (None, None))
            shaped[name] = shape(result.per_function[name], mean, std, self.clip[name])
        inputs = CombineInputs(shaped, dict(result.per_function), self.weights, group_ids, step, likelihood)
        return self.entry.fn(inputs, **self.kwargs)

    # ------------------------------------------------------------------------- loop and checkpoints
    def after_update(self, learner, step: int) -> dict[str, float]:
        """After the step's policy update: move the EMA reference (when the combiner uses one)."""
        if self.likelihood is None:
            return {}
        return {"consistency/ema_updated": float(self.likelihood.ema.update(learner.model, step))}

    def state_dict(self) -> dict[str, Any]:
        return {"moments": {n: m.state() for n, m in self.moments.items()},
                "fitted": {n: list(v) for n, v in self.fitted.items()}}

    def load_state_dict(self, state: dict[str, Any], checkpoint=None) -> None:
        for name, (count, mean, m2) in state.get("moments", {}).items():
            if name in self.moments:
                self.moments[name] = RunningMoments(int(count), float(mean), float(m2))
        self.fitted = {n: (float(a), float(b)) for n, (a, b) in state.get("fitted", {}).items()}
        if self.likelihood is not None and checkpoint is not None:
            from postrl.learner.ema import EMA_DIR

            self.likelihood.ema.load(checkpoint / EMA_DIR)

    def extra_dirs(self) -> dict:
        """Checkpoint subdirectories this stage writes (the EMA reference's weights)."""
        if self.likelihood is None:
            return {}
        from postrl.learner.ema import EMA_DIR

        return {EMA_DIR: self.likelihood.ema.save}


def is_plain(cfg) -> bool:
    """No shaping configured: the weighted sum the reward functions already computed is the reward."""
    return cfg.reward_combine.name == "weighted_sum" and all(
        r.normalize == "none" and r.clip is None for r in cfg.rewards)


def build_shaper(cfg, learner, tokenizer) -> RewardShaper | None:
    """The `RewardShaper` of an `RLConfig`, or None when nothing is shaped (the plain loop pays nothing)."""
    if is_plain(cfg):
        return None
    c = cfg.reward_combine
    entry = COMBINERS.get(c.name)
    likelihood = None
    if "answer_likelihood" in entry.needs:
        from postrl.learner.ema import EmaModel
        from postrl.rewards.consistency import AnswerLikelihood

        h = {**entry.defaults, **c.kwargs}
        ema = EmaModel(learner.model, decay=h["ema_decay"], every=h["ema_every"])
        likelihood = AnswerLikelihood(ema, tokenizer, pattern=h["answer_pattern"], fallback=h["fallback"],
                                      temperature=cfg.rollout.temperature, micro_batch_size=cfg.train.micro_batch_size)
    return RewardShaper(cfg.rewards, c.name, c.kwargs, likelihood=likelihood)


def check_config(cfg) -> None:
    """What `reward_combine` and the rewards' shaping need of an `RLConfig`; errors name the key and the fix."""
    from postrl.algorithms import ADVANTAGES

    c = cfg.reward_combine
    COMBINERS.check_name(c.name, "reward_combine.name")
    COMBINERS.check_kwargs(c.name, c.kwargs, "reward_combine.kwargs")
    entry = COMBINERS.get(c.name)
    names = display_names(cfg.rewards)
    h = {**entry.defaults, **c.kwargs}

    def known(key: str, value) -> None:
        if value is not None and value not in names:
            raise ValueError(f"reward_combine.kwargs.{key} = {value!r} is not one of the rewards; their names are "
                             f"{', '.join(names)} (`fn` of `module:fn`, repeats as `name_2`)")

    for key in ("outcome", "model"):
        if key in h:
            known(key, h[key])
    if c.name == "trust":
        if h["model"] is None:
            raise ValueError("reward_combine trust: set kwargs.model to the reward to trust-weight (the thinking "
                             f"reward), one of {', '.join(names)}")
        if (h["outcome"] or names[0]) == h["model"]:
            raise ValueError(f"reward_combine trust: the model reward {h['model']!r} is also the outcome reward (the "
                             "first reward unless kwargs.outcome says otherwise); list the outcome reward first or "
                             "set kwargs.outcome")
        if h["anneal_steps"] is not None and h["anneal_steps"] <= 0:
            raise ValueError(f"reward_combine.kwargs.anneal_steps = {h['anneal_steps']}: give a positive number of "
                             "steps, or null for no annealing")
    if c.name == "constraints":
        judges = h["judges"]
        if isinstance(judges, str) or not judges:
            raise ValueError(f"reward_combine constraints: kwargs.judges must be a non-empty list of reward names "
                             f"(got {judges!r}), e.g. {{judges: [format]}}")
        for j in judges:
            known("judges", j)
        if len(set(judges)) == len(names):
            raise ValueError("reward_combine constraints: every reward is a judge; keep at least one reward out of "
                             "kwargs.judges (judges are constraints, not rewards)")
        for i, name in enumerate(names):
            r = cfg.rewards[i]
            if name in judges and (r.normalize != "none" or r.clip is not None):
                raise ValueError(f"rewards[{i}] ({name}) is a judge of reward_combine constraints, which reads its raw "
                                 "pass/fail value; drop its normalize/clip")
    if c.name == "consistency":
        if not 0.0 <= h["ema_decay"] <= 1.0 or int(h["ema_every"]) < 1:
            raise ValueError(f"reward_combine consistency: need 0 <= ema_decay <= 1 and ema_every >= 1, got "
                             f"ema_decay={h['ema_decay']}, ema_every={h['ema_every']}")
        if h["fallback"] not in ("last_number", "none"):
            raise ValueError(f"reward_combine.kwargs.fallback must be 'last_number' or 'none', got {h['fallback']!r}")
        import re

        try:
            re.compile(h["answer_pattern"])
        except re.error as e:
            raise ValueError(f"reward_combine.kwargs.answer_pattern {h['answer_pattern']!r} is not a valid regex "
                             f"({e})") from None
    if "groups" in entry.needs:
        if cfg.rollout.n < 2:
            raise ValueError(f"reward_combine {c.name!r} compares the completions of a prompt; rollout.n is "
                             f"{cfg.rollout.n}: set rollout.n >= 2")
        est = ADVANTAGES.get(cfg.algorithm.advantage)
        clash = [n for n in ("greedy_rewards", "mc_values") if n in est.needs]
        if clash:
            raise ValueError(f"reward_combine {c.name!r} rewards a completion relative to its group, so the rows "
                             f"algorithm.advantage={cfg.algorithm.advantage!r} scores outside the batch ({clash[0]}) "
                             "cannot be rewarded the same way; use another estimator (grpo, rloo, ...) or "
                             "reward_combine weighted_sum / constraints")
    if "answer_likelihood" in entry.needs:
        d = cfg.distributed
        if d.backend != "local" or d.learner_procs > 1:
            raise ValueError(f"reward_combine {c.name!r} keeps an EMA copy of the policy next to the learner, which "
                             "needs one local learner process; set distributed.backend: local and "
                             "distributed.learner_procs: 1")
