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
from postrl.algorithms.importance import rollout_is_weights
from postrl.algorithms.policy_losses import LossInputs, masked_mean
from postrl.distributed.data_parallel import DataParallel, full_state_dict, full_tensor
from postrl.learner import checkpoint as ckpt
from postrl.learner.logprobs import completion_logprobs
from postrl.learner.models import count_parameters, load_model, load_reference, reference_context
from postrl.rollout.batch import RolloutBatch
from postrl.rollout.history_hcpo import alt_prompt_batch


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
    rollout_is: str = "none"  # truncated IS between behaviour and old policy: none | token | sequence
    rollout_is_cap: float = 2.0
    needs: tuple[str, ...] = ()  # the loss's registry `needs` ("groups", "reference", "vocab_mean", ...)

    @classmethod
    def from_config(cls, cfg) -> "LossSpec":
        """From an `RLConfig` (algorithm section, rollout length, resolved IS mode)."""
        a = cfg.algorithm
        return cls(a.loss, dict(a.loss_kwargs), a.loss_agg, a.kl_coef, a.kl_estimator, a.kl_in_reward,
                   a.entropy_coef, a.old_logprobs, cfg.rollout.max_new_tokens, cfg.rollout_is, a.rollout_is_cap,
                   POLICY_LOSSES.get(a.loss).needs)

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


def logprob_fn(train_cfg):
    """The forward that computes completion log-probs: plain, shared-prefix or packed (same values)."""
    if getattr(train_cfg, "prefix_sharing", False):
        from postrl.learner.prefix_sharing import shared_prefix_logprobs

        return shared_prefix_logprobs
    if getattr(train_cfg, "packing", False):
        from postrl.learner.packing import packed_logprobs

        return packed_logprobs
    return completion_logprobs


def build_learner(cfg, tokenizer, device: torch.device, dp: DataParallel | None = None) -> "Learner":
    """Policy (and reference when a KL term needs one) from `cfg.model`, wrapped in a Learner."""
    model = load_model(cfg.model, tokenizer, device)
    ref = load_reference(cfg.model, model, tokenizer, device) if cfg.needs_reference else None
    updates = cfg.train.steps * cfg.train.epochs * cfg.train.mini_batches
    return Learner(model, ref, cfg.train, total_updates=updates, device=device,
                   temperature=cfg.rollout.temperature, dp=dp)


