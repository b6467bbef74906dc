"""Online RL, top to bottom: prompts -> rollout -> score -> advantages -> learner.

This file is the loop a reader should be able to follow in one sitting. Every algorithmic
choice is a registry lookup (sampler, engine, rewards, advantage estimator, policy loss); no
algorithm name appears here. `build` assembles the parts (also used by benchmarks), `rl_step`
is one iteration, `train` adds evaluation, logging, checkpoints and exact resume.
"""

from __future__ import annotations

import copy
import json
import resource
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from postrl.algorithms import ADVANTAGES, kl_penalty
from postrl.algorithms.kl import scheduled_kl_coef
from postrl.algorithms.segment_mc import estimate_segment_values
from postrl.algorithms.advantages_igpo import fill_answer_logprobs
from postrl.config import RLConfig
from postrl.data import encode_prompts, load_prompt_dataset
from postrl.data.chat import context_limits
from postrl.data.loading import is_single_file
from postrl.distributed.data_parallel import DataParallel, init_from_env, launch
from postrl.learner.critic import CRITIC_DIR, build_critic
from postrl.learner.critic_replay import REPLAY_DIR, build_critic_replay
from postrl.learner.learner import LossSpec, build_learner
from postrl.learner.models import load_model, load_tokenizer, resolve_device
from postrl.rewards import RewardSet
from postrl.rollout.engines import SamplingParams, build_engine
from postrl.rollout.pipeline import Replica, Rollouts, ShardedEngine
from postrl.samplers import build_sampler
from postrl.tracking import MetricsLogger, truncate_jsonl
from postrl.rewards.shaping import build_shaper
from postrl.rewards.length import build_length_shaper
from postrl.rollout import budgets
from postrl.rewards.text_overlap import check_reward_columns
from postrl.trainers import env_rollout
from postrl.trainers.collect import collect, per_sample_total
from postrl.trainers.groups import group_rewards, sampling_params
from postrl.trainers.evaluate import evaluate
from postrl.trainers.hints import prompts_for
from postrl.trainers.policy_text import policy_text
from postrl.trainers.process_scoring import add_process_rewards, add_token_rewards
from postrl.trainers.progress import progress_bar
from postrl.trainers.run_dir import seed_everything, start_run
from postrl.trainers.faults import RunGuard, fault_counts
from postrl.trainers.scoring import primary_success, reward_failure_metrics, score_batch


@dataclass
class Parts:
    cfg: RLConfig
    device: torch.device
    tokenizer: Any
    learner: Any  # a Learner, or a Ray LearnerGroup with the same methods
    rollouts: Rollouts
    eval_engine: Any
    spec: LossSpec
    rewards: Any  # a RewardSet, or a Ray RewardPool with the same call
    sampler: Any
    train_rows: list
    train_ids: list[list[int]]
    eval_rows: list
    eval_ids: list[list[int]]
    dp: DataParallel | None = None
    advantage_state: dict = field(default_factory=dict)  # estimators that need "state"; checkpointed
    critic: Any = None  # the value model (learner/critic.py) when the estimator needs "values"
    critic_replay: Any = None  # its replay buffer + target critic (learner/critic_replay.py) for "critic_replay"; checkpointed
    shaper: Any = None  # rewards/shaping.py when rewards are normalised, clipped or combined; checkpointed
    episode_replay: Any = None  # trainers/arpo_replay.py when env.replay or (single-turn) replay is set; checkpointed
    length_shaper: Any = None  # rewards/length.py when `length` is set (HAPO's history); checkpointed
    additions: dict = field(default_factory=dict)  # step -> the sampler's prompt additions (trainers/hints.py)

    @property
    def is_main(self) -> bool:
        return self.dp is None or self.dp.is_main


