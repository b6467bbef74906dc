"""`postrl online` configuration: online and iterative preference training (trainers/online_pref.py).

Sections are the shared ones of `postrl.config` (model, data, rollout, rewards, loss,
checkpoint, logging) plus `online` (how pairs are made and how iterations refresh the
reference), `train` (the optimizer; pairs per step come from the rule) and `eval`.
Which combinations are valid follows from the registry entries' `needs`: the pair rule's
(`trainers/online_pairs.py`) and the preference loss's (`algorithms/registries.py`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import Field, model_validator

from postrl.config import (CheckpointSection, DataSection, LoggingSection, ModelSection, NonFiniteLimit, OptimSection, PrefLoss,
                           RaftEval, RewardSpec, RolloutSection, RunConfig, Section, _check_pref_loss,
                           _check_reward_specs, _in_registry)

ONLINE_NEEDS = ("reference", "token_logps", "online_kl", "win_prob", "win_rates", "reference_sample",
                "mixture_opponent", "prox_opponent", "previous_iterate")
"""The preference-loss needs `postrl online` provides (see PREFERENCE_LOSSES in algorithms/registries.py)."""

PAIRING_NEEDS = ("win_rates", "reference_sample", "mixture_opponent", "prox_opponent")
"""Loss needs that fix how pairs are formed: the pair rule must need the same word."""


class JudgeSpec(Section):
    """A pairwise judge: fn(prompts, completions_a, completions_b, **kwargs) -> P(a beats b) per prompt."""

    name: str = "reward_model"
    """`reward_model` (a `postrl rm` model as Bradley-Terry judge, kwargs.path required) or
    `module:function` / `path/to/file.py:function` for your own judge."""
    kwargs: dict[str, Any] = {}


class OnlineLoop(Section):
    """How each step's pairs are made, and how iterations move the reference."""

    pair_rule: str = "best_worst"
    """A pair rule (`trainers/online_pairs.py`): best_worst, judge_pair, spin, rso, dno, delta, and
    the rules of online losses (win_rate, vs_reference, vs_mixture, vs_prox), chosen by default
    when the loss needs them."""
    pair_kwargs: dict[str, Any] = {}
    """The rule's hyper-parameters, e.g. `{beta: 0.5, num_accepted: 2}` for rso."""
    prompts_per_step: int = Field(16, ge=1)
    """Training prompts per step (uniform order, checkpointed), rollout.n samples each."""
    iterations: int = Field(1, ge=1)
    """Iterations (SPIN / DNO / INPO rounds); each starts by refreshing the previous iterate."""
    steps_per_iteration: int = Field(20, ge=1)
    """Optimizer steps per iteration (sample, judge, pair, update each step)."""
    reference: Literal["initial", "previous_iterate"] = "initial"
    """The DPO reference: the initial policy (online DPO), or the policy at the start of the
    current iteration (SPIN, DNO; with `momentum`, APO's extrapolated iterate)."""
    momentum: float = Field(0.0, ge=0, lt=1)
    """APO (arXiv 2410.06293) Nesterov extrapolation between iterations, alpha in [0, 1): at each
    iteration start theta <- theta_t + alpha * (theta_t - theta_{t-1}). 0 turns it off."""
    gold_column: str | None = None
    """Dataset column with the reference response (needed by spin and dno), e.g. `answer` for
    the built-in tasks or `completion` for prompt/completion data."""
    judge: JudgeSpec | None = None
    """Pairwise judge for rules and losses that compare two responses; None: sigmoid of the
    reward difference (`rewards`), TRL's convention for a scalar reward."""
    strong_model: ModelSection | None = None
    """delta: the model whose samples are chosen (same tokenizer as the policy)."""
    weak_model: ModelSection | None = None
    """delta: the model whose samples are rejected."""

    @property
    def total_steps(self) -> int:
        return self.iterations * self.steps_per_iteration


class OnlineTrain(OptimSection, NonFiniteLimit):
    lr: float = Field(1e-6, gt=0)
    """TRL's OnlineDPO default for real models; the tiny model wants ~1e-4."""
    micro_batch_size: int = Field(16, ge=1)
    """Pairs per forward/backward; gradients accumulate over a step's pairs, normalised by their number."""
    max_length: int = Field(1024, ge=2)
    """Most tokens of prompt + gold response; longer gold responses are an error."""


class OnlineEval(RaftEval):
    every: int = Field(0, ge=0)
    """Greedy accuracy every this many steps (0: before and after training only)."""


