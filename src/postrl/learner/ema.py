"""A slowly updated copy of the policy (exponential moving average of its weights).

GRPO-CARE (arXiv 2506.16141) scores how likely each answer is given its reasoning under a
reference that follows the policy slowly instead of staying at the initial weights:

    theta_ema <- decay * theta_ema + (1 - decay) * theta      after every `every`-th RL step

It starts as a copy of the initial policy (under LoRA: of the adapted model, adapter included),
lives on the policy's device, is never trained, and is saved with each checkpoint (`ema.pt` in
the checkpoint's `ema_reference/` directory) so a resumed run continues from the same weights.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from postrl.learner.logprobs import completion_logprobs
from postrl.rollout.batch import RolloutBatch

EMA_DIR = "ema_reference"
EMA_FILE = "ema.pt"


class EmaModel:
    def __init__(self, policy, *, decay: float, every: int):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        if every < 1:
            raise ValueError(f"EMA interval must be >= 1 step, got {every}")
        self.decay, self.every = decay, every
        self.model = copy.deepcopy(policy).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, policy, step: int) -> bool:
        """Move towards `policy` after RL step `step` (0-based) when step + 1 is a multiple of
        `every`; returns whether it moved. decay 1 keeps the initial weights."""
        if (step + 1) % self.every or self.decay == 1.0:
            return False
        own = dict(self.model.named_parameters())
        for name, p in policy.named_parameters():
            if name not in own:
                raise RuntimeError(f"EMA reference has no parameter {name!r}: it was copied from another model")
            own[name].lerp_(p.detach().to(own[name].dtype), 1.0 - self.decay)  # e + (1-d)(p - e)
        return True

    @torch.no_grad()
    def logprobs(self, batch: RolloutBatch, *, temperature: float, micro_batch_size: int) -> torch.Tensor:
        """log pi_ema(y_t | x, y_<t) of the batch's completion tokens: [B, T], 0 off the completion."""
        device = next(self.model.parameters()).device
        T = batch.completion_ids.shape[1]
        parts = []
        for i in range(0, batch.size, micro_batch_size):
            mb = batch.select(list(range(i, min(i + micro_batch_size, batch.size)))).trimmed().to(device)
            logp = completion_logprobs(self.model, mb, temperature=temperature)[0].float().cpu()
            parts.append(torch.nn.functional.pad(logp, (0, T - logp.shape[1])))
        return torch.cat(parts) * batch.completion_mask.float()

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}, directory / EMA_FILE)

    def load(self, directory: Path) -> None:
        path = Path(directory) / EMA_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path}: the checkpoint has no EMA reference weights; it was written by a run "
                                    "without reward_combine consistency, so this run cannot resume from it exactly")
        self.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