def build(cfg: RLConfig, dp: DataParallel | None = None) -> Parts:
    device = resolve_device(cfg.model.device)
    tokenizer = load_tokenizer(cfg.model)
    train_rows, train_ids, eval_rows, eval_ids = encode_train_and_eval(cfg, tokenizer)
    if cfg.env is not None:  # the EpisodeEngine resets an env from each dataset row
        train_ids, eval_ids = train_rows, eval_rows
    check_reward_columns(cfg.rewards, train_rows)  # a missing references column fails before any sampling
    learner, rollouts, eval_engine, rewards = _placement(cfg, tokenizer, device, dp)
    # after the placement: a sampler that needs "generate" (CLPO's rewriter) samples from the rollout engine
    sampler = build_sampler(cfg.sampler.name, cfg.sampler.kwargs, len(train_rows), cfg.seed, rows=train_rows,
                            tokenizer=tokenizer, generate=policy_text(cfg, tokenizer, rollouts, train_rows))
    critic = build_critic(cfg, tokenizer, device) if cfg.needs_critic else None  # local, one process only
    est = ADVANTAGES.get(cfg.algorithm.advantage)
    replay = (build_critic_replay(cfg, critic, {**est.defaults, **cfg.algorithm.advantage_kwargs})
              if critic is not None and "critic_replay" in est.needs else None)
    spec = LossSpec.from_config(cfg)
    if cfg.env is not None:  # an episode's completion is up to the whole episode, not one turn
        spec.max_tokens = cfg.env.max_total_tokens
    return Parts(cfg, device, tokenizer, learner, rollouts, eval_engine, spec, rewards,
                 sampler, train_rows, train_ids, eval_rows, eval_ids, dp, critic=critic, critic_replay=replay,
                 shaper=build_shaper(cfg, learner, tokenizer), episode_replay=env_rollout.build_replay(cfg),
                 length_shaper=build_length_shaper(cfg))


def _placement(cfg: RLConfig, tokenizer, device, dp):
    """Learner, rollout source, evaluation engine and rewards, where `cfg.distributed` puts them."""
    d, lag = cfg.distributed, cfg.distributed.max_off_policy_steps
    if d.backend == "ray":
        from postrl.distributed.ray_runtime import LearnerGroup, RewardPool, RolloutPool, start_ray

        start_ray(d)
        learner, pool = LearnerGroup(cfg), RolloutPool(cfg)
        # weights go from the learner actor to the object store to the replicas, never via the driver
        rollouts = Rollouts(pool, weights=learner.weights_ref, lag=lag)
        rollouts.sync()  # the learner's initial weights are the truth
        rewards = (RewardPool(cfg.rewards, d.reward_workers, max_restarts=d.max_worker_restarts)
                   if d.reward_workers else RewardSet(cfg.rewards))
        return learner, rollouts, pool, rewards

    def make_engine(model):
        engine = build_engine(cfg.rollout, model, tokenizer)
        return env_rollout.episode_engine(cfg, engine, tokenizer) if cfg.env is not None else engine

    learner = build_learner(cfg, tokenizer, device, dp)
    sharded = dp is not None and dp.strategy == "fsdp2"
    if sharded:  # the learner's parameters are shards: sample from a full private copy
        engine = Replica(load_model(cfg.model, tokenizer, device), make_engine)
        engine.sync_weights(learner.state_dict())
        eval_engine = engine
    elif lag:  # the background thread samples from a private copy while the learner trains
        engine = Replica(copy.deepcopy(learner.model), make_engine)
        eval_engine = make_engine(learner.model)
    else:
        engine = eval_engine = make_engine(learner.model)
    # an engine that holds its own weights (vllm) is synced after every update; hf on the
    # learner's own module needs nothing
    shares = not (sharded or lag) and getattr(engine, "shares_model", True)
    engine = budgets.wrap(cfg, engine, tokenizer)  # rollout.budgets: HBPO budget subgroups (training only)
    if dp is not None:
        engine = ShardedEngine(engine, dp)
    rollouts = Rollouts(engine, weights=learner.state_dict, lag=lag, background=lag > 0, shares_model=shares)
    if cfg.env is not None:  # env return + the configured rewards on the transcript
        return learner, rollouts, eval_engine, env_rollout.EpisodeRewards(RewardSet(cfg.rewards) if cfg.rewards else None)
    return learner, rollouts, eval_engine, RewardSet(cfg.rewards)


