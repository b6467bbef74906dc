"""Step-level advantage estimators: outcome RLOO plus credit from process (step) rewards.

These read, besides `batch.rewards` (outcome) and `batch.token_rewards` (other dense rewards, e.g.
the KL penalty), the step rewards the trainer leaves from `process_rewards`:
`batch.step_rewards` (per sequence, one value per step) and `batch.metadata["step_ends"]` (the
completion-token index where each step ends). Their registry entries need "step_rewards", so the
trainer does not also add those step rewards to `token_rewards` (they would count twice).

Notation, for completion i of a group of K and token t: P_{i,t} = the step reward of step k at
its end token e_k (0 elsewhere), n_i = number of loss tokens of completion i, r_i = outcome
reward, d_{i,t} = the other dense token rewards, m_{i,t} = loss_mask. Groups of one have no
leave-one-out baseline: their outcome term is 0 and their process baseline 0.
"""

from __future__ import annotations

import torch

from postrl.algorithms.registries import ADVANTAGES
from postrl.rewards.process import scatter_step_rewards
from postrl.rollout.batch import RolloutBatch


def _steps(batch: RolloutBatch) -> tuple[list[list[float]], list[list[int]]]:
    if batch.step_rewards is None or "step_ends" not in batch.metadata:
        raise ValueError("this advantage estimator needs step rewards (batch.step_rewards and "
                         "batch.metadata['step_ends']); configure process_rewards that give them (e.g. prm)")
    return batch.step_rewards, batch.metadata["step_ends"]


