"""Rejection-sampling self-improvement, iterated: sample k, score, keep the good ones, SFT on them.

Each round r = 1..R:

1. draw `raft.prompts_per_round` training prompts (`uniform` order, checkpointed);
2. sample `rollout.n` = k completions per prompt from the current policy (the rollout engine);
3. score them with the configured rewards (`RewardSet`, via `trainers/scoring.score_batch`);
4. keep completions by `select_completions` (below), with `raft.keep`:
   - `best`: per prompt, the highest-reward completion if its reward >= `raft.threshold`.
     RAFT: "RAFT: Reward rAnked FineTuning for Generative Foundation Model Alignment",
     Dong et al., arXiv 2304.06767 (best-of-k ranking, then fine-tuning on the top samples);
   - `all_above`: every completion with reward >= `raft.threshold`. ReST-EM / expert iteration:
     "Beyond Human Data: Scaling Self-Training for Problem-Solving with Language Models",
     Singh et al., arXiv 2312.06585, and "Reinforced Self-Training (ReST) for Language Modeling",
     Gulcehre et al., arXiv 2308.08998 (Grow: sample; Improve: filter by a reward threshold, then
     fine-tune); STaR (Zelikman et al., arXiv 2203.14465) keeps correct rationales the same way,
     and with `raft.rationalize` also retries the failed prompts with the answer as a hint
     (`trainers/star.py`: trained after the hint-free prompt);
5. SFT the policy on the kept (prompt, completion) *token ids the engine sampled* (no text is
   re-tokenised; the loss is on completion tokens only, EOS included) for
   `train.sft_steps_per_round` steps, with `trainers/sft.py`'s collate and loss;
6. log kept fraction, mean sample reward, greedy accuracy on held-out prompts; checkpoint.

`raft.auto_config: b_star` chooses each round's temperature and threshold first, by B-STaR's
balance score on a probe of training prompts (`trainers/b_star.py`); the choice is logged
(`b_star/*`) and kept in the checkpoint's state.

Training continues from the current policy with one optimizer and one learning-rate schedule over
all rounds (RAFT); `raft.restart_from_base` instead starts every round's SFT from the initial
weights with a fresh optimizer and schedule (STaR, ReST-EM; a round that keeps nothing then
leaves the initial weights). Either way `--resume` is exact.
Edge cases: a prompt with no completion at or above the threshold contributes nothing; a round
that keeps nothing skips its SFT steps (the optimizer and schedule do not advance) but still
checkpoints. Rewards that are NaN never pass the threshold.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any, Literal

import torch

from postrl.config import RaftConfig
from postrl.learner.checkpoint import load_checkpoint, save_checkpoint
from postrl.learner.learner import build_optimizer, build_scheduler, use_bf16
from postrl.learner.models import load_model, load_tokenizer, resolve_device
from postrl.rewards import RewardSet
from postrl.rollout.batch import RolloutBatch
from postrl.rollout.engines import SamplingParams, build_engine
from postrl.samplers import SAMPLERS
from postrl.tracking import MetricsLogger, truncate_jsonl
from postrl.trainers import b_star, star
from postrl.trainers.evaluate import evaluate
from postrl.trainers.fit_loop import apply_gradients
from postrl.trainers.faults import RunGuard
from postrl.trainers.progress import progress_bar
from postrl.trainers.rl import encode_train_and_eval
from postrl.trainers.run_dir import start_run
from postrl.trainers.scoring import completion_token_lists, score_batch
from postrl.trainers.sft import sft_backward


def select_completions(rewards_B: torch.Tensor, group_ids_B: torch.Tensor, *, keep: Literal["best", "all_above"],
                       threshold: float) -> list[int]:
    """Rows to train on, ascending. `best`: per group, its first highest-reward row if that reward
    >= threshold; `all_above`: every row with reward >= threshold. NaN rewards never pass."""
    r = torch.nan_to_num(rewards_B.float(), nan=float("-inf"))
    passed = r >= threshold
    if keep == "all_above":
        return passed.nonzero().flatten().tolist()
    kept = []
    for g in group_ids_B.unique().tolist():
        rows = (group_ids_B == g).nonzero().flatten()
        best = rows[int(r[rows].argmax())]  # argmax returns the first of equal maxima
        if passed[best]:
            kept.append(int(best))
    return sorted(kept)


def sft_examples(batch: RolloutBatch, rows: list[int],
                 prompts: list[list[int]] | None = None) -> list[tuple[list[int], list[int]]]:
    """(input ids, completion mask) of the given rows: the prompt's real tokens then the sampled ones.
    `prompts[g]`: the prompt to train group g's completions after instead of the one they were
    sampled after (STaR rationalisation samples after a hinted prompt, trains after the plain one)."""
    completions = completion_token_lists(batch)
    out = []
    for i in rows:
        if prompts is not None:
            prompt = list(prompts[int(batch.group_ids[i])])
        else:
            prompt = batch.prompt_ids[i][batch.prompt_mask[i].bool()].tolist()
        out.append((prompt + completions[i], [0] * len(prompt) + [1] * len(completions[i])))
    return out


def sft_steps(model, optimizer, scheduler, examples, cfg: RaftConfig, *, pad_id: int, device, bf16: bool,
              seed: int) -> list[float]:
    """`train.sft_steps_per_round` steps of completion-token-mean cross-entropy on `examples`."""
    t = cfg.train
    order = SAMPLERS["uniform"](len(examples), seed)  # per-round seed: no state to carry between rounds
    losses = []
    model.train()
    for _ in range(t.sft_steps_per_round):
        batch = [examples[i] for i in order.next(t.batch_size)]
        optimizer.zero_grad(set_to_none=True)
        losses.append(sft_backward(model, batch, pad_id=pad_id, loss_on="completion",
                                   micro_batch_size=t.micro_batch_size, device=device, bf16=bf16))
        apply_gradients(model, optimizer, scheduler, t.max_grad_norm)
    return losses


def train(cfg: RaftConfig, *, resume: bool = False, console=None) -> dict[str, Any]:
    t_start = time.perf_counter()
    run_dir = cfg.run_dir
    ckpt = start_run(cfg, resume)
    device = resolve_device(cfg.model.device)
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(cfg.model, tokenizer, device)
    engine = build_engine(cfg.rollout, model, tokenizer)  # shares the module: sees every SFT update
    rewards = RewardSet(cfg.rewards)
    train_rows, train_ids, eval_rows, eval_ids = encode_train_and_eval(cfg, tokenizer)
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, cfg.raft.rounds * cfg.train.sft_steps_per_round)
    sampler = SAMPLERS["uniform"](len(train_rows), cfg.seed)
    bf16 = use_bf16(cfg.train, device)
    params = SamplingParams.from_config(cfg.rollout)
    loop = cfg.raft
    # the initial weights, before any checkpoint is loaded (a copy only when rounds restart from them)
    base = {k: v.detach().clone() for k, v in model.state_dict().items()} if loop.restart_from_base else None

    def accuracy(r: int) -> float:
        out = evaluate(engine, tokenizer, eval_rows, eval_ids, rewards,
                       max_new_tokens=cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens,
                       stop=cfg.rollout.stop, success_threshold=cfg.eval.success_threshold, seed=_round_seed(cfg.seed + 1, r))
        with open(run_dir / "eval.jsonl", "a") as f:
            f.write(json.dumps({"step": r, **out}) + "\n")
        return out["accuracy"]

    state: dict[str, Any] = {"round": 0, "accuracy_before": None, "seconds": 0.0, "b_star": []}
    if ckpt is not None:
        state.update(load_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler))
        sampler.load_state_dict(state["sampler"])
        truncate_jsonl(run_dir / "eval.jsonl", state["round"])
    start = int(state["round"])
    # SIGINT/SIGTERM: the round finishes and is checkpointed, then the run stops; a round whose mean SFT
    # loss is not finite counts toward train.max_nonfinite_steps (trainers/faults.py)
    guard = RunGuard(run_dir, max_nonfinite_steps=cfg.train.max_nonfinite_steps, console=console)
    guard.load_state_dict(state)
    logger = MetricsLogger(run_dir, resume_step=start if resume else None, console=console,
                           console_every=cfg.logging.console_every)
    if start == 0 and cfg.eval.before and eval_rows:
        state["accuracy_before"] = accuracy(0)
    metrics: dict[str, float] = {}
    with guard, progress_bar(console, cfg.logging.progress, "RAFT", cfg.raft.rounds, start) as advance:
        for r in range(start, cfg.raft.rounds):
            t0 = time.perf_counter()
            round_params, threshold, extra = params, loop.threshold, {}
            if loop.auto_config == "b_star":
                round_params, threshold, extra = _b_star_round(cfg, r, engine, tokenizer, rewards, train_rows,
                                                               train_ids, params)
                state["b_star"].append({"round": r + 1, **extra})
            idx = sampler.next(loop.prompts_per_round)
            rows, ids = [train_rows[i] for i in idx], [train_ids[i] for i in idx]
            batch = engine.generate(ids, round_params, seed=_round_seed(cfg.seed, r))
            result = score_batch(batch, rows, tokenizer, rewards)
            kept = select_completions(result.total, batch.group_ids, keep=loop.keep, threshold=threshold)
            examples = sft_examples(batch, kept)
            if loop.rationalize:
                solved = {int(batch.group_ids[i]) for i in kept}
                star_out = star.rationalize(engine, tokenizer, rewards, rows, ids,
                                            [g for g in range(len(idx)) if g not in solved], round_params,
                                            data_cfg=cfg.data, template=loop.hint_template, keep=loop.keep,
                                            threshold=threshold, seed=_round_seed(cfg.seed + 2, r))
                examples += star_out.examples
                extra.update({"star/failed_prompts": star_out.failed / len(idx),
                              "star/rationalized_prompts": star_out.solved / max(star_out.failed, 1),
                              "star/kept": len(star_out.examples)})
            if base is not None:  # STaR / ReST-EM: fine-tune the initial model on this round's set
                model.load_state_dict(base)
                optimizer = build_optimizer(model, cfg.train)
                scheduler = build_scheduler(optimizer, cfg.train, cfg.train.sft_steps_per_round)
            t_gen = time.perf_counter() - t0
            losses = sft_steps(model, optimizer, scheduler, examples, cfg, pad_id=tokenizer.pad_token_id,
                               device=device, bf16=bf16, seed=_round_seed(cfg.seed, r)) if examples else []
            done = r + 1
            metrics = {"kept_fraction": len(kept) / batch.size,
                       "prompts_with_kept": len({int(batch.group_ids[i]) for i in kept}) / len(idx),
                       "reward/mean": float(result.total.mean()), "sft/loss": sum(losses) / max(len(losses), 1),
                       "sft/steps": len(losses), "lr": scheduler.get_last_lr()[0],
                       "time/rollout": t_gen, "time/sft": time.perf_counter() - t0 - t_gen, **extra}
            if eval_rows:
                metrics["eval/accuracy"] = accuracy(done)
            state["seconds"] += time.perf_counter() - t0
            guard_metrics = guard.after_step(done, {"loss": metrics["sft/loss"]})
            metrics.update(guard_metrics)
            logger.log(done, metrics)
            advance(kept=metrics["kept_fraction"], acc=metrics.get("eval/accuracy", float("nan")))
            stopping = guard.stopping()
            state.update(round=done, sampler=sampler.state_dict(), **guard.state_dict())
            path = save_checkpoint(run_dir, done, model=model, tokenizer=tokenizer, optimizer=optimizer,
                                   scheduler=scheduler, state=state, keep_last=cfg.checkpoint.keep_last)
            if stopping:
                logger.close()
                guard.stop(done, path)
    logger.close()
    final_dir = run_dir / "final"
    model.save_pretrained(final_dir, safe_serialization=True)
    tokenizer.save_pretrained(final_dir)
    summary = {"name": cfg.name, "rounds": cfg.raft.rounds, "raft_seconds": round(state["seconds"], 3),
               "total_seconds": round(time.perf_counter() - t_start, 3),
               "accuracy_before": state["accuracy_before"], "accuracy_after": metrics.get("eval/accuracy"),
               "model_dir": str(final_dir), **{f"last/{k}": v for k, v in metrics.items()}}
    if state["b_star"]:
        summary["b_star"] = state["b_star"]  # the configuration every round used
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _b_star_round(cfg: RaftConfig, r: int, engine, tokenizer, rewards, train_rows, train_ids,
                  params: SamplingParams) -> tuple[SamplingParams, float, dict[str, float]]:
    """This round's sampling parameters and threshold, chosen by B-STaR on a probe of training prompts."""
    b = cfg.raft.b_star
    probe = b_star.probe_indices(len(train_rows), b.probe_prompts, _round_seed(cfg.seed + 3, r))
    choice = b_star.choose(engine, tokenizer, rewards, [train_rows[i] for i in probe], [train_ids[i] for i in probe],
                           params, temperatures=b.temperatures, thresholds=b.thresholds or [cfg.raft.threshold],
                           keep=cfg.raft.keep, n_star=b.n_star, success_threshold=cfg.eval.success_threshold,
                           seed=_round_seed(cfg.seed + 4, r))
    return (replace(params, temperature=choice.temperature), choice.threshold,
            {"b_star/temperature": choice.temperature, "b_star/threshold": choice.threshold,
             "b_star/balance": choice.balance})


def _round_seed(seed: int, r: int) -> int:
    # a per-round seed makes each round's sampling independent of how the run was split by resumes
    return (seed * 1_000_003 + r * 7_919) % (2**62)