def encode_train_and_eval(cfg, tokenizer):
    """(train rows, train ids, eval rows, eval ids) of a config with `data` and `eval.limit`.

    A single-file source has one split: without `data.eval_source` there is no held-out set
    (empty eval lists), never the training rows scored as if they were held out.
    """
    train_rows, train_ids = encode_split(cfg, tokenizer, cfg.data.split, cfg.data.source)
    if cfg.data.eval_source is None and is_single_file(cfg.data.source):
        return train_rows, train_ids, [], []
    return (train_rows, train_ids,
            *encode_split(cfg, tokenizer, cfg.data.eval_split, cfg.data.eval_source, cfg.eval.limit))


def encode_split(cfg, tokenizer, split, source, limit=None):
    """Rows of one split and their prompt token ids (rows the tokenizer cannot encode are dropped)."""
    data = load_prompt_dataset(cfg.data, split=split, source=source)
    ids, kept = encode_prompts(tokenizer, data.rows, cfg.data, **context_limits(cfg))  # prompt + completion fit the model
    rows = [data.rows[i] for i in kept]
    if limit is not None:
        rows, ids = rows[:limit], ids[:limit]
    return rows, ids


def request_rollouts(p: Parts, step: int, saved: dict[int, list[int]] | None = None) -> None:
    """Ask for the batches of steps step..step+k (k = max_off_policy_steps) not yet requested."""
    cfg = p.cfg
    params = sampling_params(p)  # the sampler's first_n(rollout.n) per prompt, entropies if it needs them
    last = min(step + cfg.distributed.max_off_policy_steps, cfg.train.steps - 1)
    for s in range(step, last + 1):
        if s in p.rollouts.pending():
            continue
        idx = (saved or {}).pop(s, None) or p.sampler.next(cfg.train.prompts_per_step)
        ids, p.additions[s] = prompts_for(p, idx)  # with a decorating sampler's hints (trainers/hints.py)
        p.rollouts.request(s, idx, ids, replace(params, progress=s / cfg.train.steps), _step_seed(cfg.seed, s))


