"""D3S: train on the rollouts and tokens that carry the most signal, down-sampling less as training goes on."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from postrl.samplers.base import SAMPLERS
from postrl.samplers.pick import check_param
from postrl.samplers.uniform import Uniform

NAME = "d3s"


def max_variance_subset(values: list[float], m: int) -> list[int]:
    """Positions of the m values whose (population) variance is largest, in ascending position order.

    For a fixed size the optimum takes the j largest and the m - j smallest values for some j
    (moving a kept value outward never lowers the spread; PODS, arXiv 2504.13818, proves the same
    for rewards), so trying the m + 1 splits of the sorted values is exact: O(n log n + m^2).
    Ties (equal variance) go to the smaller j, then to the earlier positions.
    """
    n = len(values)
    if not 0 <= m <= n:
        raise ValueError(f"max_variance_subset: m={m} must be in [0, {n}]")
    order = sorted(range(n), key=lambda i: (values[i], i))  # ascending value, then position
    best, best_var = None, -1.0
    for j in range(m + 1):  # j largest, m - j smallest
        chosen = order[:m - j] + (order[n - j:] if j else [])
        x = [values[i] for i in chosen]
        mean = sum(x) / m if m else 0.0
        var = sum((v - mean) ** 2 for v in x) / m if m else 0.0
        if var > best_var + 1e-12:
            best, best_var = chosen, var
    return sorted(best)


def linear(start: float, end: float, progress: float) -> float:
    """start at progress 0, end at progress 1, linear in between (clamped)."""
    return start + (end - start) * min(max(progress, 0.0), 1.0)


def keep_top_tokens(scores: torch.Tensor, mask: torch.Tensor, fraction: float) -> torch.Tensor:
    """A 0/1 mask [B, T] of the ceil(fraction * #masked-in) tokens with the largest score among
    those where `mask` > 0 (ties: earlier row, then earlier token)."""
    valid = mask > 0
    total = int(valid.sum())
    k = min(total, math.ceil(fraction * total - 1e-9))
    flat = torch.where(valid, scores.double(), torch.tensor(-math.inf, dtype=torch.float64)).flatten()
    order = torch.argsort(-flat, stable=True)[:k]
    keep = torch.zeros(flat.numel(), dtype=mask.dtype)
    keep[order] = 1
    return keep.view_as(mask)


def entropy_matrix(batch) -> torch.Tensor:
    """metadata["token_entropy"] (a list of floats per row) as a [B, T] tensor, 0 past each row's end."""
    rows = batch.metadata.get("token_entropy")
    if rows is None or any(r is None for r in rows):
        raise RuntimeError("d3s: the batch has no per-token entropies (metadata['token_entropy']); they come "
                           "from the hf rollout engine when the sampler needs 'token_entropy'")
    B, T = batch.completion_ids.shape
    out = torch.zeros(B, T, dtype=torch.float32)
    for b, row in enumerate(rows):
        n = min(len(row), T)
        out[b, :n] = torch.tensor(row[:n], dtype=torch.float32)
    return out


@SAMPLERS.register(NAME, paper="Learning More with Less: A Dynamic Dual-Level Down-Sampling Framework for "
                   "Efficient Policy Optimization", arxiv="2509.22115",
                   summary="per group keep the max-Var(A) subset of rollouts, then the top |A|*H tokens; "
                           "aggressive early, relaxed over training", needs=("token_entropy",))
class D3S(Uniform):
    """Dynamic Dual-Level Down-Sampling (D3S), the intra-group variant, after the advantages.

    progress p = step / train.steps; keep fractions follow a linear schedule
        f_s(p) = sample_keep_start + (sample_keep_end - sample_keep_start) p
        f_t(p) = token_keep_start  + (token_keep_end  - token_keep_start)  p
    Sample level, per group g of n_g rollouts with advantages A_i (a row's A_i: its mean
    advantage over loss tokens; GRPO's is the same on every token):
        m_g = max(min(2, n_g), ceil(f_s n_g))
        S_g = argmax_{S subset of g, |S| = m_g} Var({A_i : i in S})
    (exact: the best S is the j largest plus the m_g - j smallest A for some j; `max_variance_subset`).
    Rows outside every S_g are dropped from the step's batch.
    Token level, over the kept rows' loss tokens (i, t) with the sampling policy's entropy H_{i,t}:
        keep the ceil(f_t * #tokens) tokens with the largest |A_{i,t}| * H_{i,t};
        the others get loss_mask 0 (and advantage 0).
    Logs `d3s/kept_rows` and `d3s/kept_tokens` (shares of the step's rows and loss tokens kept),
    `d3s/sample_keep` and `d3s/token_keep` (the schedule's fractions).

    The paper proves Var(A) of the kept subset is positively correlated with an upper bound of
    the policy-gradient norm; |A| H picks tokens where the policy is uncertain and the sequence
    matters. Advantages are those of the full group (its baseline uses all n_g rewards); the kept
    rows are not re-normalised. Entropies come from the rollout engine (hf, temperature-scaled
    distribution before top-p/top-k). Prompts are drawn like `uniform`.
    Not confirmed (the paper's body was not available to us): the schedule's form and its
    fractions (defaults: keep 1/2 of the rollouts and of the tokens at the start, everything at
    the end), whether token selection is per batch (here) or per sequence; the cross-group
    variant (the paper's other sample-level mode) is not implemented.
    """

    selects = True
    drops_rows = True

    def __init__(self, dataset_size: int, seed: int = 0, *, sample_keep_start: float = 0.5,
                 sample_keep_end: float = 1.0, token_keep_start: float = 0.5, token_keep_end: float = 1.0,
                 shuffle: bool = True):
        super().__init__(dataset_size, seed, shuffle=shuffle)
        for key, v in (("sample_keep_start", sample_keep_start), ("sample_keep_end", sample_keep_end),
                       ("token_keep_start", token_keep_start), ("token_keep_end", token_keep_end)):
            check_param(NAME, key, v, 0.0 < v <= 1.0, "in (0, 1] (a share of the rollouts / tokens kept)")
        self.sample_keep = (float(sample_keep_start), float(sample_keep_end))
        self.token_keep = (float(token_keep_start), float(token_keep_end))

    def select(self, batch, advantages, progress: float):
        f_s, f_t = linear(*self.sample_keep, progress), linear(*self.token_keep, progress)
        mask = batch.loss_mask
        rows_before, tokens_before = batch.size, float(mask.sum())
        row_adv = (advantages * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        kept: list[int] = []
        for g in batch.group_ids.unique().tolist():
            rows = (batch.group_ids == g).nonzero().flatten().tolist()
            m = max(min(2, len(rows)), math.ceil(f_s * len(rows) - 1e-9))
            kept += [rows[j] for j in max_variance_subset(row_adv[rows].tolist(), min(m, len(rows)))]
        kept.sort()
        if len(kept) < batch.size:
            batch, advantages = batch.select(kept), advantages[kept]
        if f_t < 1.0:
            scores = advantages.abs() * entropy_matrix(batch)
            keep = keep_top_tokens(scores, batch.loss_mask, f_t).to(batch.loss_mask.dtype)
            batch = replace(batch, loss_mask=batch.loss_mask * keep)  # a new batch: the caller's stays as it was
            advantages = advantages * keep.to(advantages.dtype)
        return batch, advantages, {"d3s/kept_rows": batch.size / max(rows_before, 1),
                                   "d3s/kept_tokens": float(batch.loss_mask.sum()) / max(tokens_before, 1.0),
                                   "d3s/sample_keep": f_s, "d3s/token_keep": f_t}
