"""Supervised fine-tuning on prompt/completion or chat data (also the demo's warm start).

Loss: token-mean cross-entropy over completion tokens (or all tokens with `loss_on: all`),
micro-batched with the normaliser of the whole batch so accumulation equals one big batch
(`sft_backward`, also RAFT's SFT steps). The loop is `trainers/fit_loop.fit`: data order comes
from the `uniform` sampler, so a resumed run sees the same batches.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from postrl.config import SFTConfig
from postrl.data import encode_sft, load_sft_dataset
from postrl.learner.learner import use_bf16
from postrl.learner.models import load_model, load_tokenizer, resolve_device
from postrl.trainers.fit_loop import fit
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


def sft_backward(model, batch: list[tuple[list[int], list[int]]], *, pad_id: int, loss_on: str,
                 micro_batch_size: int, device, bf16: bool) -> float:
    """Backward of the batch's token-mean cross-entropy, micro-batched with the normaliser of the
    whole batch (so accumulation equals one big batch); returns the loss."""
    n_tokens = sum(sum(m) if loss_on == "completion" else len(x) - 1 for x, m in batch)
    total = torch.zeros(())
    for i in range(0, len(batch), micro_batch_size):
        ids, attn, labels = (x.to(device) for x in collate(batch[i:i + micro_batch_size], pad_id, loss_on))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss_sum, _ = sft_loss_sum(model, ids, attn, labels)
        loss = loss_sum / max(n_tokens, 1)
        loss.backward()
        total += loss.detach().float().cpu()
    return float(total)


def train(cfg: SFTConfig, *, resume: bool = False, console=None) -> dict[str, Any]:
    t_start = time.perf_counter()
    ckpt = start_run(cfg, resume)
    device = resolve_device(cfg.model.device)
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(cfg.model, tokenizer, device)
    rows = load_sft_dataset(cfg.data, split=cfg.data.split)
    examples = encode_sft(tokenizer, rows, cfg.data, cfg.train.max_seq_tokens)
    t = cfg.train
    bf16 = use_bf16(t, device)

    def step(batch) -> dict[str, float]:
        return {"loss": sft_backward(model, batch, pad_id=tokenizer.pad_token_id, loss_on=t.loss_on,
                                     micro_batch_size=t.micro_batch_size, device=device, bf16=bf16)}

    r = fit(model, tokenizer, examples, cfg, name="sft", steps=t.steps, step_fn=step, ckpt=ckpt, resume=resume,
            console=console)
    summary = {"name": cfg.name, "sft_steps": t.steps, "final_loss": r.metrics.get("loss", float("nan")),
               "sft_seconds": round(r.seconds, 3), "total_seconds": round(time.perf_counter() - t_start, 3),
               "model_dir": str(r.final_dir), "examples": len(examples)}
    (cfg.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
