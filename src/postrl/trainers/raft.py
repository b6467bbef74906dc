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
     fine-tune); STaR (Zelikman et al., arXiv 2203.14465) keeps correct rationales the same way
     (without its rationalisation step, which this loop does not do);
5. SFT the policy on the kept (prompt, completion) *token ids the engine sampled* (no text is
   re-tokenised; the loss is on completion tokens only, EOS included) for
   `train.sft_steps_per_round` steps, with `trainers/sft.py`'s collate and loss;
6. log kept fraction, mean sample reward, greedy accuracy on held-out prompts; checkpoint.

Deviations: RAFT and ReST-EM restart fine-tuning from the base model every round (ReST-EM) or
keep training (RAFT); this loop keeps training the current policy with one optimizer and one
learning-rate schedule over all rounds, so `--resume` continues a run exactly.
Edge cases: a prompt with no completion at or above the threshold contributes nothing; a round
that keeps nothing skips its SFT steps (the optimizer and schedule do not advance) but still
checkpoints. Rewards that are NaN never pass the threshold.
"""

from __future__ import annotations

import json
import time
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
from postrl.trainers.evaluate import evaluate
from postrl.trainers.progress import progress_bar
from postrl.trainers.rl import encode_train_and_eval
from postrl.trainers.run_dir import start_run
from postrl.trainers.scoring import completion_token_lists, score_batch
from postrl.trainers.sft import collate, sft_loss_sum


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


def sft_examples(batch: RolloutBatch, rows: list[int]) -> list[tuple[list[int], list[int]]]:
    """(input ids, completion mask) of the given rows: the prompt's real tokens then the sampled ones."""
    completions = completion_token_lists(batch)
    out = []
    for i in rows:
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
        n_tokens = sum(sum(m) for _, m in batch)  # normaliser of the whole batch: micro-batching is exact
        optimizer.zero_grad(set_to_none=True)
        total = torch.zeros(())
        for i in range(0, len(batch), t.micro_batch_size):
            ids, attn, labels = (x.to(device) for x in collate(batch[i:i + t.micro_batch_size], pad_id, "completion"))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss_sum, _ = sft_loss_sum(model, ids, attn, labels)
            loss = loss_sum / max(n_tokens, 1)
            loss.backward()
            total += loss.detach().float().cpu()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm or float("inf"))
        if torch.isfinite(norm):
            optimizer.step()
            scheduler.step()
        losses.append(float(total))
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

    def accuracy(r: int) -> float:
        out = evaluate(engine, tokenizer, eval_rows, eval_ids, rewards,
                       max_new_tokens=cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens,
                       stop=cfg.rollout.stop, success_threshold=cfg.eval.success_threshold, seed=_round_seed(cfg.seed + 1, r))
        with open(run_dir / "eval.jsonl", "a") as f:
            f.write(json.dumps({"step": r, **out}) + "\n")
        return out["accuracy"]

    state: dict[str, Any] = {"round": 0, "accuracy_before": None, "seconds": 0.0}
    if ckpt is not None:
        state.update(load_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler))
        sampler.load_state_dict(state["sampler"])
        truncate_jsonl(run_dir / "eval.jsonl", state["round"])
    start = int(state["round"])
    logger = MetricsLogger(run_dir, resume_step=start if resume else None, console=console,
                           console_every=cfg.logging.console_every)
    if start == 0 and cfg.eval.before and eval_rows:
        state["accuracy_before"] = accuracy(0)
    metrics: dict[str, float] = {}
    with progress_bar(console, cfg.logging.progress, "RAFT", cfg.raft.rounds, start) as advance:
        for r in range(start, cfg.raft.rounds):
            t0 = time.perf_counter()
            idx = sampler.next(cfg.raft.prompts_per_round)
            batch = engine.generate([train_ids[i] for i in idx], params, seed=_round_seed(cfg.seed, r))
            result = score_batch(batch, [train_rows[i] for i in idx], tokenizer, rewards)
            kept = select_completions(result.total, batch.group_ids, keep=cfg.raft.keep, threshold=cfg.raft.threshold)
            examples = sft_examples(batch, kept)
            t_gen = time.perf_counter() - t0
            losses = sft_steps(model, optimizer, scheduler, examples, cfg, pad_id=tokenizer.pad_token_id,
                               device=device, bf16=bf16, seed=_round_seed(cfg.seed, r)) if examples else []
            done = r + 1
            metrics = {"kept_fraction": len(kept) / batch.size,
                       "prompts_with_kept": len({int(batch.group_ids[i]) for i in kept}) / len(idx),
                       "reward/mean": float(result.total.mean()), "sft/loss": sum(losses) / max(len(losses), 1),
                       "sft/steps": len(losses), "lr": scheduler.get_last_lr()[0],
                       "time/rollout": t_gen, "time/sft": time.perf_counter() - t0 - t_gen}
            if eval_rows:
                metrics["eval/accuracy"] = accuracy(done)
            state["seconds"] += time.perf_counter() - t0
            logger.log(done, metrics)
            advance(kept=metrics["kept_fraction"], acc=metrics.get("eval/accuracy", float("nan")))
            state.update(round=done, sampler=sampler.state_dict())
            save_checkpoint(run_dir, done, model=model, tokenizer=tokenizer, optimizer=optimizer,
                            scheduler=scheduler, state=state, keep_last=cfg.checkpoint.keep_last)
    logger.close()
    final_dir = run_dir / "final"
    model.save_pretrained(final_dir, safe_serialization=True)
    tokenizer.save_pretrained(final_dir)
    summary = {"name": cfg.name, "rounds": cfg.raft.rounds, "raft_seconds": round(state["seconds"], 3),
               "total_seconds": round(time.perf_counter() - t_start, 3),
               "accuracy_before": state["accuracy_before"], "accuracy_after": metrics.get("eval/accuracy"),
               "model_dir": str(final_dir), **{f"last/{k}": v for k, v in metrics.items()}}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _round_seed(seed: int, r: int) -> int:
    # a per-round seed makes each round's sampling independent of how the run was split by resumes
    return (seed * 1_000_003 + r * 7_919) % (2**62)
