"""The algorithm-blind learner: micro-batched forward/backward, optimizer, schedule, KL.

It receives a `RolloutBatch` whose advantages are already computed and a `LossSpec` naming the
policy loss, its hyper-parameters and the aggregation mode. It never branches on an algorithm's
name; SFT and preference training reuse `Optimizer`/`schedule` from here with another loss.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from postrl.algorithms import POLICY_LOSSES, aggregate, kl_penalty
from postrl.algorithms.aggregation import agg_normalizer
from postrl.algorithms.policy_losses import LossInputs, masked_mean
from postrl.learner.logprobs import completion_logprobs
from postrl.learner.models import reference_context
from postrl.rollout.batch import RolloutBatch


@dataclass
class LossSpec:
    loss: str = "ppo_clip"
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    agg: str = "token_mean"
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    kl_in_reward: bool = False
    entropy_coef: float = 0.0
    old_logprobs: str = "auto"
    max_tokens: int | None = None  # constant L of seq_mean_token_sum_norm

    @classmethod
    def from_config(cls, algo, max_tokens: int | None = None) -> "LossSpec":
        return cls(algo.loss, dict(algo.loss_kwargs), algo.loss_agg, algo.kl_coef, algo.kl_estimator,
                   algo.kl_in_reward, algo.entropy_coef, algo.old_logprobs, max_tokens)

    @property
    def kl_in_loss(self) -> bool:
        return self.kl_coef > 0 and not self.kl_in_reward


def build_optimizer(model, optim) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    # no weight decay on biases and norms (1-D tensors), the usual transformer practice
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps)


def build_scheduler(optimizer, optim, total_updates: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then constant / linear / cosine decay to `min_lr_ratio * lr`."""
    warmup, floor = optim.warmup_steps, optim.min_lr_ratio

    def factor(update: int) -> float:
        if warmup and update < warmup:
            return (update + 1) / warmup
        if optim.schedule == "constant":
            return 1.0
        progress = min(1.0, (update - warmup) / max(1, total_updates - warmup))
        if optim.schedule == "linear":
            return floor + (1 - floor) * (1 - progress)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def use_bf16(optim, device: torch.device) -> bool:
    if optim.bf16 is not None:
        return bool(optim.bf16)
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


