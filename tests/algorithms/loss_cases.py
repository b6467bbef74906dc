"""Shared builder of LossInputs for the group-level loss tests (tensors from nested lists)."""

import torch

from postrl.algorithms.policy_losses import LossInputs


def group_inputs(logp, old=None, *, rewards, groups, mask=None, ref=None, adv=None):
    """LossInputs with gradient on `logp`; `old` defaults to a detached copy (on-policy)."""
    logp = torch.tensor(logp, dtype=torch.float32, requires_grad=True)
    old = logp.detach().clone() if old is None else torch.tensor(old, dtype=torch.float32)
    mask = torch.ones_like(old) if mask is None else torch.tensor(mask, dtype=torch.float32)
    adv = torch.zeros_like(old) if adv is None else torch.tensor(adv, dtype=torch.float32)
    ref = None if ref is None else torch.tensor(ref, dtype=torch.float32)
    return LossInputs(logp, old, adv, mask, ref_logprobs=ref, rewards=torch.tensor(rewards, dtype=torch.float32),
                      group_ids=torch.tensor(groups))
