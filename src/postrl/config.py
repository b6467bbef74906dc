"""Typed, validated configuration: YAML files, presets and `--set a.b=c` overrides.

Resolution order (later wins): field defaults < preset (sparse dotted overrides, only for keys
the user did not set) < the YAML file < `--set` overrides. Every section forbids unknown keys;
registry names (advantage, loss, sampler, reward, engine, preset) are checked against the
registries, and every error names the key, the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A config problem, with the key, the value and the fix in the message."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*")
    @classmethod
    def _finite(cls, v):
        # a bound (gt=0) refuses NaN but not inf, an unbounded float takes both: either poisons a run
        if any(isinstance(x, float) and not math.isfinite(x) for x in (v if isinstance(v, (list, tuple)) else (v,))):
            raise ValueError(f"{v}: NaN and inf are not allowed; give finite numbers (or null where the key allows it)")
        return v


class RunConfig(Section):
    """What every command's config has: a run name, its directory and the seed."""

    name: str = "run"
    output_dir: str | None = None
    """Run directory; default runs/<name>."""
    seed: int = 0

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir or f"runs/{self.name}")


# --------------------------------------------------------------------------------------- model
class TinyModel(Section):
    """Architecture of the from-config model built when `model.name_or_path: tiny`."""

    arch: Literal["qwen2", "llama"] = "qwen2"
    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    num_kv_heads: int = Field(2, ge=1)
    intermediate_size: int = Field(512, ge=8)
    max_position_embeddings: int = Field(512, ge=16)
    init_seed: int = 0
    """Seed of the weight initialisation (independent of `seed`, so the same tiny model is built)."""

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("model.tiny: hidden_size must be divisible by num_heads and num_heads "
                             f"by num_kv_heads (got {self.hidden_size}, {self.num_heads}, {self.num_kv_heads})")
        return self


