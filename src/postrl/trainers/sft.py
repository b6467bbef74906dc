"""Supervised fine-tuning on prompt/completion or chat data (also the demo's warm start).

Loss: token-mean cross-entropy over completion tokens (or all tokens with `loss_on: all`),
micro-batched with the normaliser of the whole batch so accumulation equals one big batch.
Data order comes from the `uniform` sampler, so a resumed run sees the same batches.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from postrl.config import SFTConfig
from postrl.data import encode_sft, load_sft_dataset
from postrl.learner.checkpoint import load_checkpoint, save_checkpoint
from postrl.learner.learner import build_optimizer, build_scheduler, use_bf16
from postrl.learner.models import load_model, load_tokenizer, resolve_device
from postrl.samplers import SAMPLERS
from postrl.tracking import MetricsLogger
from postrl.trainers.progress import progress_bar
from postrl.trainers.run_dir import start_run


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int, loss_on: str):
    """Right-padded input ids, attention mask and loss mask for next-token prediction."""
    T = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), T), dtype=torch.long)
    labels = torch.zeros((len(examples), T), dtype=torch.float32)
    for i, (x, m) in enumerate(examples):
        ids[i, :len(x)] = torch.tensor(x)
        attn[i, :len(x)] = 1
        labels[i, :len(x)] = torch.tensor(m, dtype=torch.float32) if loss_on == "completion" else 1.0
    return ids, attn, labels


def sft_loss_sum(model, ids, attn, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of token cross-entropies on labelled positions, and the number of them."""
    logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits[:, :-1].float()
    target, mask = ids[:, 1:], labels[:, 1:] * attn[:, 1:]
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                           reduction="none").view_as(mask)
    return (ce * mask).sum(), mask.sum()


def train(cfg: SFTConfig, *, resume: bool = False, console=None) -> dict[str, Any]:
    t_start = time.perf_counter()
    run_dir = cfg.run_dir
    ckpt = start_run(cfg, resume)
    device = resolve_device(cfg.model.device)
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(cfg.model, tokenizer, device)
    rows = load_sft_dataset(cfg.data, split=cfg.data.split)
    examples = encode_sft(tokenizer, rows, cfg.data, cfg.train.max_seq_tokens)
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, cfg.train.steps)
    sampler = SAMPLERS["uniform"](len(examples), cfg.seed)
    bf16 = use_bf16(cfg.train, device)

    state: dict[str, Any] = {"step": 0, "sft_seconds": 0.0}
    if ckpt is not None:
        state.update(load_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler))
        sampler.load_state_dict(state["sampler"])
    start = int(state["step"])
    logger = MetricsLogger(run_dir, resume_step=start if resume else None, console=console,
                           console_every=cfg.logging.console_every)
    model.train()
    loss_value = float("nan")
    with progress_bar(console, cfg.logging.progress, "SFT", cfg.train.steps, start) as advance:
        for step in range(start, cfg.train.steps):
            t0 = time.perf_counter()
            batch = [examples[i] for i in sampler.next(cfg.train.batch_size)]
            optimizer.zero_grad(set_to_none=True)
            n_tokens = sum(sum(m) if cfg.train.loss_on == "completion" else len(x) - 1 for x, m in batch)
            total = torch.zeros(())
            mb = cfg.train.micro_batch_size
            for i in range(0, len(batch), mb):
                ids, attn, labels = (t.to(device) for t in collate(batch[i:i + mb], tokenizer.pad_token_id,
                                                                   cfg.train.loss_on))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss_sum, _ = sft_loss_sum(model, ids, attn, labels)
                loss = loss_sum / max(n_tokens, 1)
                loss.backward()
                total += loss.detach().float().cpu()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm or float("inf"))
            if torch.isfinite(norm):
                optimizer.step()
                scheduler.step()
            loss_value = float(total)
            state["sft_seconds"] += time.perf_counter() - t0
            done = step + 1
            logger.log(done, {"loss": loss_value, "grad_norm": float(norm), "lr": scheduler.get_last_lr()[0],
                              "time/step": time.perf_counter() - t0})
            advance(loss=loss_value)
            if done % cfg.checkpoint.every == 0 or done == cfg.train.steps:
                state.update(step=done, sampler=sampler.state_dict())
                save_checkpoint(run_dir, done, model=model, tokenizer=tokenizer, optimizer=optimizer,
                                scheduler=scheduler, state=state, keep_last=cfg.checkpoint.keep_last)
    logger.close()
    final_dir = run_dir / "final"
    model.save_pretrained(final_dir, safe_serialization=True)
    tokenizer.save_pretrained(final_dir)
    summary = {"name": cfg.name, "sft_steps": cfg.train.steps, "final_loss": loss_value,
               "sft_seconds": round(state["sft_seconds"], 3), "total_seconds": round(time.perf_counter() - t_start, 3),
               "model_dir": str(final_dir), "examples": len(examples)}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