class OnlineConfig(RunConfig):
    """`postrl online`: sample from the policy, judge, pair, preference-loss update (trainers/online_pref.py)."""

    name: str = "online"
    model: ModelSection = ModelSection()
    """The policy; give an SFT run's `final` directory to start from a warm start."""
    data: DataSection = DataSection()
    rollout: RolloutSection = RolloutSection()
    """`n` samples per prompt; sampling settings as in `postrl train`."""
    rewards: list[RewardSpec] = [RewardSpec(name="exact_match")]
    """Score every response (the judge of reward-based rules, the pair statistics, greedy accuracy)."""
    loss: PrefLoss = PrefLoss()
    online: OnlineLoop = OnlineLoop()
    train: OnlineTrain = OnlineTrain()
    eval: OnlineEval = OnlineEval()
    checkpoint: CheckpointSection = CheckpointSection(every=10)
    logging: LoggingSection = LoggingSection()

    @model_validator(mode="before")
    @classmethod
    def _default_rule_for_the_loss(cls, raw: Any) -> Any:
        """A loss whose needs fix the pairing (e.g. SPPO's "win_rates") gets its rule when none is set."""
        if not isinstance(raw, dict):
            return raw
        online = raw.get("online") or {}
        loss = (raw.get("loss") or {}).get("name", "dpo")
        if not isinstance(online, dict) or "pair_rule" in online:
            return raw
        from postrl.algorithms import PREFERENCE_LOSSES
        from postrl.trainers.online_pairs import PAIR_RULES

        if loss in PREFERENCE_LOSSES:
            words = [w for w in PREFERENCE_LOSSES.get(loss).needs if w in PAIRING_NEEDS]
            rules = [e.name for e in PAIR_RULES if words and all(w in e.needs for w in words)]
            if rules:
                return {**raw, "online": {**online, "pair_rule": rules[0]}}
        return raw

    @model_validator(mode="after")
    def _check(self):
        from postrl import rollout
        from postrl.trainers.online_pairs import PAIR_RULES

        o, n = self.online, self.rollout.n
        _in_registry(rollout.ENGINES, self.rollout.engine, "rollout.engine")
        _in_registry(PAIR_RULES, o.pair_rule, "online.pair_rule")
        PAIR_RULES.check_kwargs(o.pair_rule, o.pair_kwargs, "online.pair_kwargs")
        _check_reward_specs(self.rewards)
        _check_pref_loss(self.loss, ONLINE_NEEDS, "`postrl online`")
        _check_rule(self, PAIR_RULES.get(o.pair_rule).needs, n)
        _check_loss(self)
        _check_iterations(self)
        return self

    @property
    def rule_needs(self) -> tuple[str, ...]:
        from postrl.trainers.online_pairs import PAIR_RULES

        return PAIR_RULES.get(self.online.pair_rule).needs

    @property
    def loss_needs(self) -> tuple[str, ...]:
        from postrl.algorithms import PREFERENCE_LOSSES

        return PREFERENCE_LOSSES.get(self.loss.name).needs

    @property
    def loss_kwargs(self) -> dict[str, Any]:
        """The loss's hyper-parameters: its defaults updated by `loss.kwargs`."""
        from postrl.algorithms import PREFERENCE_LOSSES

        return {**PREFERENCE_LOSSES.get(self.loss.name).defaults, **self.loss.kwargs}


def _check_rule(cfg: OnlineConfig, needs: tuple[str, ...], n: int) -> None:
    o, rule = cfg.online, f"online.pair_rule={cfg.online.pair_rule!r}"
    if "two_samples" in needs and n < 2:
        raise ValueError(f"{rule} compares samples of the policy, which needs rollout.n >= 2 (got {n}); "
                         "set rollout.n: 2 or more")
    if "judge" in needs and n % 2:
        raise ValueError(f"{rule} judges the samples in consecutive pairs, so rollout.n must be even (got {n})")
    if "gold" in needs and not o.gold_column:
        raise ValueError(f"{rule} pairs the policy's samples with the dataset's reference response, but "
                         "online.gold_column is not set; name the column holding it (e.g. online.gold_column: "
                         "answer for the built-in tasks, completion for prompt/completion data)")
    if "gold" not in needs and o.gold_column:
        raise ValueError(f"online.gold_column is set but {rule} uses no reference response; drop it or use "
                         "a rule that does (spin, dno)")
    pair_models = o.strong_model is not None, o.weak_model is not None
    if "pair_models" in needs and not all(pair_models):
        raise ValueError(f"{rule} pairs a stronger model's samples (chosen) with a weaker model's (rejected); set "
                         "both online.strong_model and online.weak_model (e.g. {name_or_path: runs/big/final})")
    if "pair_models" not in needs and any(pair_models):
        raise ValueError(f"online.strong_model / weak_model are set but {rule} does not use them; drop them or "
                         "use pair_rule: delta")