class Lora(Section):
    enabled: bool = False
    r: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class ModelSection(Section):
    name_or_path: str = "tiny"
    """HF hub id, local directory, or `tiny` to build `model.tiny` with a character tokenizer."""
    tiny: TinyModel = TinyModel()
    tokenizer: str | None = None
    """Tokenizer id/path when it differs from the model's."""
    chat_template: str | None = None
    """Jinja chat template overriding the tokenizer's (a string, or a path to a .jinja file)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    device: str = "auto"
    """`auto` (CUDA if available, else CPU), `cpu`, `cuda`, `cuda:1`, ..."""
    trust_remote_code: bool = False
    attn_implementation: str | None = None
    gradient_checkpointing: bool = False
    lora: Lora = Lora()
    ref_model: str | None = None
    """Reference model path; default a frozen copy of the initial policy (or the adapter-disabled
    base under LoRA)."""
    reference_soup: list[str | dict[str, Any]] = []
    """SALSA (arXiv 2411.01798): the reference model is the weight average of these models, which
    must share one architecture. Each is a path or hub id, `tiny` (this section's `tiny` model),
    or a mapping of `tiny` fields to change (e.g. `{init_seed: 1}`). At least two; not with ref_model."""
    reference_soup_weights: list[float] | None = None
    """Weights of the soup's members (positive, normalised to sum 1); None: the plain mean."""

    @model_validator(mode="after")
    def _check_soup(self):
        soup, weights = self.reference_soup, self.reference_soup_weights
        if not soup:
            if weights is not None:
                raise ValueError("model.reference_soup_weights is set but model.reference_soup is empty; "
                                 "list the soup's models or drop the weights")
            return self
        if len(soup) < 2:
            raise ValueError(f"model.reference_soup has {len(soup)} model; a soup averages at least two "
                             "(for one reference model use model.ref_model)")
        if self.ref_model:
            raise ValueError("model.ref_model and model.reference_soup both name the reference model; keep one")
        if weights is not None and (len(weights) != len(soup) or any(w <= 0 for w in weights)):
            raise ValueError(f"model.reference_soup_weights = {weights}: give one positive weight per model "
                             f"of model.reference_soup ({len(soup)})")
        for i, member in enumerate(soup):
            if isinstance(member, dict):
                try:
                    TinyModel.model_validate({**self.tiny.model_dump(), **member})
                except ValidationError as e:
                    raise ValueError(f"model.reference_soup[{i}] = {member}: not a valid change of model.tiny "
                                     f"({e.errors()[0]['msg']}); allowed keys: "
                                     f"{', '.join(TinyModel.model_fields)}") from None
        return self


# ---------------------------------------------------------------------------------------- data
class Columns(Section):
    """Which dataset columns hold what; every other column is passed to reward functions."""

    prompt: str = "prompt"
    answer: str = "answer"
    messages: str = "messages"
    completion: str = "completion"


class DataSection(Section):
    source: str = "task:arithmetic"
    """`task:NAME` (built-in synthetic task), a .jsonl/.json/.parquet/.csv file, a directory
    saved by `datasets`, or a hub dataset name."""
    task_kwargs: dict[str, Any] = {}
    """Arguments of the built-in task (e.g. `{level: 2}`)."""
    subset: str | None = None
    """Hub dataset configuration name (e.g. `main` for gsm8k)."""
    split: str = "train"
    eval_source: str | None = None
    """Evaluation data; default: `source` with `eval_split`."""
    eval_split: str = "test"
    columns: Columns = Columns()
    prompt_template: str | None = None
    """Python format string over the row's columns, e.g. `"{question}\\nAnswer in \\\\boxed{{}}."`."""
    system_prompt: str | None = None
    answer_pattern: str | None = None
    """Regex whose group 1 extracts the reference answer from the answer column (e.g. `####\\s*(.+)`)."""
    chat_template: Literal["auto", "always", "never"] = "auto"
    """auto: chat template for message prompts, raw text for string prompts (TRL's rule);
    always: string prompts become one user message; never: plain text always."""
    max_prompt_tokens: int = Field(1024, ge=1)
    long_prompts: Literal["error", "skip"] = "error"
    limit: int | None = Field(None, ge=1)
    """Use only the first `limit` rows."""


# ------------------------------------------------------------------------------ rollout/reward
class SamplerSection(Section):
    name: str = "uniform"
    kwargs: dict[str, Any] = {}


class RolloutSection(Section):
    engine: str = "hf"
    n: int = Field(8, ge=1)
    """Completions per prompt (the group size)."""
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    """0 disables top-k."""
    max_new_tokens: int = Field(256, ge=1)
    stop: list[str] = []
    """Stop strings; generation of a sequence ends after the first token that completes one."""
    micro_batch_size: int = Field(256, ge=1)
    """Sequences generated together: bounds rollout memory."""
    engine_kwargs: dict[str, Any] = {}
    """Extra engine options (vllm: gpu_memory_utilization, tensor_parallel_size, enable_sleep_mode, ...)."""
    compile: bool = False
    """`torch.compile` the engine's decode step (pays off on GPUs; compile time dominates short CPU runs)."""
    inject_reference: str | None = None
    """Mixed-policy groups (TempSamp-R1, arXiv 2509.18056): the dataset column holding a reference
    solution; the last completion of every group is replaced by it (its tokens + EOS, trained on
    like a sample, behaviour log-probs from the learner). Marked in batch.metadata["reference_injected"]."""
    budgets: list[int] | None = None
    """HBPO budget subgroups (arXiv 2507.15844; `rollout/budgets.py`): the n completions of a prompt are
    split into len(budgets) subgroups, subgroup k sampled after `budget_prompt` with budget b_k;
    each row's budget is in batch.metadata["budget"] (the `hbpo` length shaper reads it). n must be
    divisible by len(budgets). Evaluation samples without a budget prompt."""
    budget_prompt: str = "I will answer the question within {budget} tokens.\n"
    """Format string with {budget}, appended to the prompt tokens of each budget subgroup (the paper
    puts "I will answer the question within b tokens" right after the reasoning tag)."""
    budget_cap: bool = False
    """False (the paper): every subgroup may use rollout.max_new_tokens and the reward penalises
    overshooting; True: subgroup k stops at b_k tokens."""


class RewardSpec(Section):
    name: str
    """Built-in reward name, or `module:function` for user code."""
    weight: float = Field(1.0, allow_inf_nan=False)
    kwargs: dict[str, Any] = {}
    on_error: Literal["raise", "zero"] = "raise"
    """What a failed call does (the function raised, returned NaN/inf or a wrong value, or outlasted
    timeout_s; rewards/guard.py): raise stops the run naming the function, the row and the error;
    zero scores the failed completions 0. Counted in the metrics reward/<name>/errors and /timeouts."""
    timeout_s: float | None = Field(120.0, gt=0)
    """Seconds one call of a user function (`module:function`) may take; it runs in a worker process
    that is killed at the limit (rewards/worker.py). None: it runs in the trainer's process, with no
    limit (for a function that needs the trainer's objects, e.g. its GPU). Built-ins always run in the
    trainer's process."""

    @model_validator(mode="after")
    def _timeout_for_user_code(self):
        default = RewardSpec.model_fields["timeout_s"].default
        if ":" not in self.name and self.timeout_s not in (default, None):
            raise ValueError(f"timeout_s = {self.timeout_s} is set for the built-in reward {self.name!r}, which runs in "
                             "the trainer's process without a time limit; drop timeout_s (it applies to "
                             "`module:function` rewards)")
        return self


class RLRewardSpec(RewardSpec):
    """A reward of `postrl train`, with its own shaping (`rewards/shaping.py`, docs/reward_shaping.md)."""

    normalize: Literal["none", "batch", "running"] = "none"
    """batch: (r - mean) / std over the step's batch; running: over every training reward so far
    (a Welford mean/std kept in the checkpoint; OpenRLHF's normalize_reward)."""
    clip: tuple[float, float] | None = None
    """[lo, hi]: clamp this reward after normalisation (Secrets of RLHF Part I, arXiv 2307.04964)."""
    on_error: Literal["raise", "zero", "skip_group"] = "raise"
    """As for every reward, plus skip_group: the failed completions' groups are left out of the
    policy update (loss mask 0; counted in reward/skipped_groups)."""

    @field_validator("clip")
    @classmethod
    def _ordered(cls, v):
        if v is not None and not v[0] < v[1]:
            raise ValueError(f"clip = {list(v)}: give [lo, hi] with lo < hi")
        return v


class RewardCombine(Section):
    """How the rewards become one reward per completion (`rewards/combiners.py`)."""

    name: str = "weighted_sum"
    """weighted_sum, trust (SophiaVL-R1), constraints (CGPO judges), consistency (GRPO-CARE)."""
    kwargs: dict[str, Any] = {}


class LengthSection(Section):
    """Reasoning-length control on top of the step's reward (`rewards/length.py`, LENGTH_SHAPERS)."""

    name: str
    """hapo (shortest correct length so far per prompt), hbpo (budget subgroups; needs
    rollout.budgets), length_schedule (Kimi k1.5's group length reward with a scheduled weight)."""
    kwargs: dict[str, Any] = {}


class AlgorithmSection(Section):
    preset: str | None = None
    advantage: str = "grpo"
    advantage_kwargs: dict[str, Any] = {}
    loss: str = "ppo_clip"
    loss_kwargs: dict[str, Any] = {}
    loss_agg: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"] = "token_mean"
    kl_coef: float = Field(0.0, ge=0)
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    kl_in_reward: bool = False
    """False: KL term in the loss; True: per-token penalty -kl_coef*KL added to the reward."""
    entropy_coef: float = 0.0
    old_logprobs: Literal["auto", "recompute", "behavior"] = "auto"
    """auto: detached current log-probs when each batch is used once on-policy (no extra
    forward), else one recompute before the first update; behavior: the engine's log-probs."""
    success_threshold: float = 1.0
    """A completion counts as correct when the first reward function gives >= this."""
    rollout_is: Literal["auto", "none", "token", "sequence"] = "auto"
    """Truncated importance-sampling correction for the gap between the sampling policy and the
    learner (stale asynchronous rollouts, or an engine whose numerics differ): the per-token loss
    is multiplied by min(pi_old / pi_behavior, rollout_is_cap), per token or per sequence.
    auto: token-level when `distributed.max_off_policy_steps > 0`, else none."""
    rollout_is_cap: float = Field(2.0, ge=1)
    kl_schedule: Literal["constant", "linear", "cosine"] = "constant"
    """How the KL coefficient moves over training (GRPO-D, OThink-MR1 arXiv 2503.16081: small early
    for exploration, larger later): from `kl_coef_start` at step 0 to `kl_coef` at step
    `kl_schedule_steps`, then constant; linear or along a half cosine. Logged as `kl_coef`."""
    kl_coef_start: float | None = Field(None, ge=0)
    """KL coefficient at step 0; required by a linear or cosine kl_schedule, unused by constant."""
    kl_schedule_steps: int | None = Field(None, ge=1)
    """Step at which the schedule reaches `kl_coef`; None: the last step (train.steps - 1)."""
    mask_truncated: bool = False
    """Overlong filtering (DAPO arXiv 2503.14476; TRL `mask_truncated_completions`): completions cut
    at rollout.max_new_tokens (finish_reason "length") get loss_mask 0. They still count in the
    group statistics of the advantage."""


# -------------------------------------------------------------------------------------- learner
class OptimizerFields(Section):
    """AdamW and its schedule: the policy's (`train`) and the critic's (`critic`) settings."""

    lr: float = Field(1e-6, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    warmup_steps: int = Field(0, ge=0)
    """Linear learning-rate warm-up, in optimizer updates."""
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    max_grad_norm: float | None = Field(1.0, gt=0)


class OptimSection(OptimizerFields):
    micro_batch_size: int = Field(64, ge=1)
    """Sequences per forward/backward; gradients accumulate over micro-batches."""
    bf16: bool | None = None
    """bf16 autocast; None: on for CUDA devices that support it, off on CPU."""
    prefix_sharing: bool = False
    """Encode each group's shared prompt once per forward pass (Prefix Grouper, arXiv 2506.05433);
    same gradients, less work when prompts are long relative to completions."""
    packing: bool = False
    """Pack variable-length sequences into fewer rows (no padding waste) in the learner's forward."""


class CriticSection(OptimizerFields):
    """The value model (`learner/critic.py`), built when `algorithm.advantage` needs "values" (gae,
    t_ppo). It trains with the policy's epochs, mini-batches and micro-batch size, on its own
    optimizer. Under any other estimator this section must stay at its defaults."""

    name_or_path: str | None = None
    """Backbone of the value model; None: the policy's (`model.name_or_path`, the same `tiny` spec).
    A directory holding a saved critic (`checkpoints/step_*/critic`) keeps its value head."""
    lr: float = Field(1e-5, gt=0)
    """verl's critic default (OpenRLHF: 9e-6); usually ~10x the policy's."""
    vf_clip: float | None = Field(0.2, gt=0)
    """Value clipping: 0.5 * max((V - R)^2, (clip(V, V_old - vf_clip, V_old + vf_clip) - R)^2).
    0.2 as TRL's PPOConfig (verl and OpenRLHF use 0.5); None: plain 0.5 * (V - R)^2."""
    policy_freeze_steps: int = Field(0, ge=0)
    """RL steps at the start that train only the critic, so a fresh value head is not trusted
    blindly (OpenRLHF `--freezing_actor_steps`, verl `trainer.critic_warmup`)."""
    replay_capacity: int = Field(10000, ge=1)
    """Estimators that need "critic_replay" (archer; `learner/critic_replay.py`): turn transitions
    kept for the off-policy critic, oldest evicted first (ArCHer's official `capacity`, 10k)."""
    replay_sample: int | None = Field(None, ge=0)
    """Past transitions drawn uniformly (with replacement) from that buffer each step and trained on
    with the current batch's; None: as many as the current batch has."""
    target_tau: float = Field(0.1, gt=0, le=1)
    """Soft update of the replay critic's target after each critic epoch: target <- (1 - tau) target
    + tau critic (ArCHer's official `tau`, 0.1)."""


class NonFiniteLimit(Section):
    """The stop rule of a training loop (trainers/faults.py) for non-finite steps."""

    max_nonfinite_steps: int = Field(5, ge=1)
    """A step whose loss or gradient norm is inf/NaN skips its update and is reported; this many in
    a row save a checkpoint (the weights after the last applied update) and stop the run with an
    error (exit status 3)."""


class TrainSection(OptimSection, NonFiniteLimit):
    steps: int = Field(100, ge=1)
    prompts_per_step: int = Field(8, ge=1)
    mini_batches: int = Field(1, ge=1)
    """Optimizer steps per rollout batch and epoch."""
    epochs: int = Field(1, ge=1)
    """Passes over each rollout batch (PPO epochs)."""


class EvalSection(Section):
    every: int = Field(0, ge=0)
    """Evaluate every this many steps (0: only before and after training)."""
    limit: int | None = Field(500, ge=1)
    """Evaluation problems (None: the whole eval split)."""
    max_new_tokens: int | None = None
    """Default: rollout.max_new_tokens."""
    k: list[int] = []
    """Sampled pass@k to report besides greedy pass@1 (uses max(k) samples per problem)."""
    before: bool = True
    """Evaluate before the first step."""


class CheckpointSection(Section):
    every: int = Field(50, ge=1)
    keep_last: int = Field(2, ge=1)


class LoggingSection(Section):
    console_every: int = Field(1, ge=1)
    tensorboard: bool = False
    wandb_project: str | None = None
    progress: bool = True


class DistributedSection(Section):
    """Where the parts run. Defaults: everything in this one process."""

    backend: Literal["local", "ray"] = "local"
    """local: rollout, rewards and learner in this process (plus `learner_procs` data-parallel
    processes); ray: rollout workers, reward workers and the learner are Ray actors."""
    ray_address: str | None = None
    """An existing Ray cluster (`auto`, `ray://head:10001`); None starts a local one."""
    rollout_workers: int = Field(1, ge=1)
    """Engine replicas; each step's prompts are split across them in contiguous shards."""
    reward_workers: int = Field(0, ge=0)
    """Ray actors that score completions (0: score in the driver)."""
    worker_cpus: float = Field(1.0, gt=0)
    """CPUs reserved per Ray actor (rollout, reward and learner workers)."""
    worker_gpus: float = Field(0.0, ge=0)
    """GPUs per rollout/learner actor (0 on CPU machines)."""
    learner_procs: int = Field(1, ge=1)
    """Data-parallel learner processes (torch.distributed: gloo on CPU, NCCL on GPU). With the local
    backend `postrl train` starts them itself (or run it under `torchrun`)."""
    strategy: Literal["ddp", "fsdp2"] = "ddp"
    """How the learner's parameters are held across `learner_procs`: replicated (DDP) or sharded (FSDP2)."""
    max_off_policy_steps: int = Field(0, ge=0)
    """0: synchronous on-policy training. k > 0: rollouts for steps t+1..t+k are generated while
    step t trains; the batch trained at step t was sampled with the weights after update t-k."""
    max_worker_restarts: int = Field(3, ge=0)
    """Ray rollout and reward workers whose process dies are re-created and their shard redone
    (same weights version, same seed: the same batch); this many re-creations per worker slot,
    then the run stops with the worker's error."""


class ArpoSection(Section):
    """ARPO's entropy-based adaptive rollout (arXiv 2507.19849; rollout/arpo.py, docs/agents.md): of
    rollout.n episodes per prompt, `initial` start whole; the rest branch after tool-call turns."""

    initial: int = Field(..., ge=1)
    """N whole trajectories per prompt (the paper: half of M = rollout.n)."""
    beam: int = Field(2, ge=1)
    """Z partial rollouts started at a branching point."""
    alpha: float = 0.5
    beta: float = 0.2
    threshold: float = 0.5
    """Branch when alpha + beta * (mean first-k entropy - the first action's) > threshold."""
    first_k: int = Field(10, ge=1)


class ReplaySection(Section):
    """Success replay (arXiv 2505.16282; trainers/arpo_replay.py): a group whose episodes all failed
    gets its last episode replaced by a stored success of the same prompt. Checkpointed."""

    capacity: int = Field(8, ge=1)
    """Stored successes per prompt (FIFO)."""
    threshold: float = 1.0
    """An episode whose env return is >= threshold is a success."""


class EnvSection(Section):
    """Multi-turn episodes with an environment (docs/agents.md): the rollout becomes
    `rollout/multiturn.run_episodes`; rollout.max_new_tokens is the limit of one turn."""

    name: str
    """A built-in env (`postrl.envs.ENVS`), `module:Class` or `path/to/file.py:Class`."""
    kwargs: dict[str, Any] = {}
    layout: Literal["concat", "per_turn"] = "concat"
    """concat: one training row per episode (observations masked out); per_turn: one row per turn."""
    max_turns: int | None = Field(None, ge=1)
    """None: the env class's `max_turns` attribute, else 8."""
    max_total_tokens: int = Field(2048, ge=2)
    """Prompt + all actions and observations of an episode."""
    turn_timeout_s: float | None = Field(30.0, gt=0)
    episode_timeout_s: float | None = Field(None, gt=0)
    history: str = "full"
    """per_turn contexts: a `HISTORIES` name (full, last_k, hcpo, ...)."""
    history_k: int = Field(2, ge=1)
    """k of history policies that take one (last_k)."""
    history_kwargs: dict[str, Any] = {}
    """The history policy's other hyper-parameters (checked against its registry entry)."""
    arpo: ArpoSection | None = None
    """Entropy-triggered branching after tool calls (None: every episode starts whole)."""
    replay: ReplaySection | None = None
    """Replace one episode of an all-failed group by a stored success (None: off)."""


class RLConfig(RunConfig):
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    sampler: SamplerSection = SamplerSection()
    rollout: RolloutSection = RolloutSection()
    rewards: list[RLRewardSpec] = [RLRewardSpec(name="exact_match")]
    reward_combine: RewardCombine = RewardCombine()
    length: LengthSection | None = None
    """Length shaping of the reward (HAPO, HBPO, scheduled length reward); None: off."""
    process_rewards: list[RewardSpec] = []
    """Process rewards (rewards/process.py: prm, implicit_prm, rto, ...): token and step rewards added
    after outcome scoring (trainers/process_scoring.py, docs/process_rewards.md)."""
    algorithm: AlgorithmSection = AlgorithmSection()
    train: TrainSection = TrainSection()
    critic: CriticSection = CriticSection()
    eval: EvalSection = EvalSection()
    checkpoint: CheckpointSection = CheckpointSection()
    logging: LoggingSection = LoggingSection()
    distributed: DistributedSection = DistributedSection()
    env: EnvSection | None = None
    """Multi-turn agent training: episodes with this environment instead of single completions."""
    replay: ReplaySection | None = None
    """Success replay of single completions (ARPO, arXiv 2505.16282; trainers/arpo_replay.py): an
    all-failed group's last completion is replaced by a stored success of the same prompt, with the
    rewards it was scored with. Checkpointed. Episodes (env:) use env.replay instead."""

    @model_validator(mode="after")
    def _check_names_and_combinations(self):
        from postrl import algorithms, rewards, rollout, samplers  # registries (imports torch)

        a = self.algorithm
        _in_registry(algorithms.ADVANTAGES, a.advantage, "algorithm.advantage")
        _in_registry(algorithms.POLICY_LOSSES, a.loss, "algorithm.loss")
        algorithms.ADVANTAGES.check_kwargs(a.advantage, a.advantage_kwargs, "algorithm.advantage_kwargs")
        algorithms.POLICY_LOSSES.check_kwargs(a.loss, a.loss_kwargs, "algorithm.loss_kwargs")
        _in_registry(samplers.SAMPLERS, self.sampler.name, "sampler.name")
        samplers.SAMPLERS.check_kwargs(self.sampler.name, self.sampler.kwargs, "sampler.kwargs")
        _in_registry(rollout.ENGINES, self.rollout.engine, "rollout.engine")
        if self.env is not None and "rewards" not in self.model_fields_set:
            self.rewards = []  # the env's return is the reward; configured rewards add to it
        if self.env is None or self.rewards:
            _check_reward_specs(self.rewards)
        for r in self.rewards:
            if ":" not in r.name:
                if "max_new_tokens" in rewards.REWARDS.get(r.name).needs and r.kwargs.get("max_tokens") is None:
                    r.kwargs = {**r.kwargs, "max_tokens": self.rollout.max_new_tokens}
                if "policy_tokenizer" in rewards.REWARDS.get(r.name).needs and not r.kwargs.get("policy_tokenizer"):
                    r.kwargs = {**r.kwargs, "policy_tokenizer": self.model.tokenizer or self.model.name_or_path}
        if a.kl_in_reward and a.kl_coef == 0 and not a.kl_coef_start:
            raise ValueError("algorithm.kl_in_reward is true but algorithm.kl_coef is 0; set a "
                             "positive kl_coef or drop kl_in_reward")
        if self.train.prefix_sharing and self.model.gradient_checkpointing:
            raise ValueError("train.prefix_sharing needs the prompt's KV cache, which transformers drops "
                             "under gradient checkpointing; turn off one of train.prefix_sharing and "
                             "model.gradient_checkpointing")
        d, world = self.distributed, self.distributed.learner_procs
        rows = self.train.prompts_per_step * self.rollout.n
        if world > 1 and rows % self.train.mini_batches:
            raise ValueError(f"train.mini_batches={self.train.mini_batches} must divide the {rows} rows of "
                             "a step when distributed.learner_procs > 1")
        if world > 1 and (rows // self.train.mini_batches) % world:
            raise ValueError(f"distributed.learner_procs={world} must divide the rows of every mini-batch "
                             f"(train.prompts_per_step * rollout.n / train.mini_batches = {rows} / "
                             f"{self.train.mini_batches}); change prompts_per_step, n or learner_procs")
        if "groups" in algorithms.POLICY_LOSSES.get(a.loss).needs:
            n, mini = self.rollout.n, rows // max(self.train.mini_batches, 1)
            if self.train.micro_batch_size % n or rows % self.train.mini_batches or (mini // world) % n:
                raise ValueError(
                    f"algorithm.loss={a.loss!r} compares the {n} completions of a prompt, so every micro-batch "
                    f"must hold whole groups: train.micro_batch_size ({self.train.micro_batch_size}) and the rows "
                    f"of each mini-batch per learner process ({rows} / {self.train.mini_batches} mini-batches / "
                    f"{world} procs) must be multiples of rollout.n={n}")
        if d.max_off_policy_steps and d.backend == "local" and world > 1:
            raise ValueError("distributed.max_off_policy_steps > 0 with learner_procs > 1 needs "
                             "distributed.backend=ray (rollout workers generate while the learners train)")
        _check_critic(self)
        _check_loop_features(self)
        _check_value_credit(self)
        from postrl.trainers.process_scoring import check_config as check_process_rewards

        check_process_rewards(self)
        from postrl.rewards.shaping import check_config as check_reward_shaping

        check_reward_shaping(self)
        from postrl.rewards.length import check_config as check_length
        from postrl.rollout.budgets import check_config as check_budgets

        check_length(self)
        check_budgets(self)
        if self.env is not None:
            from postrl.trainers.env_rollout import check_config as check_env

            check_env(self)
        return self

    @property
    def needs_critic(self) -> bool:
        """A value model is trained: the advantage estimator's registry entry needs "values"."""
        from postrl.algorithms import ADVANTAGES

        return "values" in ADVANTAGES.get(self.algorithm.advantage).needs

    @property
    def needs_reference(self) -> bool:
        """A reference model is loaded: for a KL term, or for a loss that reads reference log-probs."""
        from postrl.algorithms import POLICY_LOSSES

        a = self.algorithm
        kl = max(a.kl_coef, a.kl_coef_start or 0.0) if a.kl_schedule != "constant" else a.kl_coef
        return kl > 0 or "reference" in POLICY_LOSSES.get(a.loss).needs

    @property
    def rollout_is(self) -> str:
        """The importance-sampling correction in effect (`algorithm.rollout_is` with auto resolved)."""
        if self.algorithm.rollout_is != "auto":
            return self.algorithm.rollout_is
        return "token" if self.distributed.max_off_policy_steps > 0 else "none"



class SFTTrain(OptimSection, NonFiniteLimit):
    lr: float = Field(1e-5, gt=0)
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(64, ge=1)
    max_seq_tokens: int = Field(1024, ge=2)
    loss_on: Literal["completion", "all"] = "completion"
    """Train on completion (assistant) tokens only, or on every token."""


class SFTConfig(RunConfig):
    name: str = "sft"
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    train: SFTTrain = SFTTrain()
    checkpoint: CheckpointSection = CheckpointSection(every=500)
    logging: LoggingSection = LoggingSection(console_every=50)



# ----------------------------------------------------------------------------------- preference
class PrefColumns(Columns):
    """Column names of preference data (TRL's by default); `completion` is the unpaired one."""

    chosen: str = "chosen"
    rejected: str = "rejected"
    label: str = "label"
    """Unpaired (KTO) rows: true for a desirable completion."""
    responses: str = "responses"
    """Ranked (LiPO) rows: a list of >= 2 responses."""
    scores: str = "scores"
    """Ranked rows: one number per response, higher is better."""
    margin: str = "margin"
    """Paired rows, for losses that need "margins" (MODPO): another objective's reward margin."""
    rationale: str = "rationale"
    """Paired rows, for losses that need "rationales": why the chosen response is better."""


class PairSelect(Section):
    """MPO's data selection (arXiv 2403.19443): split pairs by their reward margin into easy (large
    margin) and hard (small), train on one part; the other part's prompts are written to
    RUN_DIR/select/{easy,hard}_prompts.jsonl for the RL stage (`data/pair_select.py`)."""

    reward: str | None = None
    """A reward model directory (a `postrl rm` run's `final`): margin = r(x, y_w) - r(x, y_l).
    None: the margin is read from the data.columns.margin column."""
    keep: Literal["easy", "hard"] = "easy"
    """Which part `postrl pref` trains on (MPO's first stage: DPO on the easy pairs)."""
    threshold: float | None = None
    """A pair is easy when its margin >= threshold. Give this or `quantile` (no paper default)."""
    quantile: float | None = Field(None, gt=0, lt=1)
    """The threshold is this quantile of the training pairs' margins (0.5: the larger half is easy)."""

    @model_validator(mode="after")
    def _one_cut(self):
        if (self.threshold is None) == (self.quantile is None):
            raise ValueError("data.select needs exactly one of threshold (a margin) or quantile (a fraction in (0, 1) "
                             "of the pairs' margins), e.g. data.select: {keep: easy, quantile: 0.5}")
        return self


class PrefDataSection(DataSection):
    """Preference data: paired, unpaired or ranked rows (`data/preference.py`)."""

    source: str = "task:arithmetic_pairs"
    columns: PrefColumns = PrefColumns()
    identical_pairs: Literal["error", "skip"] = "error"
    """A pair whose chosen and rejected responses are equal: stop with an error, or drop it (counted)."""
    long_rows: Literal["error", "skip"] = "error"
    """A row whose prompt plus longest response exceeds train.max_length tokens: stop with an error,
    or drop it (the count is printed and logged as data/dropped_long)."""
    rationale_template: str = "{chosen}\nRejected: {rejected}\nRationale: "
    """Losses that need "rationales": the text after the rendered prompt that conditions the
    rationale, over `{chosen}` and `{rejected}` (log pi(r | x, y_w, y_l); trainers/pref_rationale.py)."""
    select: PairSelect | None = None
    """Train on the easy or the hard pairs only, split by reward margin (MPO; docs/preference_guide.md)."""

    @field_validator("rationale_template")
    @classmethod
    def _rationale_fields(cls, v: str) -> str:
        import string

        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        except ValueError as e:
            raise ValueError(f"data.rationale_template {v!r} is not a valid format string ({e}); write literal "
                             "braces as {{ and }}") from None
        if fields - {"chosen", "rejected"}:
            raise ValueError(f"data.rationale_template uses {sorted(fields - {'chosen', 'rejected'})}; it may use only "
                             "{chosen} and {rejected} (the prompt comes before it, rendered as for the responses)")
        return v

    @model_validator(mode="after")
    def _unused_prompt_options(self):
        for key in ("prompt_template", "answer_pattern"):
            if getattr(self, key) is not None:
                raise ValueError(f"data.{key} is not used by preference data (prompts and responses come from "
                                 "their columns as they are); drop it")
        return self


class PrefLoss(Section):
    name: str = "dpo"
    """A preference loss of the registry (`postrl algos`, docs/preference.md)."""
    kwargs: dict[str, Any] = {}
    """The loss's keyword hyper-parameters, e.g. `{beta: 0.1}`."""


class PrefTrain(OptimSection, NonFiniteLimit):
    lr: float = Field(1e-6, gt=0)
    """TRL's DPOConfig default; a from-scratch tiny model wants ~1e-4."""
    batch_size: int = Field(32, ge=1)
    """Preference examples (pairs, labelled completions or ranked lists) per optimizer step."""
    micro_batch_size: int = Field(16, ge=1)
    """Examples per forward/backward (all responses of an example go in one forward); gradients
    accumulate over micro-batches, normalised by the whole batch."""
    steps: int | None = Field(None, ge=1)
    """Optimizer steps; None: `epochs` passes over the training rows."""
    epochs: int = Field(1, ge=1)
    """Passes over the data when `steps` is None."""
    max_length: int = Field(1024, ge=2)
    """Most tokens of prompt + response (TRL's default); longer rows follow data.long_rows."""


class PrefEval(Section):
    every: int = Field(0, ge=0)
    """Evaluate every this many steps (0: only before and after training)."""
    before: bool = True
    """Evaluate before the first step."""
    limit: int | None = Field(500, ge=1)
    """Held-out examples (None: the whole eval split)."""
    greedy: Literal["auto", "always", "never"] = "auto"
    """Greedy accuracy of the policy on the held-out prompts (`trainers/evaluate.py`) besides pair
    accuracy. auto: when the held-out rows have an `answer` column (the built-in arithmetic_* data)."""
    reward: str = "exact_match"
    """The reward that decides a greedy completion is correct (against the `answer` column)."""
    max_new_tokens: int = Field(16, ge=1)


class PrefOnline(Section):
    """Sampling of the responses `postrl pref` draws from the current policy each step, for losses
    that need "online_kl" (HyPO): one per training example, after its prompt."""

    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: list[str] = []


class PrefConfig(RunConfig):
    """`postrl pref`: offline preference optimisation (trainers/pref.py)."""

    name: str = "pref"
    model: ModelSection = ModelSection()
    """The policy; give an SFT run's `final` directory to start from a warm start. The reference
    is a frozen copy of it (or model.ref_model), loaded only when the loss needs "reference"."""
    data: PrefDataSection = PrefDataSection()
    loss: PrefLoss = PrefLoss()
    train: PrefTrain = PrefTrain()
    eval: PrefEval = PrefEval()
    checkpoint: CheckpointSection = CheckpointSection(every=100)
    logging: LoggingSection = LoggingSection(console_every=10)
    online: PrefOnline = PrefOnline()
    """Used only by losses that need "online_kl" (HyPO; trainers/pref_online.py)."""

    @model_validator(mode="after")
    def _check_loss(self):
        from postrl import algorithms
        from postrl.trainers.pref_data import SUPPORTED_NEEDS

        _check_pref_loss(self.loss, SUPPORTED_NEEDS, "offline `postrl pref`")
        if ":" not in self.eval.reward:
            from postrl import rewards

            _in_registry(rewards.REWARDS, self.eval.reward, "eval.reward")
        if (self.model.ref_model or self.model.reference_soup) and not self.needs_reference:
            raise ValueError(f"model.ref_model / reference_soup is set but loss.name={self.loss.name!r} is "
                             "reference-free and loads no reference model; drop the setting or use a "
                             "reference-based loss (e.g. dpo)")
        if self.train.packing and self.train.prefix_sharing:
            raise ValueError("train.packing and train.prefix_sharing are two ways of one forward; keep one")
        if self.online != PrefOnline() and "online_kl" not in algorithms.PREFERENCE_LOSSES.get(self.loss.name).needs:
            raise ValueError(f"online is set but loss.name={self.loss.name!r} samples no online responses (only "
                             "losses that need 'online_kl', e.g. hypo, do); drop the online settings")
        if self.data.source.startswith("task:"):  # built-in data is cheap: check its format fits the loss now
            from postrl.trainers.pref_data import check_task_fits

            check_task_fits(self)
        return self

    @property
    def needs_reference(self) -> bool:
        """The loss reads reference log-probs (its registry entry needs "reference")."""
        from postrl.algorithms import PREFERENCE_LOSSES

        return "reference" in PREFERENCE_LOSSES.get(self.loss.name).needs



# --------------------------------------------------------------------------------- reward model
class RMTrain(OptimizerFields, NonFiniteLimit):
    """Bradley–Terry reward-model training (`postrl rm`, trainers/rm.py)."""

    lr: float = Field(1e-5, gt=0)
    """For a pretrained backbone; a from-scratch tiny model wants ~1e-3."""
    batch_size: int = Field(32, ge=1)
    """Pairs per optimizer step."""
    micro_batch_size: int = Field(16, ge=1)
    """Pairs per forward/backward (chosen and rejected go in one forward of 2x this many sequences);
    gradients accumulate over micro-batches, normalised by the whole batch."""
    bf16: bool | None = None
    """bf16 autocast; None: on for CUDA devices that support it, off on CPU."""
    steps: int | None = Field(None, ge=1)
    """Optimizer steps; None: `epochs` passes over the training pairs."""
    epochs: int = Field(1, ge=1)
    """Passes over the pairs when `steps` is None."""
    max_length: int = Field(1024, ge=2)
    """Most tokens of prompt + response + EOS; longer pairs follow data.long_rows."""
    margin: float = 0.0
    """Margin m of -log sigmoid(r_w - r_l - m) (Llama 2, arXiv 2307.09288); a pair's own `margin`
    column, when the data has one, replaces it."""
    center_rewards_coef: float = Field(0.0, ge=0)
    """Weight of the auxiliary loss (r_w + r_l)^2 that keeps rewards centred on 0 (arXiv 2312.09244;
    TRL's `center_rewards_coefficient`, which recommends 0.01); 0 turns it off."""


class RMEval(Section):
    every: int = Field(0, ge=0)
    """Held-out pair accuracy every this many steps (0: only at the end, which always runs)."""
    limit: int | None = Field(500, ge=1)
    """Held-out pairs (None: the whole eval split)."""
    holdout_fraction: float = Field(0.05, gt=0, lt=1)
    """When the data has no held-out split (one file and no data.eval_source), this fraction of
    its pairs, chosen by `seed`, is held out instead of trained on."""


class RMConfig(RunConfig):
    """`postrl rm`: a Bradley–Terry reward model on paired preferences (trainers/rm.py)."""

    name: str = "rm"
    model: ModelSection = ModelSection()
    """The backbone (a causal LM: hub id, directory such as an SFT run's `final`, or `tiny`); a
    one-output head is put on its last non-pad token."""
    data: PrefDataSection = PrefDataSection()
    """Paired rows (prompt + chosen + rejected), or ranked rows (every better/worse pair of a row);
    unpaired (completion + label) rows are an error."""
    train: RMTrain = RMTrain()
    eval: RMEval = RMEval()
    checkpoint: CheckpointSection = CheckpointSection(every=100)
    logging: LoggingSection = LoggingSection(console_every=10)

    @model_validator(mode="after")
    def _check_rm(self):
        _check_scalar_model(self.model, "postrl rm", "reward model")
        if self.data.select is not None:
            raise ValueError("data.select splits pairs for `postrl pref` (MPO); postrl rm trains on every pair: "
                             "drop it")
        return self



# ----------------------------------------------------------------------------- self-improvement
class BStarSearch(Section):
    """B-STaR's per-round search (arXiv 2412.17256): grids and the balance score's cap."""

    temperatures: list[float] = [0.5, 0.7, 0.9, 1.1]
    """Sampling temperatures tried on the probe (our grid; the paper's could not be confirmed)."""
    thresholds: list[float] | None = None
    """Reward thresholds tried on the same samples; None: only raft.threshold (a binary reward has
    one useful threshold; give a grid for graded or reward-model rewards)."""
    probe_prompts: int = Field(32, ge=1)
    """Training prompts sampled (rollout.n each, at every temperature) to score the grid."""
    n_star: int = Field(8, ge=1)
    """n*, the number of unique correct completions per prompt that counts as enough (8 in the
    authors' code)."""

    @field_validator("temperatures")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if not v or any(t <= 0 for t in v):
            raise ValueError(f"raft.b_star.temperatures = {v}: give at least one temperature, each > 0")
        return v

    @field_validator("thresholds")
    @classmethod
    def _non_empty(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and not v:
            raise ValueError("raft.b_star.thresholds is empty; give at least one threshold or leave it unset")
        return v


class RaftLoop(Section):
    """Rejection sampling then SFT, iterated (RAFT arXiv 2304.06767; ReST arXiv 2308.08998)."""

    rounds: int = Field(3, ge=1)
    """Iterations of sample -> score -> filter -> SFT; a checkpoint follows each."""
    prompts_per_round: int = Field(64, ge=1)
    """Training prompts sampled per round (rollout.n completions each), drawn in `uniform` order."""
    keep: Literal["best", "all_above"] = "best"
    """best: per prompt, its highest-reward completion if that reaches `threshold` (RAFT best-of-k).
    all_above: every completion whose reward reaches `threshold` (ReST / expert iteration / STaR)."""
    threshold: float = 1.0
    """Minimum total reward (weighted sum of `rewards`) of a kept completion (greedy accuracy uses
    eval.success_threshold)."""
    rationalize: bool = False
    """STaR rationalisation (arXiv 2203.14465; trainers/star.py): the round's prompts with nothing
    kept are sampled again with the answer as a hint (`hint_template`); the kept completions are
    trained after the original, hint-free prompt."""
    hint_template: str = "{prompt} (answer: {answer})"
    """Format string of the hinted prompt: `{prompt}` is the last user turn (or the string prompt),
    `{answer}` the reference answer, any other column by name. Replaces the last user turn."""
    restart_from_base: bool = False
    """STaR / ReST-EM: every round's SFT starts again from the initial weights with a fresh optimizer
    and schedule (over train.sft_steps_per_round); sampling uses the previous round's model."""
    auto_config: Literal["none", "b_star"] = "none"
    """b_star (arXiv 2412.17256; trainers/b_star.py): each round's rollout.temperature and threshold
    are chosen from `b_star`'s grids by the balance score on a probe of training prompts."""
    b_star: BStarSearch = BStarSearch()

    @model_validator(mode="after")
    def _check_star(self):
        import string

        if self.rationalize:
            try:
                fields = {f for _, f, _, _ in string.Formatter().parse(self.hint_template) if f is not None}
            except ValueError as e:
                raise ValueError(f"raft.hint_template {self.hint_template!r} is not a valid format string ({e}); "
                                 "write literal braces as {{ and }}") from None
            if "answer" not in fields:
                raise ValueError(f"raft.hint_template {self.hint_template!r} does not use {{answer}}, so the retry "
                                 "gets no hint; e.g. \"{prompt} (answer: {answer})\"")
        elif self.hint_template != RaftLoop.model_fields["hint_template"].default:
            raise ValueError("raft.hint_template is set but raft.rationalize is false; set raft.rationalize: true "
                             "or drop the template")
        if self.auto_config == "none" and self.b_star != BStarSearch():
            raise ValueError("raft.b_star is set but raft.auto_config is 'none'; set raft.auto_config: b_star or "
                             "drop the b_star settings")
        return self


class RaftTrain(OptimSection, NonFiniteLimit):
    lr: float = Field(1e-5, gt=0)
    sft_steps_per_round: int = Field(20, ge=1)
    """SFT optimizer steps on each round's kept completions (from the weights the round sampled with)."""
    batch_size: int = Field(32, ge=1)
    """Kept (prompt, completion) sequences per SFT step, drawn in `uniform` order over the round's set."""


class RaftEval(Section):
    """Greedy accuracy on held-out prompts after every round (`postrl online`: see `every`)."""

    limit: int | None = Field(500, ge=1)
    """Held-out prompts (data.eval_split / data.eval_source) for greedy accuracy."""
    max_new_tokens: int | None = None
    """None: rollout.max_new_tokens."""
    before: bool = True
    """Also measure greedy accuracy before training."""
    success_threshold: float = 1.0
    """A greedy answer counts as correct when the first reward function gives >= this (kept apart
    from the threshold that decides what is trained on, e.g. raft.threshold)."""


class RaftConfig(RunConfig):
    """`postrl raft`: rejection-sampling self-improvement (trainers/raft.py, docs/self_improvement.md)."""

    name: str = "raft"
    model: ModelSection = ModelSection()
    """The policy; give an SFT run's `final` directory to start from a warm start."""
    data: DataSection = DataSection()
    rollout: RolloutSection = RolloutSection()
    """`n` is k, the samples per prompt; sampling settings as in `postrl train`."""
    rewards: list[RewardSpec] = [RewardSpec(name="exact_match")]
    raft: RaftLoop = RaftLoop()
    train: RaftTrain = RaftTrain()
    eval: RaftEval = RaftEval()
    checkpoint: CheckpointSection = CheckpointSection(every=1)
    """A checkpoint after every round (`every` is not used); `keep_last` of them are kept."""
    logging: LoggingSection = LoggingSection()

    @model_validator(mode="after")
    def _check_names(self):
        from postrl import rollout

        _in_registry(rollout.ENGINES, self.rollout.engine, "rollout.engine")
        _check_reward_specs(self.rewards)
        return self



def _check_critic(cfg: RLConfig) -> None:
    """The critic runs in the single local learner process; its settings need an estimator that uses it."""
    adv, d = cfg.algorithm.advantage, cfg.distributed
    if not cfg.needs_critic:
        # compared with the defaults, not `model_fields_set`: a dumped config.yaml lists every key
        changed = [k for k, v in cfg.critic if v != CriticSection.model_fields[k].default]
        if changed:
            raise ValueError(f"critic.{changed[0]} is set but algorithm.advantage={adv!r} trains no value model; "
                             "use a critic-based estimator (gae, t_ppo, or preset ppo) or drop the critic settings")
        return
    from postrl.algorithms import ADVANTAGES

    replay = [k for k in ("replay_capacity", "replay_sample", "target_tau")
              if getattr(cfg.critic, k) != CriticSection.model_fields[k].default]
    if replay and "critic_replay" not in ADVANTAGES.get(adv).needs:
        raise ValueError(f"critic.{replay[0]} is set but algorithm.advantage={adv!r} trains its critic on-policy "
                         "(no replay buffer, no target critic); use an off-policy critic estimator (archer) or drop it")
    where = [f"distributed.backend={d.backend!r}" if d.backend != "local" else None,
             f"distributed.learner_procs={d.learner_procs}" if d.learner_procs > 1 else None,
             f"distributed.max_off_policy_steps={d.max_off_policy_steps}" if d.max_off_policy_steps else None]
    where = [w for w in where if w]
    if where:
        raise ValueError(f"algorithm.advantage={adv!r} trains a value model (critic), which runs only in one local "
                         f"learner process with synchronous rollouts; not supported with it: {', '.join(where)}. "
                         "Use distributed.backend=local, learner_procs=1, max_off_policy_steps=0, or a critic-free "
                         "estimator (grpo, rloo, reinforce_pp)")


def _check_loop_features(cfg: RLConfig) -> None:
    """Settings of the loop features (`trainers/collect.py`, KL schedule, reference soup) that do not fit together."""
    from postrl import algorithms, samplers

    a, lag, n = cfg.algorithm, cfg.distributed.max_off_policy_steps, cfg.rollout.n
    if a.kl_schedule == "constant" and (a.kl_coef_start is not None or a.kl_schedule_steps is not None):
        raise ValueError("algorithm.kl_coef_start / kl_schedule_steps are set but algorithm.kl_schedule is "
                         "'constant'; set kl_schedule: linear (or cosine), or drop them")
    if a.kl_schedule != "constant" and a.kl_coef_start is None:
        raise ValueError(f"algorithm.kl_schedule={a.kl_schedule!r} needs algorithm.kl_coef_start (the coefficient "
                         f"at step 0; it moves to algorithm.kl_coef={a.kl_coef}), e.g. kl_coef_start: 0.0")
    sampler = samplers.SAMPLERS[cfg.sampler.name]
    from postrl.trainers.hints import check_config as check_hints

    check_hints(cfg)  # a sampler that adds hints or answer prefixes to prompts (trainers/hints.py)
    from postrl.trainers.arpo_replay import check_config as check_replay
    from postrl.trainers.groups import check_config as check_groups

    check_groups(cfg)  # a sampler that drops rows or allocates rollouts unevenly (trainers/groups.py)
    check_replay(cfg)  # the single-completion success replay
    if getattr(sampler, "filters_groups", False):
        if lag:
            raise ValueError(f"sampler.name={cfg.sampler.name!r} refills the batch within the step, which needs "
                             f"synchronous rollouts; distributed.max_off_policy_steps is {lag}: set it to 0 "
                             "or use sampler.name: uniform")
        if n < 2:
            raise ValueError(f"sampler.name={cfg.sampler.name!r} keeps groups whose rewards differ, which a group "
                             "of rollout.n=1 never has; set rollout.n >= 2")
    if "greedy_rewards" in algorithms.ADVANTAGES.get(a.advantage).needs and lag:
        raise ValueError(f"algorithm.advantage={a.advantage!r} needs a greedy completion from the policy that "
                         f"sampled the batch, so it needs synchronous rollouts; distributed.max_off_policy_steps "
                         f"is {lag}: set it to 0")
    if cfg.rollout.inject_reference is not None and n < 2:
        raise ValueError(f"rollout.inject_reference={cfg.rollout.inject_reference!r} replaces one completion per "
                         "group, which leaves no sample of the policy with rollout.n=1; set rollout.n >= 2")
    if cfg.model.reference_soup and not cfg.needs_reference:
        raise ValueError("model.reference_soup builds a reference model, but nothing uses one (algorithm.kl_coef "
                         "is 0 and the loss reads no reference); set algorithm.kl_coef > 0 or drop the soup")


def _check_value_credit(cfg: RLConfig) -> None:
    """What estimators needing "mc_values" and losses needing "vocab_mean" (SPO, ROVER) require of the loop."""
    from postrl import algorithms
    from postrl.algorithms import segment_mc

    a, lag = cfg.algorithm, cfg.distributed.max_off_policy_steps
    estimator = algorithms.ADVANTAGES.get(a.advantage)
    if "mc_values" in estimator.needs:
        if lag:
            raise ValueError(f"algorithm.advantage={a.advantage!r} samples continuations of the batch's prefixes "
                             "with the policy that sampled the batch, so it needs synchronous rollouts; "
                             f"distributed.max_off_policy_steps is {lag}: set it to 0")
        if a.kl_in_reward:
            raise ValueError(f"algorithm.advantage={a.advantage!r} values states by the outcome reward only; a KL "
                             "penalty in the reward would be dropped: set algorithm.kl_in_reward=false")
        segment_mc.check_hparams({**estimator.defaults, **a.advantage_kwargs})
    if "vocab_mean" in algorithms.POLICY_LOSSES.get(a.loss).needs and a.old_logprobs == "behavior":
        raise ValueError(f"algorithm.loss={a.loss!r} needs the old policy's vocabulary mean, which the rollout engine "
                         "does not return; set algorithm.old_logprobs to auto or recompute")


def _check_reward_specs(specs: list[RewardSpec]) -> None:
    """Some rewards are given, and each registry name (not `module:function`) and its kwargs are known."""
    from postrl import rewards

    if not specs:
        raise ValueError("rewards: give at least one reward function, e.g. [{name: exact_match}]")
    for i, r in enumerate(specs):
        if ":" not in r.name:
            _in_registry(rewards.REWARDS, r.name, f"rewards[{i}].name")
            rewards.REWARDS.check_kwargs(r.name, r.kwargs, f"rewards[{i}].kwargs")


def _check_pref_loss(loss: PrefLoss, provided: tuple[str, ...], command: str) -> None:
    """loss.name is a preference loss with valid kwargs, and `command` provides all its needs."""
    from postrl.algorithms import PREFERENCE_LOSSES

    _in_registry(PREFERENCE_LOSSES, loss.name, "loss.name")
    PREFERENCE_LOSSES.check_kwargs(loss.name, loss.kwargs, "loss.kwargs")
    missing = [n for n in PREFERENCE_LOSSES.get(loss.name).needs if n not in provided]
    if missing:
        raise ValueError(f"loss.name={loss.name!r} needs {', '.join(map(repr, missing))}, which {command} does not "
                         f"provide (it provides {', '.join(provided)}); choose another loss (docs/preference.md)")


def _check_scalar_model(m: ModelSection, command: str, what: str) -> None:
    """Reward models (`postrl rm`, `postrl prm`) train every weight and read no reference model."""
    if m.lora.enabled:
        raise ValueError(f"model.lora.enabled: {command} trains the full {what} (LoRA is not supported for it); "
                         "set model.lora.enabled: false")
    if m.ref_model or m.reference_soup:
        raise ValueError(f"model.ref_model / reference_soup: a {what} has no reference model; drop them")


def _in_registry(registry, name: str, key: str) -> None:
    registry.check_name(name, key)


# ----------------------------------------------------------------------------------- loading
def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`["a.b=1", "c=x"]` -> `{"a.b": 1, "c": "x"}`; values are parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE with a dotted key, e.g. "
                              "--set rollout.n=8")
        try:
            out[key.strip()] = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {pair!r}: value is not valid YAML ({e})") from None
    return out


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i + 1])} is not a section")
        node = nxt
    node[parts[-1]] = value


def has_dotted(tree: dict[str, Any], key: str) -> bool:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    return raw


def resolve(schema: type[BaseModel], raw: dict[str, Any], overrides: dict[str, Any] | None = None,
            source: str = "config") -> Any:
    """Apply overrides and the preset to a raw dict, then validate it into `schema`."""
    raw = _deep_copy(raw)
    for key, value in (overrides or {}).items():
        set_dotted(raw, key, value)
    preset = (raw.get("algorithm") or {}).get("preset") if isinstance(raw.get("algorithm"), dict) else None
    if preset is not None and "algorithm" in schema.model_fields:
        from postrl.algorithms import PRESETS

        if not isinstance(preset, str) or preset not in PRESETS:  # a list would not even hash
            _raise_unknown_preset(preset, PRESETS, source)
        for key, value in PRESETS.get(preset).fn().items():
            if key.endswith("+"):
                _append_new(raw, schema, key[:-1], value)
            elif not has_dotted(raw, key):
                set_dotted(raw, key, value)
    try:
        return schema.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, schema, source)) from None


