"""The critic: the value model, its clipped value loss and its optimizer, and its checkpoints.

A value model is a causal-LM backbone with a scalar head: transformers'
`AutoModelForTokenClassification` with `num_labels=1` (Qwen2, Llama, Mistral, ... have one). It
is loaded from `critic.name_or_path`, by default the policy's own weights (`model.name_or_path`,
or the same `tiny` spec). The head starts at zero (weight and bias): V = 0 everywhere, so the
first advantages are the plain lambda-returns of the rewards instead of returns minus random
noise, and the backbone starts from the policy's features; a directory holding a trained critic
keeps its head. Dropout is switched off, as in the policy, so values are deterministic.

The critic is trained beside the policy, never inside the algorithm-blind `Learner`: the trainer
asks it for `values(batch)` before the advantage estimator runs, and calls `train_on_batch` with
the returns the estimator left on the batch. It runs in the single local learner process only
(config validation refuses Ray, data-parallel learners and asynchronous rollouts).
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from postrl.learner import checkpoint as ckpt
from postrl.learner.learner import build_optimizer, build_scheduler, use_bf16
from postrl.learner.models import _dtype, check_vocabulary, quiet_transformers
from postrl.rollout.batch import RolloutBatch

CRITIC_DIR = "critic"
"""Subdirectory of every `checkpoints/step_*` that holds the critic (HF weights + optimizer.pt)."""


@dataclass
class ValueLossOutput:
    loss: torch.Tensor  # [B, T] per-token value loss
    clipped: torch.Tensor  # [B, T] 1 where the clipped term is the larger one


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, *,
                       clip: float | None = 0.2) -> ValueLossOutput:
    """PPO's clipped value loss, per token:

        0.5 * max((V - R)^2, (clip(V, V_old - clip, V_old + clip) - R)^2)

    The value prediction may move at most `clip` from the one the returns were computed with before
    the loss stops rewarding it (the max makes the clipped term a pessimistic bound). It is not in
    the PPO paper (arXiv 1707.06347 uses a plain squared error); it comes from OpenAI's baselines
    `ppo2`, is discussed in "Implementation Matters in Deep Policy Gradients" (arXiv 2005.12729),
    and is what verl, OpenRLHF and TRL train LLM critics with. `clip=None`: 0.5 * (V - R)^2.
    """
    unclipped = (values - returns) ** 2
    if clip is None:
        return ValueLossOutput(0.5 * unclipped, torch.zeros_like(unclipped))
    clipped_v = old_values + (values - old_values).clamp(-clip, clip)
    clipped = (clipped_v - returns) ** 2
    return ValueLossOutput(0.5 * torch.maximum(unclipped, clipped), (clipped > unclipped).float())


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R) over masked tokens: 1 is a perfect critic, 0 no better than a
    constant, negative worse; NaN when the returns do not vary."""
    valid = mask > 0
    if int(valid.sum()) < 2:
        return float("nan")
    r, v = returns[valid].double(), values[valid].double()
    var_r = r.var()
    return float("nan") if var_r == 0 else float(1 - (r - v).var() / var_r)


class CriticValues(NamedTuple):
    values: torch.Tensor  # [B, T] V(s_t), the state before completion token t; 0 on masked tokens
    last: torch.Tensor  # [B] V of the state after the last completion token (T-PPO's bootstrap)


def load_value_model(cfg, tokenizer, device: torch.device):
    """The value model of an `RLConfig`: backbone from `critic.name_or_path` (default the policy's)."""
    from transformers import AutoModelForTokenClassification

    name = cfg.critic.name_or_path or cfg.model.name_or_path
    key = "critic.name_or_path" if cfg.critic.name_or_path else "model.name_or_path (the critic's default backbone)"
    return load_scalar_model(AutoModelForTokenClassification, name, cfg.model, tokenizer, device, key=key,
                             kind="token-classification (value head)", user="critic")