class Learner:
    """Owns the policy's training copy, its optimizer and schedule, and its checkpoints.

    Under data parallelism (`dp`), every process receives the whole batch and trains on its
    shard of each mini-batch; `logprobs` shards the rows and all-gathers the result.
    """

    def __init__(self, model, ref_model, optim, *, total_updates: int, device: torch.device,
                 temperature: float = 1.0, dp: DataParallel | None = None):
        self.ref_model, self.optim, self.dp = ref_model, optim, dp
        self.device, self.temperature = device, temperature
        self.model = model  # unwrapped: generation, no-grad forwards, saving
        self.train_model = dp.wrap(model) if dp is not None else model  # DDP wrapper / FSDP2-sharded
        self.forward = logprob_fn(optim)
        # a group shares one prompt forward; group losses (needs "groups") also keep groups whole
        self.keep_groups = bool(getattr(optim, "prefix_sharing", False))
        self.optimizer = build_optimizer(model, optim)
        self.scheduler = build_scheduler(self.optimizer, optim, total_updates)
        self.bf16 = use_bf16(optim, device)
        self.skipped_nonfinite = False

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    # ------------------------------------------------------------------------- forward passes
    def _forward_model(self, reference: bool):
        if reference and self.ref_model is not None:
            return self.ref_model
        # FSDP2 shards the model in place: its forward (a collective) is the only forward there is
        return self.train_model if (self.dp is not None and self.dp.strategy == "fsdp2") else self.model

    def logprobs(self, batch: RolloutBatch, *, reference: bool = False) -> torch.Tensor:
        """Log-probs of the batch's completions under the policy or the reference: [B, T]."""
        return self._no_grad_stats(batch, reference=reference)[0]

    @torch.no_grad()
    def _no_grad_stats(self, batch: RolloutBatch, *, reference: bool = False, with_vocab_mean: bool = False):
        """(log-probs [B, T], vocabulary mean [B, T] or None), zero off the loss mask, without gradient."""
        model = self._forward_model(reference)
        ctx = reference_context(self.model, None) if (reference and self.ref_model is None) else contextlib.nullcontext()
        rows = list(range(batch.size))
        mine = self.dp.shard(rows) if self.dp is not None else rows
        T = batch.completion_ids.shape[1]
        parts = []
        was_training = model.training
        model.eval()
        try:
            with ctx, self.autocast():
                for mb in self._micro_batches(batch, mine):
                    stats = self.forward(model, mb, temperature=self.temperature, with_vocab_mean=with_vocab_mean)
                    kept = (stats[0], stats[2]) if with_vocab_mean else stats[:1]
                    parts.append([torch.nn.functional.pad(x.float(), (0, T - x.shape[1])).cpu() for x in kept])
        finally:
            model.train(was_training)
        outs = []
        for columns in zip(*parts):
            out = torch.cat(columns)
            if self.dp is not None:
                out = self.dp.all_gather_cat(out)
            outs.append(out * batch.loss_mask)
        return outs[0], (outs[1] if with_vocab_mean else None)

    def _micro_batches(self, batch: RolloutBatch, rows: list[int]):
        step = self.optim.micro_batch_size
        for i in range(0, len(rows), step):
            yield batch.select(rows[i:i + step]).trimmed().to(self.device)

    # --------------------------------------------------------------------------------- updates
    def train_on_batch(self, batch: RolloutBatch, advantages: torch.Tensor, spec: LossSpec,
                       *, epochs: int = 1, mini_batches: int = 1, seed: int = 0) -> dict[str, float]:
        """All optimizer updates for one rollout batch; returns averaged metrics."""
        loss_fn = POLICY_LOSSES[spec.loss]
        updates = epochs * mini_batches
        is_weights, sums = None, {}
        batch.old_vocab_mean = None  # filled with the old log-probs; None: detach the current one
        batch.old_alt_logprobs = None  # likewise for "alt_context" losses (the row's second prompt)
        if spec.old_logprobs == "behavior":
            if "vocab_mean" in spec.needs:
                raise ValueError(f"algorithm.loss={spec.loss!r} needs the old policy's vocabulary mean, which the "
                                 "engine does not return; set algorithm.old_logprobs to auto or recompute")
            batch.old_logprobs = batch.behavior_logprobs
        elif spec.old_logprobs == "recompute" or updates > 1 or spec.rollout_is != "none":
            # once, before the first update
            batch.old_logprobs, batch.old_vocab_mean = self._no_grad_stats(
                batch, with_vocab_mean="vocab_mean" in spec.needs)
            if "alt_context" in spec.needs:
                batch.old_alt_logprobs = self._no_grad_stats(alt_prompt_batch(batch))[0]
        else:
            batch.old_logprobs = None  # on-policy, single update: detach the current log-probs
        if spec.rollout_is != "none":
            is_weights, is_metrics = rollout_is_weights(batch.old_logprobs, batch.behavior_logprobs, batch.loss_mask,
                                                        level=spec.rollout_is, cap=spec.rollout_is_cap)
            sums.update({k: [v] for k, v in is_metrics.items()})
        batch.values = None
        gen = torch.Generator().manual_seed(seed)
        self.train_model.train()
        for _ in range(epochs):
            order = self._order(batch, gen, shuffle=updates > 1, keep_groups=self.keep_groups or "groups" in spec.needs)
            size = math.ceil(batch.size / mini_batches)
            for m in range(mini_batches):
                rows = order[m * size:(m + 1) * size]
                if rows:
                    self._update(batch, advantages, is_weights, rows, loss_fn, spec, sums)
        means = {k: torch.stack(v).float().mean() for k, v in sorted(sums.items())}
        if self.dp is not None and means:  # each rank saw its shard: report the whole batch's metrics
            # (every rank ran as many micro-batches, so the mean of rank means is the mean of all)
            reduced = self.dp.all_reduce_mean(torch.stack(list(means.values())))
            means = dict(zip(means, reduced))
        return {k: float(v) for k, v in means.items()}

    def _order(self, batch: RolloutBatch, gen: torch.Generator, shuffle: bool, keep_groups: bool) -> list[int]:
        """Row order of an epoch; `keep_groups` keeps a group's rows together (rollout rows are grouped)."""
        if not shuffle:
            return list(range(batch.size))
        if not keep_groups:
            return torch.randperm(batch.size, generator=gen).tolist()
        groups = batch.group_ids.unique().tolist()
        order = []
        for g in torch.tensor(groups)[torch.randperm(len(groups), generator=gen)].tolist():
            order += (batch.group_ids == g).nonzero().flatten().tolist()
        return order

    def _update(self, batch, adv_B_T, is_weights, rows, loss_fn, spec: LossSpec, sums) -> None:
        # the normaliser comes from every row of the mini-batch, on every rank: shards then add up
        normalizer = agg_normalizer(batch.loss_mask[rows], spec.agg)
        max_tokens = spec.max_tokens or batch.completion_ids.shape[1]
        scale = self.dp.loss_scale if self.dp is not None else 1.0
        mine = self.dp.shard(rows) if self.dp is not None else rows
        self.optimizer.zero_grad(set_to_none=True)
        total_loss = torch.zeros(())
        needs_vocab_mean = "vocab_mean" in spec.needs  # mean_v log pi(v|s_t): one more reduction per position
        step = self.optim.micro_batch_size
        for i in range(0, len(mine), step):
            sub = mine[i:i + step]
            mb = batch.select(sub).trimmed().to(self.device)
            T = mb.completion_ids.shape[1]
            adv = adv_B_T[sub][:, :T].to(self.device)
            last = i + step >= len(mine)
            sync = self.dp.accumulate(self.train_model, last) if self.dp is not None else contextlib.nullcontext()
            with sync:
                with self.autocast():
                    stats = self.forward(self.train_model, mb, temperature=self.temperature, with_entropy=True,
                                         entropy_grad=spec.entropy_coef != 0 or "entropy_grad" in spec.needs,
                                         with_vocab_mean=needs_vocab_mean)
                logp, entropy = stats[0], stats[1]
                old = mb.old_logprobs[:, :T] if mb.old_logprobs is not None else logp.detach()
                ref = mb.ref_logprobs[:, :T] if mb.ref_logprobs is not None else None
                vocab_mean = old_vocab_mean = None
                if needs_vocab_mean:
                    vocab_mean = stats[2]
                    old_vocab_mean = (mb.old_vocab_mean[:, :T] if mb.old_vocab_mean is not None
                                      else vocab_mean.detach())
                alt_logp = None
                if "alt_context" in spec.needs:  # the same completion under the row's second prompt
                    with self.autocast():
                        alt_logp = self.forward(self.train_model, alt_prompt_batch(mb), temperature=self.temperature)[0]
                inp = LossInputs(logp, old, adv, mb.loss_mask, ref_logprobs=ref, entropy=entropy,
                                 token_ids=mb.completion_ids, behavior_logprobs=mb.behavior_logprobs[:, :T],
                                 rewards=mb.rewards, group_ids=mb.group_ids, vocab_mean=vocab_mean,
                                 old_vocab_mean=old_vocab_mean, alt_logprobs=alt_logp,
                                 old_alt_logprobs=(mb.old_alt_logprobs[:, :T] if mb.old_alt_logprobs is not None
                                                   else None),
                                 turn_ids=mb.turn_ids[:, :T] if mb.turn_ids is not None else None)
                out = loss_fn(inp, **spec.loss_kwargs)
                per_token = out.loss
                metrics = dict(out.metrics)
                if is_weights is not None:
                    per_token = per_token * is_weights[sub][:, :T].to(self.device)
                if spec.kl_in_loss:
                    if ref is None:
                        raise RuntimeError("KL in the loss needs reference log-probs on the batch")
                    per_token = per_token + spec.kl_coef * kl_penalty(logp, ref, spec.kl_estimator)
                if spec.entropy_coef and entropy is not None:
                    per_token = per_token - spec.entropy_coef * entropy
                loss = aggregate(per_token, mb.loss_mask, spec.agg, max_tokens=max_tokens, normalizer=normalizer)
                (loss * scale).backward()
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
        sums.setdefault("loss", []).append(total_loss * scale)  # x world: the rank mean is then the sum
        sums.setdefault("grad_norm", []).append(grad_norm)
        sums.setdefault("lr", []).append(torch.tensor(self.scheduler.get_last_lr()[0]))

    def _clip_and_step(self) -> torch.Tensor:
        params = [p for p in self.train_model.parameters() if p.requires_grad]
        max_norm = self.optim.max_grad_norm if self.optim.max_grad_norm is not None else float("inf")
        grad_norm = full_tensor(torch.nn.utils.clip_grad_norm_(params, max_norm)).detach().float().cpu()
        if torch.isfinite(grad_norm):
            self.optimizer.step()
            self.scheduler.step()
        else:  # a non-finite gradient would poison the weights: skip this update, report it
            self.optimizer.zero_grad(set_to_none=True)
        self.skipped_nonfinite = not bool(torch.isfinite(grad_norm))
        return grad_norm

    # ------------------------------------------------------------------- weights and checkpoints
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Full CPU weights (what rollout replicas load); a collective under FSDP2."""
        return full_state_dict(self.model, self.dp)

    def num_parameters(self) -> tuple[int, int]:
        if self.dp is not None and self.dp.strategy == "fsdp2":  # sharded: count the global shapes
            total = sum(p.numel() for p in self.state_dict().values())
            trainable = sum(full_tensor(p.detach()).numel() for p in self.model.parameters() if p.requires_grad)
            return total, trainable
        return count_parameters(self.model)

    def save_checkpoint(self, run_dir, step: int, *, tokenizer, state: dict[str, Any], keep_last: int,
                        extra_dirs=None):
        """Rank 0 writes (atomically); under FSDP2 every rank takes part in gathering the state.
        `extra_dirs`: subdirectory -> writer for parts the learner does not own (the critic)."""
        sharded = self.dp is not None and self.dp.strategy == "fsdp2"
        weights = self.state_dict() if sharded else None
        optim_state = _full_optimizer_state(self.model, self.optimizer) if sharded else None
        path = None
        if self.dp is None or self.dp.is_main:
            path = ckpt.save_checkpoint(run_dir, step, model=self.model, tokenizer=tokenizer,
                                        optimizer=self.optimizer, scheduler=self.scheduler, state=state,
                                        keep_last=keep_last, weights=weights, optimizer_state=optim_state,
                                        extra_dirs=extra_dirs)
        if self.dp is not None:
            self.dp.barrier()  # nobody moves on (or resumes) before the checkpoint exists
        return path

    def load_checkpoint(self, path) -> dict[str, Any]:
        if self.dp is not None and self.dp.strategy == "fsdp2":
            return _load_sharded(self, path)
        return ckpt.load_checkpoint(path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler)


def _full_optimizer_state(model, optimizer):
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _load_sharded(learner: Learner, path) -> dict[str, Any]:
    """FSDP2: every rank reads the full checkpoint and keeps its shard."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    weights, extra, state = ckpt.read_checkpoint(path)
    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(learner.model, weights, options=opts)
    if "optimizer" in extra:
        set_optimizer_state_dict(learner.model, learner.optimizer, extra["optimizer"], options=opts)
    learner.scheduler.load_state_dict(extra["scheduler"])
    ckpt.set_rng_state(extra["rng"])
    return state