def rl_step(p: Parts, step: int) -> dict[str, float]:
    """One iteration: choose prompts, sample, score, estimate advantages, update the policy."""
    cfg, t0 = p.cfg, time.perf_counter()
    request_rollouts(p, step)
    idx, batch = p.rollouts.get(step)
    t_gen = time.perf_counter() - t0
    replay_metrics = {}
    if p.episode_replay is not None and cfg.env is not None:  # all-failed episode groups get a stored success
        # (before scoring; single-turn groups get theirs after scoring, trainers/collect.py)
        batch, replay_metrics = p.episode_replay(batch, idx, _step_seed(cfg.seed, step))

    # score, plus the configured loop features: reference injection, dynamic-sampling refill,
    # truncation mask, greedy baseline (trainers/collect.py)
    idx, batch, result, loop_metrics = collect(p, idx, batch, _step_seed(cfg.seed, step), step)
    loop_metrics.update(replay_metrics)
    a = cfg.algorithm  # algorithm.kl_schedule: a pure function of the step, exact on resume
    p.spec.kl_coef = scheduled_kl_coef(a.kl_schedule, a.kl_coef_start, a.kl_coef, step,
                                       a.kl_schedule_steps or cfg.train.steps - 1)
    batch.prompt_index = torch.tensor(idx)[batch.group_ids]
    estimator = ADVANTAGES.get(cfg.algorithm.advantage)
    # process rewards (PRM, implicit PRM, RTO, ...): token and step rewards (trainers/process_scoring.py)
    loop_metrics.update(add_process_rewards(batch, [p.train_rows[i] for i in idx], p.tokenizer, cfg.process_rewards,
                                            consume_steps="step_rewards" in estimator.needs))
    if p.cfg.needs_reference:  # the reference runs once per batch
        batch.ref_logprobs = p.learner.logprobs(batch, reference=True)
    if p.spec.kl_in_reward:  # the sampling policy's own log-probs: no extra forward
        kl = kl_penalty(batch.behavior_logprobs, batch.ref_logprobs, p.spec.kl_estimator)
        add_token_rewards(batch, -p.spec.kl_coef * kl * batch.loss_mask)  # adds to process rewards
    if p.critic is not None:  # the estimator needs "values"; it leaves the critic's targets in batch.returns
        batch.values, batch.last_values = p.critic.values(batch)
    if "mc_values" in estimator.needs:  # V of prefix states by extra rollouts (algorithms/segment_mc.py)
        rows = [p.train_rows[i] for i in idx]
        estimate_segment_values(batch, generate=p.rollouts.engine.generate,
                                score=lambda b: per_sample_total(p, score_batch(b, rows, p.tokenizer, p.rewards), step),
                                params=SamplingParams.from_config(cfg.rollout), seed=_step_seed(cfg.seed, step),
                                hparams={**estimator.defaults, **cfg.algorithm.advantage_kwargs})
    if "answer_logprobs" in estimator.needs:  # IGPO: log p(answer | context before each turn), no_grad
        hp = {**estimator.defaults, **cfg.algorithm.advantage_kwargs}
        fill_answer_logprobs(batch, getattr(p.learner, "model", None), p.tokenizer,
                             [p.train_rows[idx[int(g)]] for g in batch.group_ids],
                             answer_prefix=hp["answer_prefix"], micro_batch=hp["micro_batch"])
    state = (p.advantage_state,) if "state" in estimator.needs else ()
    advantages = estimator.fn(batch, *state, **cfg.algorithm.advantage_kwargs)
    # per group (sizes may differ), the reward before length shaping (`length`), for sampler.update
    rewards_G = group_rewards(batch, len(idx), episodes=cfg.env is not None, values=result.total)
    if p.sampler.selects:  # D3S drops rows and masks tokens, PC-GRPO re-weights groups (samplers/base.py)
        batch, advantages, select_metrics = p.sampler.select(batch, advantages, step / cfg.train.steps)
        loop_metrics.update(select_metrics)
    old_values = batch.values  # the policy update clears batch.values

    t1 = time.perf_counter()
    metrics = {}
    if step >= cfg.critic.policy_freeze_steps:
        metrics = p.learner.train_on_batch(batch, advantages, p.spec, epochs=cfg.train.epochs,
                                           mini_batches=cfg.train.mini_batches, seed=_step_seed(cfg.seed, step))
    if p.critic_replay is not None:  # "critic_replay": off-policy TD on this batch's turns + replayed ones (target critic)
        metrics.update(p.critic_replay.train(batch, epochs=cfg.train.epochs, mini_batches=cfg.train.mini_batches,
                                             seed=_step_seed(cfg.seed, step)))
    elif p.critic is not None:
        metrics.update(p.critic.train_on_batch(batch, batch.returns, old_values, mask=batch.value_mask,
                                               epochs=cfg.train.epochs, mini_batches=cfg.train.mini_batches,
                                               seed=_step_seed(cfg.seed, step)))
    if p.shaper is not None:  # e.g. GRPO-CARE's EMA reference follows the updated policy
        metrics.update(p.shaper.after_update(p.learner, step))
    p.rollouts.sync()
    t_train = time.perf_counter() - t1

    p.sampler.update(idx, rewards_G)
    loop_metrics.update({f"sampler/{k}": v for k, v in p.sampler.metrics().items()})
    success = primary_success(result, p.rewards, cfg.algorithm.success_threshold)
    lengths = batch.completion_mask.sum(-1).float()
    step_time = time.perf_counter() - t0
    metrics.update({**loop_metrics, "kl_coef": p.spec.kl_coef,
        "reward/mean": float(batch.rewards.mean()), "reward/std": float(batch.rewards.std()) if batch.size > 1 else 0.0,
        "accuracy": float(success.mean()),
        "zero_variance_groups": sum(max(r) == min(r) for r in rewards_G) / len(rewards_G) if cfg.rollout.n > 1 else 1.0,
        "advantage/abs_mean": float(advantages.abs().sum() / batch.loss_mask.sum().clamp(min=1)),
        "completion_len/mean": float(lengths.mean()), "completion_len/max": float(lengths.max()),
        "truncated_frac": sum(r == "length" for r in batch.metadata["finish_reason"]) / batch.size,
        "tokens_per_s": float(lengths.sum()) / max(step_time, 1e-9),
        "time/step": step_time, "time/rollout": t_gen, "time/learner": t_train,
        "memory/peak_mb": _peak_memory_mb(p.device),
    })
    if cfg.env is not None:
        metrics.update(env_rollout.env_metrics(batch))
    for name, values in result.per_function.items():
        metrics[f"reward/{name}/mean"] = float(torch.nanmean(values)) if not values.isnan().all() else float("nan")
    metrics.update(reward_failure_metrics(p.rewards))  # reward/<name>/errors, /timeouts (rewards/guard.py)
    return metrics