def load_scalar_model(auto_cls, name: str, model_cfg, tokenizer, device: torch.device, *, key: str,
                      kind: str, user: str):
    """A causal-LM backbone with a one-output linear head: `auto_cls` (transformers'
    `AutoModelForTokenClassification` for the critic, `AutoModelForSequenceClassification` for the
    reward model) with `num_labels=1`, built from `name` (`tiny`: `model_cfg.tiny`; else a hub id or
    a directory). A head missing from the checkpoint starts at zero; a saved head is kept. Dropout
    is off and `config.pad_token_id` is the tokenizer's (the sequence head reads the last non-pad
    token). `key` and `kind` name the config key and the head in errors; `user` the component."""
    from transformers import AutoConfig

    quiet_transformers()
    # the head's random initialisation (overwritten with zeros) must not move the run's RNG streams
    with torch.random.fork_rng(devices=[]):
        if name == "tiny":
            from postrl.learner.tiny import build_model

            lm = build_model(tokenizer, **model_cfg.tiny.model_dump())
            config = copy.deepcopy(lm.config)
            config.num_labels, config.classifier_dropout = 1, 0.0
            model = auto_cls.from_config(config)
            getattr(model, model.base_model_prefix).load_state_dict(getattr(lm, lm.base_model_prefix).state_dict())
            fresh_head = True
            if model_cfg.dtype not in ("auto", "float32"):
                model = model.to(_dtype(model_cfg.dtype))
        else:
            kwargs = {"trust_remote_code": model_cfg.trust_remote_code}
            try:
                config = AutoConfig.from_pretrained(name, **kwargs)
                config.num_labels, config.classifier_dropout = 1, 0.0
                model, info = auto_cls.from_pretrained(
                    name, config=config, dtype=_dtype(model_cfg.dtype), output_loading_info=True, **kwargs)
            except OSError as e:
                raise ValueError(f"{key}: could not load {name!r} (not a local model directory "
                                 f"and not reachable on the hub): {e}") from None
            except ValueError as e:  # transformers: "Unrecognized configuration class ..."
                raise ValueError(f"{key}: {name!r} has no {kind} class in transformers, which postrl's "
                                 f"{user} is built on: {e}") from None
            head_name = _head_name(model)
            fresh_head = any(k.split(".")[0] == head_name for k in info["missing_keys"])
            if name != model_cfg.name_or_path:  # another backbone than the policy's reads the policy's ids
                check_vocabulary(name, model, tokenizer, key, compare_tokenizers=model_cfg.tokenizer is None)
    if fresh_head:
        with torch.no_grad():
            for p in getattr(model, _head_name(model)).parameters():
                p.zero_()
    for m in model.modules():  # values must not depend on a dropout draw
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    if tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.config.use_cache = False
    return model.to(device)


def _head_name(model) -> str:
    for name in ("score", "classifier"):
        if isinstance(getattr(model, name, None), torch.nn.Module):
            return name
    raise ValueError(f"{type(model).__name__}: no value head (`score` or `classifier`) found")


def build_critic(cfg, tokenizer, device: torch.device) -> "Critic":
    updates = cfg.train.steps * cfg.train.epochs * cfg.train.mini_batches
    return Critic(load_value_model(cfg, tokenizer, device), cfg.critic, cfg.train, total_updates=updates, device=device)