def _check_loss(cfg: OnlineConfig) -> None:
    loss, needs, rule_needs = cfg.loss.name, cfg.loss_needs, cfg.rule_needs
    error = _paired_error(loss, cfg.loss.kwargs)
    if error:
        raise ValueError(f"loss.name={loss!r} does not train on (chosen, rejected) pairs, which is what "
                         f"`postrl online` builds ({error}); use a pairwise loss such as dpo, ipo or hinge")
    for word in PAIRING_NEEDS:
        if word in needs and word not in rule_needs:
            from postrl.trainers.online_pairs import PAIR_RULES

            fits = [e.name for e in PAIR_RULES if word in e.needs]
            raise ValueError(f"loss.name={loss!r} needs pairs formed by {word!r}, which online.pair_rule="
                             f"{cfg.online.pair_rule!r} does not make; set online.pair_rule: {fits[0]} (or leave "
                             "it unset to get it by default)")
    if "mixture_opponent" in rule_needs and "mixture_coef" not in cfg.loss_kwargs:
        raise ValueError(f"online.pair_rule={cfg.online.pair_rule!r} samples from the geometric mixture of policy "
                         f"and reference with the loss's mixture_coef, which loss.name={loss!r} does not have; use "
                         "a loss with mixture_coef (nash_md)")
    if "prox_opponent" in rule_needs and "prox_steps" not in cfg.loss_kwargs:
        raise ValueError(f"online.pair_rule={cfg.online.pair_rule!r} alternates snapshots every prox_steps of the "
                         f"loss, which loss.name={loss!r} does not have; use a loss with prox_steps (nash_mp)")
    if cfg.online.judge is not None and not _uses_judge(cfg):
        raise ValueError(f"online.judge is set but neither online.pair_rule={cfg.online.pair_rule!r} nor "
                         f"loss.name={loss!r} compares two responses with it; drop online.judge or use a rule "
                         "that needs a judge (judge_pair, win_rate, vs_reference)")
    if cfg.online.judge is not None and ":" not in cfg.online.judge.name and cfg.online.judge.name != "reward_model":
        raise ValueError(f"online.judge.name={cfg.online.judge.name!r}: use `reward_model` (with kwargs.path) or "
                         "`module:function` / `path/to/file.py:function` for your own judge")
    ref_model = cfg.model.ref_model or cfg.model.reference_soup
    uses_reference = "reference" in needs or "reference_sample" in rule_needs or "mixture_opponent" in rule_needs
    if ref_model and not uses_reference:
        raise ValueError(f"model.ref_model / reference_soup is set but loss.name={loss!r} reads no reference model; "
                         "drop the setting or use a reference-based loss (e.g. dpo)")


def _uses_judge(cfg: OnlineConfig) -> bool:
    rule, loss = cfg.rule_needs, cfg.loss_needs
    return "judge" in rule or "judge_all" in rule or "reference_sample" in rule or "win_prob" in loss \
        or "win_rates" in loss


def _check_iterations(cfg: OnlineConfig) -> None:
    o, loss = cfg.online, cfg.loss.name
    if o.reference == "previous_iterate" and "reference" not in cfg.loss_needs:
        raise ValueError(f"online.reference: previous_iterate refreshes the reference model, but loss.name={loss!r} "
                         "reads none; set online.reference: initial or use a reference-based loss (dpo)")
    if o.reference == "previous_iterate" and (cfg.model.ref_model or cfg.model.reference_soup):
        raise ValueError("online.reference: previous_iterate replaces the reference by the policy at each iteration "
                         "start, so model.ref_model / reference_soup would be unused; drop one of them")
    if o.momentum and o.reference != "previous_iterate":
        raise ValueError(f"online.momentum={o.momentum} is APO's extrapolation of the previous iterate, which "
                         "then serves as the next iteration's reference; set online.reference: previous_iterate")
    if o.momentum and o.iterations < 2:
        raise ValueError(f"online.momentum={o.momentum} extrapolates between iterations, and online.iterations is "
                         f"{o.iterations}; set online.iterations >= 2 or momentum: 0")
    copies = o.reference == "previous_iterate" or o.momentum or "previous_iterate" in cfg.loss_needs \
        or any(w in cfg.rule_needs for w in ("prox_opponent", "reference_sample", "mixture_opponent"))
    if cfg.model.lora.enabled and copies:
        raise ValueError("model.lora.enabled: `postrl online` keeps frozen copies of the policy (previous iterate, "
                         "APO momentum, prox snapshots) and samples from a reference model only for full models; set "
                         "model.lora.enabled: false or use online.reference: initial with a loss that needs neither")


def _paired_error(name: str, kwargs: dict) -> str | None:
    """None when loss `name` takes paired inputs with every optional [B] field filled, else its error."""
    import torch

    from postrl.algorithms import PREFERENCE_LOSSES
    from postrl.algorithms.preference import PrefInputs
    from postrl.trainers.pref_data import _dummy_inputs

    inp = _dummy_inputs("paired")
    B = inp.chosen_logps.shape[0]
    for f in dataclasses.fields(PrefInputs):
        if getattr(inp, f.name) is None and f.name not in ("labels", "scores") and not f.name.startswith("list_"):
            # in (0, 1): a valid probability and a valid (log-)value alike
            setattr(inp, f.name, torch.full((B,), 0.25) if "prob" in f.name or "rate" in f.name
                    else -1.0 - torch.rand(B, generator=torch.Generator().manual_seed(1)))
    try:
        PREFERENCE_LOSSES[name](inp, **kwargs)
    except Exception as e:  # noqa: BLE001 - any failure means "not this format"
        return f"{type(e).__name__}: {e}"
    return None