def run_eval(p: Parts, step: int) -> dict[str, float]:
    cfg = p.cfg
    out = evaluate(p.eval_engine, p.tokenizer, p.eval_rows, p.eval_ids, p.rewards,
                   max_new_tokens=cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens,
                   stop=cfg.rollout.stop, ks=cfg.eval.k, temperature=cfg.rollout.temperature,
                   top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k,
                   success_threshold=cfg.algorithm.success_threshold, seed=_step_seed(cfg.seed + 1, step))
    with open(cfg.run_dir / "eval.jsonl", "a") as f:
        f.write(json.dumps({"step": step, **out}) + "\n")
    return out


def train(cfg: RLConfig, *, resume: bool = False, console=None, dp: DataParallel | None = None) -> dict[str, Any]:
    """Train to `cfg.train.steps`; with `resume`, continue from the run's last checkpoint.

    With `distributed.learner_procs > 1` on the local backend, this starts the learner processes
    (unless it already runs inside one, e.g. under torchrun) and returns rank 0's summary.
    """
    d = cfg.distributed
    if dp is None and d.backend == "local" and d.learner_procs > 1:
        dp = init_from_env(d.strategy, resolve_device(cfg.model.device))
        if dp is None:
            launch(_train_rank, d.learner_procs, cfg, resume)
            return json.loads((cfg.run_dir / "summary.json").read_text())
    t_start = time.perf_counter()
    run_dir = cfg.run_dir
    if dp is None or dp.is_main:
        ckpt = start_run(cfg, resume)
    if dp is not None:
        ckpt = dp.broadcast_object(ckpt if dp.is_main else None)
        seed_everything(cfg.seed)
    p = build(cfg, dp)
    console = console if p.is_main else None
    try:
        return _loop(p, ckpt, resume, console, t_start)
    finally:
        p.rollouts.close()


