"""Frozen copies of the policy kept between steps of `postrl online`, and APO momentum.

- the reference model: the initial policy (or model.ref_model), or, with `online.reference:
  previous_iterate`, the policy at the start of the current iteration (SPIN, DNO);
- the previous iterate pi_t (losses that need "previous_iterate": INPO, SPPO), refreshed at
  every iteration start;
- APO's last iterate theta_{t-1}, for the extrapolation `extrapolate`;
- Nash-MP's anchor pi_k and half-step pi_{k+1/2}, swapped every `prox_steps` updates.

Every copy lives on the policy's device with gradients off, and is saved with each checkpoint
(so a resumed run continues with the same reference and snapshots, bit for bit).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from postrl.learner.checkpoint import load_weights


def extrapolate(current: dict[str, torch.Tensor], last: dict[str, torch.Tensor],
                alpha: float) -> dict[str, torch.Tensor]:
    """APO's extrapolation step ("Accelerated Preference Optimization for Large Language Model
    Alignment", He, Yuan, Gu, arXiv 2410.06293), in parameter space:

        theta^_{t+1} = theta_{t+1} + alpha * (theta_{t+1} - theta_t)

    The paper states it on policies, pi^_{t+1}(y|x) ∝ pi_{t+1}(y|x) * (pi_{t+1}(y|x) / pi_t(y|x))^alpha,
    i.e. log pi^ = log pi_{t+1} + alpha (log pi_{t+1} - log pi_t) up to normalisation: Nesterov
    momentum on the proximal-point iterates of iterative DPO. For a log-linear policy
    pi_theta ∝ exp(theta . phi(x, y)) the two are the same map; for a language model the
    policy-space version has no tractable normaliser over sequences, so this is the
    parameter-space approximation of it (we could not confirm from the stored sources which
    form the paper's experiments used). theta_{t+1}, theta_t are the iterates *before*
    extrapolation (Nesterov's sequence), and pi^_{t+1} is both the next iteration's start and
    its reference.
    """
    return {k: v + alpha * (v - last[k]) for k, v in current.items()}


def _frozen_copy(model):
    out = copy.deepcopy(model)
    out.eval()
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def _copy_into(dst, src) -> None:
    with torch.no_grad():
        for a, b in zip(dst.parameters(), src.parameters()):
            a.copy_(b)


class Snapshots:
    """The frozen models and parameter copies of one run (None where the config uses none)."""

    def __init__(self, policy, reference, *, refresh_reference: bool, iterate: bool, momentum: float,
                 prox_steps: int | None):
        self.reference = reference
        self.refresh_reference = refresh_reference
        self.iterate = _frozen_copy(policy) if iterate else None
        self.momentum = momentum
        self.last = {k: p.detach().clone() for k, p in policy.named_parameters()} if momentum else None
        self.prox_steps = prox_steps
        self.anchor = _frozen_copy(policy) if prox_steps else None
        self.half = _frozen_copy(policy) if prox_steps else None
        self.phase, self.in_phase = "half", 0

    # ------------------------------------------------------------------------------ transitions
    def start_iteration(self, policy) -> None:
        """At the start of every iteration after the first: APO momentum, then refresh the copies."""
        if self.last is not None:
            current = {k: p.detach().clone() for k, p in policy.named_parameters()}
            new = extrapolate(current, self.last, self.momentum)
            with torch.no_grad():
                for k, p in policy.named_parameters():
                    p.copy_(new[k])
            self.last = current
        if self.refresh_reference:
            _copy_into(self.reference, policy)
        if self.iterate is not None:
            _copy_into(self.iterate, policy)

    def opponent(self):
        """Nash-MP's opponent this step: the anchor in the half phase, the half-step in the full phase."""
        return self.anchor if self.phase == "half" else self.half

    def after_update(self, policy) -> None:
        """Nash-MP: after `prox_steps` updates in a phase, store the policy and switch phase."""
        if self.prox_steps is None:
            return
        self.in_phase += 1
        if self.in_phase == self.prox_steps:
            _copy_into(self.half if self.phase == "half" else self.anchor, policy)
            self.phase, self.in_phase = ("full" if self.phase == "half" else "half"), 0

    # ------------------------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        return {"prox_phase": self.phase, "prox_in_phase": self.in_phase}

    def writers(self) -> dict:
        """Subdirectory -> writer for `save_checkpoint(extra_dirs=...)`."""
        out = {}
        if self.refresh_reference:
            out["reference"] = self.reference.save_pretrained
        for name in ("iterate", "anchor", "half"):
            model = getattr(self, name)
            if model is not None:
                out[name] = model.save_pretrained
        if self.last is not None:
            out["apo_last"] = self._save_last
        return out

    def _save_last(self, path: Path) -> None:
        from safetensors.torch import save_file

        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous().cpu() for k, v in self.last.items()}, str(path / "last.safetensors"))

    def load(self, ckpt: Path, state: dict) -> None:
        ckpt = Path(ckpt)
        if self.refresh_reference:
            load_weights(self.reference, ckpt / "reference")
        for name in ("iterate", "anchor", "half"):
            if getattr(self, name) is not None:
                load_weights(getattr(self, name), ckpt / name)
        if self.last is not None:
            from safetensors.torch import load_file

            saved = load_file(str(ckpt / "apo_last" / "last.safetensors"))
            self.last = {k: saved[k].to(v.device) for k, v in self.last.items()}
        self.phase, self.in_phase = state.get("prox_phase", "half"), int(state.get("prox_in_phase", 0))
