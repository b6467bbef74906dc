"""Model soups: a reference model built as the weight average of several models (SALSA).

SALSA (Soup-based Alignment Learning for Stronger Adaptation in RLHF, arXiv 2411.01798) replaces
the frozen initial policy in the KL term by the weight-space average of independently
fine-tuned models of one architecture:

    theta_ref = sum_k w_k theta_k,     w_k >= 0, sum_k w_k = 1     (the paper: two SFT models, w = 1/2)

The average is taken in float32 over every floating-point tensor of the state dict (parameters
and buffers) and cast back to the first model's dtype; integer buffers must agree and are kept.
Models whose parameter names or shapes differ cannot be averaged: the error names the first
mismatching parameter.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch


def soup_state_dict(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float] | None = None,
                    names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """sum_k w_k * states[k] per tensor (weights normalised to sum 1; None: the plain mean)."""
    if len(states) < 2:
        raise ValueError(f"a soup averages at least two models, got {len(states)}")
    names = list(names) if names is not None else [f"model {k}" for k in range(len(states))]
    w = [1.0] * len(states) if weights is None else [float(x) for x in weights]
    if len(w) != len(states) or any(x <= 0 for x in w):
        raise ValueError(f"soup weights {list(w)}: need one positive weight per model ({len(states)})")
    total = sum(w)
    w = [x / total for x in w]
    first = states[0]
    for k, state in enumerate(states[1:], start=1):
        missing, extra = sorted(set(first) - set(state)), sorted(set(state) - set(first))
        if missing or extra:
            which = missing[0] if missing else extra[0]
            raise ValueError(f"cannot average {names[k]} with {names[0]}: parameter {which!r} is in only one of "
                             "them; a soup needs models of one architecture")
        for key, value in state.items():
            if value.shape != first[key].shape:
                raise ValueError(f"cannot average {names[k]} with {names[0]}: parameter {key!r} has shape "
                                 f"{tuple(value.shape)} there and {tuple(first[key].shape)} in {names[0]}")
    out = {}
    for key, ref in first.items():
        if not ref.is_floating_point():
            for k, state in enumerate(states[1:], start=1):
                if not torch.equal(state[key], ref):
                    raise ValueError(f"cannot average {names[k]} with {names[0]}: integer buffer {key!r} differs")
            out[key] = ref.clone()
            continue
        acc = torch.zeros(ref.shape, dtype=torch.float32, device=ref.device)
        for wk, state in zip(w, states):
            acc += wk * state[key].to(device=ref.device, dtype=torch.float32)
        out[key] = acc.to(ref.dtype)
    return out


def load_soup(cfg, tokenizer, loader) -> Any:
    """The soup of `cfg.reference_soup` (a `ModelSection`); `loader(name)` loads a path or hub id."""
    from postrl.learner.tiny import build_model

    models, names = [], []
    for i, member in enumerate(cfg.reference_soup):
        if member == "tiny" or isinstance(member, dict):
            spec = {**cfg.tiny.model_dump(), **(member if isinstance(member, dict) else {})}
            models.append(build_model(tokenizer, **spec))
        else:
            models.append(loader(member))
        names.append(f"model.reference_soup[{i}] ({member})")
    state = soup_state_dict([m.state_dict() for m in models], cfg.reference_soup_weights, names)
    soup = models[0]
    soup.load_state_dict(state)
    return soup
