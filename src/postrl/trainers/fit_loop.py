"""The supervised training loop shared by `postrl sft`, `postrl rm` and `postrl prm`.

    `uniform` sampler over the examples -> zero grads -> step_fn(batch) (forward + backward,
    normalised by the whole batch) -> clip, skip a non-finite gradient -> optimizer + scheduler
    -> held-out evaluation every `eval.every` steps and at the end -> metrics log, progress bar
    -> checkpoint every `checkpoint.every` steps and at the end (with the sampler's state)
    -> SIGINT/SIGTERM or `train.max_nonfinite_steps` non-finite steps in a row: checkpoint, then stop
       (trainers/faults.py)

A run resumed from a checkpoint continues with the same batches to the same weights; one resumed
from the last checkpoint trains nothing and evaluates once. The trainer keeps what differs: the
data, the model, the loss (`step_fn`), the evaluation and the summary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from postrl.learner.checkpoint import load_checkpoint, save_checkpoint
from postrl.learner.learner import build_optimizer, build_scheduler
from postrl.samplers import SAMPLERS
from postrl.tracking import MetricsLogger
from postrl.trainers.faults import RunGuard
from postrl.trainers.progress import progress_bar


@dataclass
class FitResult:
    steps: int
    metrics: dict[str, float]  # the last step's training metrics ({} when nothing was left to train)
    final_eval: dict[str, float]  # the held-out evaluation at the end ({} without an evaluation)
    seconds: float  # time spent in training steps, summed over resumes
    final_dir: Path


def apply_gradients(model, optimizer, scheduler, max_grad_norm: float | None) -> torch.Tensor:
    """Clip the gradient norm and step; a non-finite gradient skips the update instead of poisoning
    the weights. Returns the norm before clipping."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm or float("inf"))
    if torch.isfinite(norm):
        optimizer.step()
        scheduler.step()
    return norm


def fit(model, tokenizer, examples: Sequence, cfg, *, name: str, steps: int, step_fn: Callable[[list], dict],
        ckpt: Path | None, resume: bool, console=None, evaluate: Callable[[], dict] | None = None,
        on_final_eval: Callable[[dict], None] | None = None,
        progress: dict[str, str] | None = None) -> FitResult:
    """Train `model` for `steps` optimizer steps on batches of `examples`.

    `step_fn(batch)`: forward and backward of one batch (gradients already zeroed), returning its
    training metrics. `evaluate()`: held-out metrics, logged as `eval/*`; `on_final_eval` sees the
    final one before the last checkpoint is written. `progress`: bar field -> metric key.
    The state in checkpoints: `step`, `sampler` and `{name}_seconds`."""
    t = cfg.train
    run_dir = cfg.run_dir
    optimizer = build_optimizer(model, t)
    scheduler = build_scheduler(optimizer, t, steps)
    sampler = SAMPLERS["uniform"](len(examples), cfg.seed)
    seconds = f"{name}_seconds"
    state: dict[str, Any] = {"step": 0, seconds: 0.0}
    if ckpt is not None:
        state.update(load_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler))
        sampler.load_state_dict(state["sampler"])
    start = int(state["step"])
    guard = RunGuard(run_dir, max_nonfinite_steps=t.max_nonfinite_steps, console=console)
    guard.load_state_dict(state)
    log = cfg.logging
    logger = MetricsLogger(run_dir, resume_step=start if resume else None, console=console,
                           console_every=log.console_every, tensorboard=log.tensorboard,
                           wandb_project=log.wandb_project)
    progress = progress or {"loss": "loss"}
    model.train()
    metrics: dict[str, float] = {}
    final_eval: dict[str, float] | None = None
    with guard, progress_bar(console, log.progress, name.upper(), steps, start) as advance:
        for step in range(start, steps):
            t0 = time.perf_counter()
            batch = [examples[i] for i in sampler.next(t.batch_size)]
            optimizer.zero_grad(set_to_none=True)
            metrics = step_fn(batch)
            norm = apply_gradients(model, optimizer, scheduler, t.max_grad_norm)
            state[seconds] += time.perf_counter() - t0
            done = step + 1
            metrics.update({"grad_norm": float(norm), "lr": scheduler.get_last_lr()[0],
                            "time/step": time.perf_counter() - t0})
            metrics.update(guard.after_step(done, metrics))
            if evaluate is not None and (done == steps or (cfg.eval.every and done % cfg.eval.every == 0)):
                held_out = evaluate()
                metrics.update({f"eval/{k}": v for k, v in held_out.items()})
                if done == steps:  # before the last checkpoint: the hook may store it in the model
                    final_eval = held_out
                    if on_final_eval is not None:
                        on_final_eval(final_eval)
            logger.log(done, metrics)
            advance(**{field: metrics[key] for field, key in progress.items()})
            stopping = guard.stopping()
            if stopping or done % cfg.checkpoint.every == 0 or done == steps:
                state.update(step=done, sampler=sampler.state_dict(), **guard.state_dict())
                path = save_checkpoint(run_dir, done, model=model, tokenizer=tokenizer, optimizer=optimizer,
                                       scheduler=scheduler, state=state, keep_last=cfg.checkpoint.keep_last)
            if stopping:
                logger.close()
                guard.stop(done, path)
    if final_eval is None and evaluate is not None:  # resumed from the last checkpoint: nothing left to train
        final_eval = evaluate()
        if on_final_eval is not None:
            on_final_eval(final_eval)
    logger.close()
    final_dir = run_dir / "final"
    model.save_pretrained(final_dir, safe_serialization=True)
    tokenizer.save_pretrained(final_dir)
    return FitResult(steps, metrics, final_eval or {}, state[seconds], final_dir)