def _loo_mean(x_B: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean of x over the OTHER members of each row's group (0 for a group of one), group size)."""
    _, inv = torch.unique(group_ids, return_inverse=True)
    G = int(inv.max()) + 1 if inv.numel() else 0
    x = x_B.double()
    total = torch.zeros(G, dtype=torch.float64, device=x.device).index_add_(0, inv, x)
    count = torch.zeros(G, dtype=torch.float64, device=x.device).index_add_(0, inv, torch.ones_like(x))
    others = (count[inv] - 1).clamp(min=1)
    mean = torch.where(count[inv] > 1, (total[inv] - x) / others, torch.zeros_like(x))
    return mean.float(), count[inv].float()


def _reverse_cumsum(x_BT: torch.Tensor) -> torch.Tensor:
    """sum_{s >= t} x_s (gamma = 1, as in both papers)."""
    return x_BT.flip(-1).cumsum(-1).flip(-1)


def _outcome_rloo(batch: RolloutBatch) -> torch.Tensor:
    """r_i - mean_{j != i} r_j, 0 for groups of one: [B]."""
    r = batch.rewards.float()
    loo, count = _loo_mean(r, batch.group_ids)
    return torch.where(count > 1, r - loo, torch.zeros_like(r))


def _dense(batch: RolloutBatch) -> torch.Tensor:
    mask = batch.loss_mask.float()
    return torch.zeros_like(mask) if batch.token_rewards is None else batch.token_rewards.float() * mask


@ADVANTAGES.register("prime", paper="Process Reinforcement through Implicit Rewards (PRIME)", arxiv="2502.01456",
                     summary="outcome RLOO + return-to-go of leave-one-out-baselined process rewards, whitened",
                     needs=("step_rewards",))
def prime(batch: RolloutBatch, *, whiten: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """PRIME's advantage: RLOO on the outcome and on the process rewards, then returns-to-go.

        b_i      = 1/(K-1) sum_{j != i} (sum_t P_{j,t}) / n_j           (others' mean process reward per token)
        A_{i,t}  = sum_{s >= t} (P_{i,s} - b_i) m_{i,s}                 process return-to-go (gamma = 1)
                 + r_i - 1/(K-1) sum_{j != i} r_j                       outcome RLOO, on every token
                 + sum_{s >= t} d_{i,s}                                 other dense rewards (KL), no baseline
        whiten:  A <- (A - mean(A)) / (std(A) + eps) over the batch's loss tokens (PRIME's recipe
                 whitens; whiten=False keeps the raw sum)

    PRIME applies this to implicit-PRM token rewards (2502.01456; its verl recipe's
    baseline differs slightly); here P is whatever process reward gave step rewards, at the step
    ends, so a token inside a step is credited with its whole step's reward (a deviation from the
    token-level form). With zero step rewards and no dense rewards, whiten=False equals `rloo`. Process and outcome weights are the `weight`s of `process_rewards`/`rewards`
    (PRIME's recipe weights both by 5, which whitening cancels).
    """
    mask = batch.loss_mask.float()
    steps, ends = _steps(batch)
    P = scatter_step_rewards(steps, ends, tuple(mask.shape)).to(mask.device) * mask
    n = mask.sum(-1).clamp(min=1)
    baseline, _ = _loo_mean(P.sum(-1) / n, batch.group_ids)
    adv = (_reverse_cumsum((P - baseline[:, None]) * mask) + _outcome_rloo(batch)[:, None]
           + _reverse_cumsum(_dense(batch)))
    adv = adv * mask
    if whiten:
        valid = mask > 0
        if int(valid.sum()) < 2:
            return torch.zeros_like(adv)
        adv = (adv - adv[valid].mean()) / (adv[valid].std() + eps) * mask
    return adv


@ADVANTAGES.register("pure_min", paper="Stop Summation: Min-Form Credit Assignment Is All Process Reward Model "
                     "Needs for Reasoning (PURE)", arxiv="2504.15275",
                     summary="min-form credit: softmin-weighted step rewards, per-token RLOO baseline, returns-to-go",
                     needs=("step_rewards",))
def pure_min(batch: RolloutBatch, *, temperature: float = 0.1) -> torch.Tensor:
    """PURE: min-form credit assignment of process rewards.

        w_{i,k}  = softmax_k(-PR_{i,k} / temperature)          over the steps of completion i
        PR'_{i,k} = w_{i,k} * PR_{i,k}                          (sum_k PR'_{i,k} -> min_k PR_{i,k} as T -> 0)
        b_i      = sum_{j != i} sum_k PR'_{j,k} / sum_{j != i} n_j       (others' reward per token)
        R_{i,t}  = PR'_{i,k} - b_i * len_k  at e_k,  + (r_i - 1/(K-1) sum_{j != i} r_j) at the last
                   token,  + d_{i,t}
        A_{i,t}  = sum_{s >= t} R_{i,s} m_{i,s}                  (gamma = 1, no whitening)

    len_k = e_k - e_{k-1} is the number of tokens of step k (e_{-1} = -1). A summed return would
    let a policy farm many high-scoring steps; the softmin keeps the return near the worst step.
    temperature 0.1 and the per-token baseline are PURE's (its code; the per-step baseline favours
    fewer, longer steps). PURE also zeroes the advantage on separator tokens; not done here.
    With zero step rewards (and no dense rewards) this equals `rloo`.
    """
    if temperature <= 0:
        raise ValueError(f"pure_min: temperature must be > 0, got {temperature}")
    mask = batch.loss_mask.float()
    B, T = mask.shape
    steps, ends = _steps(batch)
    weighted = []
    for s in steps:
        pr = torch.tensor(s, dtype=torch.float64)
        weighted.append((torch.softmax(-pr / temperature, 0) * pr).tolist() if len(s) else [])
    per_token = torch.tensor([sum(w) for w in weighted], dtype=torch.float32)
    n = mask.sum(-1)
    _, inv = torch.unique(batch.group_ids.cpu(), return_inverse=True)
    G = int(inv.max()) + 1 if B else 0
    n = n.cpu()
    tot_r = torch.zeros(G).index_add_(0, inv, per_token)
    tot_n = torch.zeros(G).index_add_(0, inv, n)
    others_n = tot_n[inv] - n
    baseline = torch.where(others_n > 0, (tot_r[inv] - per_token) / others_n.clamp(min=1), torch.zeros_like(n))
    R = torch.zeros(B, T)
    for i, (w, e) in enumerate(zip(weighted, ends)):
        prev = -1
        for value, end in zip(w, e):
            R[i, end] += value - float(baseline[i]) * (end - prev)
            prev = end
    R = R.to(mask.device)
    last = (batch.completion_mask.sum(-1) - 1).clamp(min=0).long()
    R[torch.arange(B, device=mask.device), last] += _outcome_rloo(batch)
    R = R + _dense(batch)
    return _reverse_cumsum(R * mask) * mask