def _loop(p: Parts, ckpt, resume: bool, console, t_start: float) -> dict[str, Any]:
    cfg, run_dir = p.cfg, p.cfg.run_dir
    state: dict[str, Any] = {"rl_seconds": 0.0, "accuracy_before": None}
    saved: dict[int, list[int]] = {}
    if ckpt is not None:
        state.update(p.learner.load_checkpoint(ckpt))
        if p.critic is not None:
            p.critic.load(ckpt / CRITIC_DIR)
        if p.critic_replay is not None:
            p.critic_replay.load(ckpt / REPLAY_DIR)
        p.sampler.load_state_dict(state["sampler"])
        p.advantage_state.update(state.pop("advantage_state", {}))
        if p.shaper is not None:
            p.shaper.load_state_dict(state.pop("reward_shaping", {}), ckpt)
        if p.length_shaper is not None:
            p.length_shaper.load_state_dict(state.pop("length_shaper", {}))
        if p.episode_replay is not None:
            p.episode_replay.load_state_dict(state.pop("arpo_replay"))
        saved = {int(k): v for k, v in state.pop("pending", {}).items()}  # prompts drawn, not yet trained on
        if p.is_main:
            truncate_jsonl(run_dir / "eval.jsonl", state["step"])
    start = int(state.get("step", 0))
    # SIGINT/SIGTERM: checkpoint at the step boundary, then stop; non-finite steps: report, stop after k
    guard = RunGuard(run_dir, max_nonfinite_steps=cfg.train.max_nonfinite_steps, console=console, dp=p.dp)
    guard.load_state_dict(state)
    logger = None
    if p.is_main:
        logger = MetricsLogger(run_dir, tensorboard=cfg.logging.tensorboard, wandb_project=cfg.logging.wandb_project,
                               config=cfg.model_dump(mode="json"), resume_step=start if resume else None,
                               console=console, console_every=cfg.logging.console_every)
    total, trainable = p.learner.num_parameters()
    if console is not None:
        d = cfg.distributed
        where = (f", {d.backend}: {d.rollout_workers} rollout / {d.reward_workers} reward workers, "
                 f"{d.learner_procs} learner procs ({d.strategy}), off-policy lag {d.max_off_policy_steps}")
        console.print(f"[bold]postrl train[/] {cfg.name}: {total / 1e6:.2f}M parameters ({trainable / 1e6:.2f}M "
                      f"trainable), {len(p.train_rows)} train / {len(p.eval_rows)} eval prompts, "
                      f"steps {start}->{cfg.train.steps}, run dir {run_dir}"
                      + (where if d.backend != "local" or d.learner_procs > 1 or d.max_off_policy_steps else ""))
    if console is not None and cfg.data.eval_source is None and is_single_file(cfg.data.source):
        console.print("[yellow]no evaluation: data.source is a single file (one split); set "
                      "data.eval_source to a held-out file to measure accuracy[/]")
    if start == 0 and cfg.eval.before and p.eval_rows:
        state["accuracy_before"] = _eval_on_main(p, 0)["accuracy"]
    if start < cfg.train.steps:
        request_rollouts(p, start, saved)

    metrics: dict[str, float] = {}
    with guard, progress_bar(console, cfg.logging.progress, "RL", cfg.train.steps, start) as advance:
        for step in range(start, cfg.train.steps):
            t0 = time.perf_counter()
            metrics = rl_step(p, step)
            done = step + 1
            metrics.update(guard.after_step(done, metrics))
            if cfg.eval.every and done % cfg.eval.every == 0 and done < cfg.train.steps:
                metrics["eval/accuracy"] = _eval_on_main(p, done)["accuracy"]
            state["rl_seconds"] += time.perf_counter() - t0
            if logger is not None:
                logger.log(done, metrics)
            advance(reward=metrics["reward/mean"], acc=metrics["accuracy"])
            stopping = guard.stopping()
            if stopping or done % cfg.checkpoint.every == 0 or done == cfg.train.steps:
                if p.shaper is not None:
                    state["reward_shaping"] = p.shaper.state_dict()
                if p.length_shaper is not None:
                    state["length_shaper"] = p.length_shaper.state_dict()
                if p.episode_replay is not None:
                    state["arpo_replay"] = p.episode_replay.state_dict()
                state.update(step=done, sampler=p.sampler.state_dict(), advantage_state=p.advantage_state,
                             **guard.state_dict(),
                             pending={str(k): v for k, v in p.rollouts.pending().items()})
                ckpt_path = p.learner.save_checkpoint(
                    run_dir, done, tokenizer=p.tokenizer, state=state, keep_last=cfg.checkpoint.keep_last,
                    extra_dirs={**({CRITIC_DIR: p.critic.save} if p.critic is not None else {}),
                                **({REPLAY_DIR: p.critic_replay.save} if p.critic_replay is not None else {}),
                                **(p.shaper.extra_dirs() if p.shaper is not None else {})})
            if stopping:
                if logger is not None:
                    logger.close()
                guard.stop(done, ckpt_path)
    if logger is not None:
        logger.close()

    final = _eval_on_main(p, cfg.train.steps) if p.eval_rows else {}
    if not p.is_main:
        return {}
    summary = {"name": cfg.name, "rl_steps": cfg.train.steps, "rl_seconds": round(state["rl_seconds"], 3),
               "total_seconds": round(time.perf_counter() - t_start, 3),
               "accuracy_before": state["accuracy_before"], "accuracy_after": final.get("accuracy"),
               **{f"eval/{k}": v for k, v in final.items()},
               **fault_counts(run_dir), **{f"last/{k}": v for k, v in metrics.items()}}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _eval_on_main(p: Parts, step: int) -> dict[str, Any]:
    """Evaluation results, computed by rank 0 (the others wait: evaluation is not sharded)."""
    out = run_eval(p, step) if p.is_main else None
    return p.dp.broadcast_object(out) if p.dp is not None else out


def _train_rank(cfg: RLConfig, resume: bool) -> None:
    from rich.console import Console

    dp = init_from_env(cfg.distributed.strategy, resolve_device(cfg.model.device))
    train(cfg, resume=resume, console=Console(stderr=True) if dp.is_main else None, dp=dp)


def _step_seed(seed: int, step: int) -> int:
    # a per-step seed makes each step's sampling independent of how the run was split by resumes
    return (seed * 1_000_003 + step * 7_919) % (2**62)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