def _append_new(raw: dict[str, Any], schema: type[BaseModel], key: str, items: list) -> None:
    """A preset's `KEY+`: append `items` to the top-level list `KEY` (the user's, else the default),
    skipping those whose `name` is already listed, so a preset adds to a list and never replaces it."""
    if "." in key or key not in schema.model_fields:
        raise ConfigError(f"preset key {key + '+'!r}: only a top-level list of {schema.__name__} can be appended to")
    if key not in raw:
        raw[key] = [x.model_dump(mode="json") if isinstance(x, BaseModel) else x
                    for x in schema.model_fields[key].default]
    current = raw[key]
    if not isinstance(current, list):
        raise ConfigError(f"`{key}` must be a list (the preset appends {items} to it), got {type(current).__name__}")
    names = {x.get("name") for x in current if isinstance(x, dict)}
    # a new list: `current` may be the caller's own object (an override value), never mutate it
    raw[key] = current + [_deep_copy(x) for x in items if not (isinstance(x, dict) and x.get("name") in names)]


def load_config(path: str | Path | None, overrides: list[str] | None = None,
                schema: type[BaseModel] = RLConfig) -> Any:
    raw = read_yaml(path) if path else {}
    return resolve(schema, raw, parse_overrides(overrides or []), source=str(path or "config"))