class Critic:
    """Owns the value model, its AdamW optimizer and schedule, and its part of each checkpoint.

    `critic_cfg` is a `CriticSection` (lr, schedule, grad clip, vf_clip); `train_cfg` supplies the
    micro-batch size and bf16 setting shared with the policy.
    """

    def __init__(self, model, critic_cfg, train_cfg, *, total_updates: int, device: torch.device):
        self.model, self.cfg, self.device = model, critic_cfg, device
        self.micro_batch_size = train_cfg.micro_batch_size
        self.optimizer = build_optimizer(model, critic_cfg)
        self.scheduler = build_scheduler(self.optimizer, critic_cfg, total_updates)
        self.bf16 = use_bf16(train_cfg, device)

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _forward(self, mb: RolloutBatch) -> torch.Tensor:
        """V(s_0) .. V(s_T) of a (trimmed, on-device) micro-batch: [b, T + 1].

        Column t is read at the position that predicts completion token t (the last prompt
        position for t = 0), i.e. the state before token t; column L (a row's length) is the state
        after its last token. The head's [b, P + T, 1] output is one float per position, so no
        slicing before the head is needed."""
        attn = mb.attention_mask()
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=mb.input_ids(), attention_mask=attn, position_ids=pos, use_cache=False)
        return out.logits[:, mb.prompt_ids.shape[1] - 1:, 0].float()

    def _chunks(self, rows: list[int]):
        for i in range(0, len(rows), self.micro_batch_size):
            yield rows[i:i + self.micro_batch_size]

    @torch.no_grad()
    def values(self, batch: RolloutBatch) -> CriticValues:
        """Values of the batch's states under the current critic, computed once per batch."""
        T = batch.completion_ids.shape[1]
        vals, last = [], []
        self.model.eval()
        try:
            with self.autocast():
                for rows in self._chunks(list(range(batch.size))):
                    mb = batch.select(rows).trimmed().to(self.device)
                    v = self._forward(mb)
                    lengths = mb.completion_mask.sum(-1).long()
                    last.append(v.gather(1, lengths[:, None]).squeeze(1).cpu())
                    vals.append(torch.nn.functional.pad(v[:, :-1], (0, T - v.shape[1] + 1)).cpu())
        finally:
            self.model.train()
        return CriticValues(torch.cat(vals) * batch.loss_mask, torch.cat(last))

    def train_on_batch(self, batch: RolloutBatch, returns: torch.Tensor, old_values: torch.Tensor, *,
                       mask: torch.Tensor | None = None, epochs: int = 1, mini_batches: int = 1,
                       seed: int = 0) -> dict[str, float]:
        """All critic updates for one rollout batch (the policy's epochs and mini-batches); metrics.

        `returns`/`old_values` [B, T]: the targets and the values they were computed with (the
        clipping anchor); `mask` [B, T]: tokens to train on (None: `loss_mask`). The loss of a
        mini-batch is the token mean over its masked tokens; a mini-batch without any is skipped.
        """
        if returns is None:
            raise ValueError("the critic has no targets: an advantage estimator that needs 'values' must "
                             "set batch.returns")
        mask = (batch.loss_mask if mask is None else mask).float()
        policy_tokens = batch.loss_mask > 0
        values_mean = float(old_values[policy_tokens].float().mean()) if policy_tokens.any() else float("nan")
        returns, old_values = returns.float() * mask, old_values.float() * mask
        gen = torch.Generator().manual_seed(seed)
        shuffle = epochs * mini_batches > 1
        size = math.ceil(batch.size / mini_batches)
        sums: dict[str, list[torch.Tensor]] = {}
        self.model.train()
        for _ in range(epochs):
            order = torch.randperm(batch.size, generator=gen).tolist() if shuffle else list(range(batch.size))
            for m in range(mini_batches):
                rows = order[m * size:(m + 1) * size]
                if rows and mask[rows].sum() > 0:
                    self._update(batch, returns, old_values, mask, rows, sums)
        metrics = {k: float(torch.stack(v).mean()) for k, v in sorted(sums.items())}
        metrics["values/mean"] = values_mean
        metrics["returns/mean"] = float(returns[mask > 0].mean()) if (mask > 0).any() else float("nan")
        metrics["explained_variance"] = explained_variance(old_values, returns, mask)  # of the values used
        return metrics

    def _update(self, batch, returns, old_values, mask, rows, sums) -> None:
        n_tokens = mask[rows].sum()  # the mini-batch's normaliser: micro-batching does not change the loss
        self.optimizer.zero_grad(set_to_none=True)
        total_loss, total_clipped = torch.zeros(()), torch.zeros(())
        for sub in self._chunks(rows):
            mb = batch.select(sub).trimmed().to(self.device)
            T = mb.completion_ids.shape[1]
            m = mask[sub][:, :T].to(self.device)
            with self.autocast():
                v = self._forward(mb)[:, :-1]
            out = clipped_value_loss(v, old_values[sub][:, :T].to(self.device), returns[sub][:, :T].to(self.device),
                                     clip=self.cfg.vf_clip)
            loss = (out.loss * m).sum() / n_tokens
            loss.backward()
            total_loss += loss.detach().float().cpu()
            total_clipped += (out.clipped * m).sum().detach().cpu()
        params = [p for p in self.model.parameters() if p.requires_grad]
        max_norm = self.cfg.max_grad_norm if self.cfg.max_grad_norm is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm).detach().float().cpu()
        if torch.isfinite(grad_norm):
            self.optimizer.step()
            self.scheduler.step()
        else:  # as the policy: a non-finite gradient skips the update instead of poisoning the weights
            self.optimizer.zero_grad(set_to_none=True)
        sums.setdefault("value_loss", []).append(total_loss)
        sums.setdefault("value_clip_frac", []).append(total_clipped / n_tokens)
        sums.setdefault("critic/grad_norm", []).append(grad_norm)
        sums.setdefault("critic/lr", []).append(torch.tensor(self.scheduler.get_last_lr()[0]))

    # ------------------------------------------------------------------- weights and checkpoints
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def save(self, path: str | Path) -> None:
        """Weights (HF `save_pretrained`, loadable as `critic.name_or_path`) and optimizer state into
        `path`; called inside the checkpoint's temporary directory, so it lands atomically."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path, safe_serialization=True)
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                   path / ckpt.OPTIM_FILE)

    def load(self, path: str | Path) -> None:
        path = Path(path)
        if not (path / ckpt.OPTIM_FILE).exists():
            raise FileNotFoundError(f"{path}: this checkpoint holds no critic (was the run started with a "
                                    "critic-free advantage estimator?); resume it with the same algorithm")
        ckpt.load_weights(self.model, path)
        extra = torch.load(path / ckpt.OPTIM_FILE, map_location="cpu", weights_only=False)
        self.optimizer.load_state_dict(extra["optimizer"])
        self.scheduler.load_state_dict(extra["scheduler"])
