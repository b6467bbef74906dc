"""Aggregation of a per-token loss into a scalar: one shared step, named by mode.

Losses return per-token values; how tokens and sequences are weighted is chosen here and
nowhere else (the mixing of the two in one name, as in TRL's `loss_type`, is avoided).

    token_mean               sum_{i,t} l_it m_it / sum_{i,t} m_it          (DAPO, 2503.14476)
    seq_mean_token_mean      1/B sum_i [ sum_t l_it m_it / sum_t m_it ]    (GRPO, 2402.03300)
    seq_mean_token_sum_norm  1/B sum_i [ sum_t l_it m_it / L ]             (Dr. GRPO, 2503.20783)

L is a constant (the generation budget, `max_tokens`), so no length bias enters the gradient.
For micro-batched accumulation `normalizer` overrides the denominator (the count over the whole
mini-batch), so accumulated micro-batches give the same gradient as one big batch.
"""

from __future__ import annotations

import torch

AGG_MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")


def aggregate(loss_BT: torch.Tensor, mask_BT: torch.Tensor, mode: str, *, max_tokens: int | None = None,
              normalizer: float | None = None) -> torch.Tensor:
    """Reduce `loss_BT` over masked tokens by `mode`.

    `normalizer`, when given, replaces the batch-level denominator: the total mask count for
    token_mean, the number of sequences for the two seq_mean modes.
    """
    mask = mask_BT.to(loss_BT.dtype)
    if mode == "token_mean":
        denom = normalizer if normalizer is not None else mask.sum().clamp(min=1.0)
        return (loss_BT * mask).sum() / denom
    n_seq = normalizer if normalizer is not None else max(loss_BT.shape[0], 1)
    if mode == "seq_mean_token_mean":
        per_seq = (loss_BT * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        return per_seq.sum() / n_seq
    if mode == "seq_mean_token_sum_norm":
        L = max_tokens if max_tokens is not None else loss_BT.shape[-1]
        return (loss_BT * mask).sum() / (L * n_seq)
    raise ValueError(f"unknown loss aggregation {mode!r}; valid: {', '.join(AGG_MODES)}")


def agg_normalizer(mask_BT: torch.Tensor, mode: str) -> float:
    """The denominator `aggregate` would use for the whole batch (for micro-batch accumulation)."""
    if mode == "token_mean":
        return float(mask_BT.sum().clamp(min=1.0))
    return float(max(mask_BT.shape[0], 1))