def dump_config(cfg: BaseModel, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), encoding="utf-8")


def _raise_unknown_preset(preset, presets, source):
    close = difflib.get_close_matches(str(preset), presets.names(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"{source}: algorithm.preset: unknown preset {preset!r}{hint}; valid names: "
                      f"{', '.join(presets.names())}")


def _deep_copy(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _deep_copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_deep_copy(v) for v in x]
    return x


def format_validation_error(err: ValidationError, schema: type[BaseModel], source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            allowed = _fields_at(schema, e["loc"][:-1])
            close = difflib.get_close_matches(str(e["loc"][-1]), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"  unknown key `{loc}`{hint}; allowed keys here: {', '.join(allowed)}")
        elif e["type"] == "value_error":
            msg = str(e.get("ctx", {}).get("error", e["msg"]))
            lines.append(f"  {msg}" if not loc else f"  `{loc}`: {msg}")
        else:
            value = e.get("input")
            shown = repr(value) if not isinstance(value, dict) else "{...}"
            lines.append(f"  `{loc}` = {shown}: {e['msg']}")
    return "\n".join(lines)


def _fields_at(schema: type[BaseModel], loc: tuple) -> list[str]:
    model: Any = schema
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        elif args and any(isinstance(a, type) and issubclass(a, BaseModel) for a in args):
            model = next(a for a in args if isinstance(a, type) and issubclass(a, BaseModel))
        else:
            return []
    return sorted(getattr(model, "model_fields", {}))