class Learner:
    def __init__(self, model, ref_model, optim, *, total_updates: int, device: torch.device,
                 temperature: float = 1.0):
        self.model, self.ref_model, self.optim = model, ref_model, optim
        self.device, self.temperature = device, temperature
        self.optimizer = build_optimizer(model, optim)
        self.scheduler = build_scheduler(self.optimizer, optim, total_updates)
        self.bf16 = use_bf16(optim, device)

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _micro_batches(self, batch: RolloutBatch, rows: list[int] | None = None):
        rows = list(range(batch.size)) if rows is None else rows
        step = self.optim.micro_batch_size
        for i in range(0, len(rows), step):
            yield batch.select(rows[i:i + step]).trimmed().to(self.device)

    @torch.no_grad()
    def logprobs(self, batch: RolloutBatch, *, reference: bool = False) -> torch.Tensor:
        """Log-probs of the batch's completions under the policy or the reference: [B, T]."""
        model = self.ref_model if (reference and self.ref_model is not None) else self.model
        ctx = reference_context(self.model, None) if (reference and self.ref_model is None) else contextlib.nullcontext()
        T = batch.completion_ids.shape[1]
        parts = []
        was_training = model.training
        model.eval()
        try:
            with ctx, self.autocast():
                for mb in self._micro_batches(batch):
                    lp, _ = completion_logprobs(model, mb, temperature=self.temperature)
                    parts.append(torch.nn.functional.pad(lp, (0, T - lp.shape[1])).cpu())
        finally:
            model.train(was_training)
        return torch.cat(parts) * batch.loss_mask

    def train_on_batch(self, batch: RolloutBatch, advantages: torch.Tensor, spec: LossSpec,
                       *, epochs: int = 1, mini_batches: int = 1, seed: int = 0) -> dict[str, float]:
        """All optimizer updates for one rollout batch; returns averaged metrics."""
        loss_fn = POLICY_LOSSES[spec.loss]
        updates = epochs * mini_batches
        if spec.old_logprobs == "behavior":
            batch.old_logprobs = batch.behavior_logprobs
        elif spec.old_logprobs == "recompute" or (spec.old_logprobs == "auto" and updates > 1):
            batch.old_logprobs = self.logprobs(batch)  # once, before the first update
        else:
            batch.old_logprobs = None  # on-policy, single update: detach the current log-probs
        batch.values = None
        adv_B_T = advantages
        sums: dict[str, list[torch.Tensor]] = {}
        gen = torch.Generator().manual_seed(seed)
        self.model.train()
        for _ in range(epochs):
            order = torch.randperm(batch.size, generator=gen).tolist() if updates > 1 else list(range(batch.size))
            size = math.ceil(batch.size / mini_batches)
            for m in range(mini_batches):
                rows = order[m * size:(m + 1) * size]
                if not rows:
                    continue
                self._update(batch, adv_B_T, rows, loss_fn, spec, sums)
        return {k: float(torch.stack(v).mean()) for k, v in sums.items()}

    def _update(self, batch, adv_B_T, rows, loss_fn, spec: LossSpec, sums) -> None:
        mask_all = batch.loss_mask[rows]
        normalizer = agg_normalizer(mask_all, spec.agg)
        max_tokens = spec.max_tokens or batch.completion_ids.shape[1]
        self.optimizer.zero_grad(set_to_none=True)
        total_loss = torch.zeros(())
        step = self.optim.micro_batch_size
        for i in range(0, len(rows), step):
            sub = rows[i:i + step]
            mb = batch.select(sub).trimmed().to(self.device)
            T = mb.completion_ids.shape[1]
            adv = adv_B_T[sub][:, :T].to(self.device)
            with self.autocast():
                logp, entropy = completion_logprobs(self.model, mb, temperature=self.temperature,
                                                    with_entropy=True,
                                                    entropy_grad=spec.entropy_coef != 0)
            old = mb.old_logprobs[:, :T] if mb.old_logprobs is not None else logp.detach()
            ref = mb.ref_logprobs[:, :T] if mb.ref_logprobs is not None else None
            inp = LossInputs(logp, old, adv, mb.loss_mask, ref_logprobs=ref,
                             entropy=entropy, token_ids=mb.completion_ids)
            out = loss_fn(inp, **spec.loss_kwargs)
            per_token = out.loss
            metrics = dict(out.metrics)
            if spec.kl_in_loss:
                if ref is None:
                    raise RuntimeError("KL in the loss needs reference log-probs on the batch")
                kl = kl_penalty(logp, ref, spec.kl_estimator)
                per_token = per_token + spec.kl_coef * kl
            if spec.entropy_coef and entropy is not None:
                per_token = per_token - spec.entropy_coef * entropy
            loss = aggregate(per_token, mb.loss_mask, spec.agg, max_tokens=max_tokens, normalizer=normalizer)
            loss.backward()
            total_loss += loss.detach().float().cpu()  # micro-batch losses add up to the update's loss
            with torch.no_grad():
                metrics["policy_loss"] = aggregate(out.loss.detach(), mb.loss_mask, spec.agg, max_tokens=max_tokens)
                if entropy is not None:
                    metrics["entropy"] = masked_mean(entropy.detach(), mb.loss_mask)
                if ref is not None:
                    metrics["kl"] = masked_mean(kl_penalty(logp.detach(), ref, "k3"), mb.loss_mask)
            for k, v in metrics.items():
                sums.setdefault(k, []).append(v.detach().float().cpu())
        grad_norm = self._clip_and_step()
        sums.setdefault("loss", []).append(total_loss)
        sums.setdefault("grad_norm", []).append(grad_norm)
        sums.setdefault("lr", []).append(torch.tensor(self.scheduler.get_last_lr()[0]))

    def _clip_and_step(self) -> torch.Tensor:
        params = [p for p in self.model.parameters() if p.requires_grad]
        max_norm = self.optim.max_grad_norm if self.optim.max_grad_norm is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm).detach().float().cpu()
        if torch.isfinite(grad_norm):
            self.optimizer.step()
            self.scheduler.step()
        else:  # a non-finite gradient would poison the weights: skip this update, report it
            self.optimizer.zero_grad(set_to_none=True)
        self.skipped_nonfinite = not bool(torch.isfinite(grad_norm))
        return grad_norm
