"""Losses that turn RL into a supervised-style objective: NFT, PACS, Reg-GRPO.

Each fits a likelihood (NFT), a classifier (PACS) or a regression (Reg-GRPO) whose gradient is
a policy gradient. All three compare the completions of one prompt, so their entries need
"groups": every micro-batch holds whole groups and `inputs.rewards` / `inputs.group_ids` are set.

PACS and Reg-GRPO are sequence-level: a completion's loss depends on whole-sequence log-prob
sums. Such a loss is written on every loss-mask token of its completion, so the aggregation
`seq_mean_token_mean` (per-sequence token mean, then mean over sequences) reproduces the
paper's mean over completions exactly; `token_mean` would weight completions by their length.

The helpers at the end (`need_groups`, `group_index`, `group_mean`, `same_group`, `seq_sum`,
`on_tokens`) are shared with `losses_entropy` and `losses_sequence`.
"""

from __future__ import annotations

import torch

from postrl.algorithms.policy_losses import LossInputs, LossOutput, masked_mean
from postrl.algorithms.registries import POLICY_LOSSES


@POLICY_LOSSES.register("nft", paper="Bridging Supervised Learning and Reinforcement Learning in Math "
                        "Reasoning (Negative-aware Fine-Tuning)", arxiv="2505.18116",
                        summary="MLE on correct answers, implicit negative policy on wrong ones", needs=("groups",))
def nft(inp: LossInputs, *, eps: float = 1.0, rate_clip: float = 0.02, neg_weight: float = 1.0,
        max_log_ratio: float = 10.0) -> LossOutput:
    """Negative-aware Fine-Tuning: likelihood on positives, implicit negative policy on negatives.

        R_t   = pi_theta(y_t) / pi_old(y_t)                   (log-ratio capped at max_log_ratio)
        r_q   = mean correctness of the prompt's group, clipped to [rate_clip, 1 - rate_clip]
        l_t   = (1 - r_q) * [ -r log R_t - neg_weight (1 - r) log max_v((1 - r_q R_t) / (1 - r_q), eps) ]

    r is the completion's correctness (`inputs.rewards`, in [0, 1]; soft labels mix the two
    terms). pi_neg = (pi_old - r_q pi_theta) / (1 - r_q) is the implicit negative policy, so
    maximising its likelihood on wrong answers pushes pi_theta down on them. max_v(x, eps) takes
    the value max(x, eps) but passes the gradient of x (straight-through), which keeps the log
    finite and bounds the negative gradient. The prompt weight (1 - r_q) makes the on-policy
    gradient (R = 1) equal to Dr. GRPO's: -(r - r_q) grad log pi (paper Prop. 4.2, NFT equals
    GRPO on-policy). Defaults are the official 7B script (NVlabs/NFT train_7B.sh and dp_actor.py):
    clamp_negative (eps) = 1.0, correct_rate clipped to [0.02, 0.98], normalize=1 (the
    (1 - r_q) weight), neg_weight = 1 (0 gives rejection-sampling fine-tuning), ratio exponent
    capped at 10. The paper's token-level ratio (ratio_type="token") is used.

    Edge cases: a group whose labels are all equal (all right, all wrong, or a group of one)
    carries no contrast: its loss is 0 (the official code filters such prompts out). Masked
    tokens get loss 0 and no gradient.
    """
    if eps <= 0:
        raise ValueError(f"nft: eps must be > 0 (it floors the negative likelihood before the log), got {eps}")
    rewards, idx, n = need_groups(inp, "nft")
    r = _unit_labels(rewards, "nft")
    mask = inp.mask > 0
    rate = group_mean(r, idx, n)
    varied = (group_max(r, idx, n) - group_min(r, idx, n)) > 0  # a group with both kinds of answer
    rq = rate.clamp(rate_clip, 1.0 - rate_clip)[:, None]
    log_ratio = torch.where(mask, inp.logprobs - inp.old_logprobs, torch.zeros_like(inp.logprobs))
    ratio = torch.exp(log_ratio.clamp(max=max_log_ratio))
    pos = -torch.log(ratio)
    proxy = (1.0 - rq * ratio) / (1.0 - rq)
    neg = -torch.log(proxy + (proxy.clamp(min=eps) - proxy).detach())  # max_v: clipped value, raw gradient
    weight = ((1.0 - rq) * varied[:, None]) * mask
    lab = r[:, None]
    loss = weight * (lab * pos + neg_weight * (1.0 - lab) * neg)
    with torch.no_grad():
        metrics = {"nft_correct_rate": rate.mean(),
                   "nft_neg_clip_frac": masked_mean(((proxy < eps) & (lab < 1)).float(), inp.mask),
                   "nft_skipped_frac": (~varied).float().mean(),
                   "ratio_mean": masked_mean(ratio, inp.mask)}
    return LossOutput(loss, metrics)


@POLICY_LOSSES.register("pacs", paper="Implicit Actor Critic Coupling via a Supervised Learning Framework "
                        "for RLVR (PACS)", arxiv="2509.02522",
                        summary="BCE of sigma(RLOO-centred beta*log-ratio) against the 0/1 reward",
                        needs=("groups", "reference"))
def pacs(inp: LossInputs, *, beta: float = 1.0, anchor: str = "reference",
         balance_classes: bool = True) -> LossOutput:
    """PACS: the outcome reward is a label, predicted from an implicit reward of the policy.

        r_hat_i = beta * sum_t [log pi_theta(y_it) - log pi_anchor(y_it)]
        psi_i   = r_hat_i - 1/(G-1) sum_{j != i} r_hat_j             (RLOO within the group)
        l_i     = w_i * BCE(sigmoid(psi_i), r_i)

    The paper's anchor is pi_ref (`anchor="reference"`, needs reference log-probs); the official
    code (ritzz-ai/PACS pacs_core_algos.compute_reward) uses the rollout policy's log-probs,
    `anchor="old"`. w_i is the class-balanced weight n_G / (n_classes * n_label) within the
    group (official `use_weight=True, weight_mode=question`), 1 when the group has one class.
    beta = 1 is the official script (pacs_beta_1.0.sh; beta = 2 is the other one). With
    anchor="old" at the first update (psi = 0) the gradient is exactly REINFORCE with RLOO
    advantages scaled by beta: dL/d log pi(y_it) = -beta (r_i - mean_{j!=i} r_j) for unit weights.

    Sequence-level: l_i is written on every loss-mask token of completion i, so
    `loss_agg: seq_mean_token_mean` gives the paper's mean over completions (BCEWithLogitsLoss
    mean). Labels must lie in [0, 1] (a 0/1 verifier). A group of one has no RLOO baseline: its
    loss is 0. A group with all-equal labels keeps its loss, but at psi = 0 its gradient is zero
    (the centred scores sum to zero).
    """
    rewards, idx, n = need_groups(inp, "pacs")
    y = _unit_labels(rewards, "pacs")
    if anchor == "reference":
        if inp.ref_logprobs is None:
            raise ValueError("pacs (anchor='reference') needs inputs.ref_logprobs: the trainer computes them "
                             "because the entry needs 'reference'; when calling the loss directly pass "
                             "ref_logprobs, or set algorithm.loss_kwargs.anchor: old")
        base = inp.ref_logprobs
    elif anchor == "old":
        base = inp.old_logprobs
    else:
        raise ValueError(f"pacs: anchor must be 'reference' or 'old', got {anchor!r}")
    mask = inp.mask > 0
    r_hat = beta * seq_sum(inp.logprobs - base, mask)
    count = group_count(idx, n)
    loo_mean = (group_sum(r_hat, idx, n) - r_hat) / (count - 1).clamp(min=1)
    psi = torch.where(count > 1, r_hat - loo_mean, torch.zeros_like(r_hat))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(psi, y.to(psi.dtype), reduction="none")
    w = _balanced_weights(y, idx, n) if balance_classes else torch.ones_like(y)
    per_seq = torch.where(count > 1, w * bce, torch.zeros_like(bce))
    with torch.no_grad():
        metrics = {"pacs_psi_mean": psi.abs().mean(),
                   "pacs_acc": ((psi > 0).float() == (y > 0.5).float()).float().mean(),
                   "pacs_bce": bce.mean()}
    return LossOutput(on_tokens(per_seq, inp.mask), metrics)


@POLICY_LOSSES.register("reg_grpo", paper="DeepVideo-R1: Video Reinforcement Fine-Tuning via "
                        "Difficulty-aware Regressive GRPO", arxiv="2506.07464",
                        summary="regress the policy-implied normalised log-ratio onto the GRPO advantage",
                        needs=("groups",))
def reg_grpo(inp: LossInputs, *, eps: float = 1e-4) -> LossOutput:
    """Regressive GRPO (sec. 3.2, appendix A.4): predict the group-normalised advantage, no clip or min.

        A_i       = (R_i - mean_G R) / std_G R                       (GRPO's target advantage)
        rho_i     = log pi_theta(y_i) / pi_old(y_i) = sum_t [log pi_theta - log pi_old]
        A_theta_i = (rho_i - mean_G rho) / std_G rho                 (the policy's predicted advantage)
        l_i       = (A_i - A_theta_i)^2

    The optimum of the KL(pi || pi_old)-constrained objective has R = lambda log(pi*/pi_old) +
    lambda log Z; normalising within the group cancels both lambda and Z, which is why the
    regressed quantity is the normalised log-ratio (appendix A.3). std is the unbiased group
    std; for A_i, eps is added to std as in GRPO, for A_theta it enters as sqrt(var + eps^2), which
    keeps the gradient finite when all rho are equal (at the first update rho = 0 everywhere,
    and the gradient is then -2 A_i / eps * grad rho_i: scale-free, so use gradient clipping).
    The target comes from `inputs.rewards` (token_rewards such as KL-in-reward are not part of
    it); the paper adds a reference KL (coefficient 0.1): use algorithm.kl_coef.

    Sequence-level: l_i sits on every loss-mask token, use `loss_agg: seq_mean_token_mean`.
    A group of one has loss 0; all-equal rewards give target 0 (the regression then pulls the
    group's log-ratios together).
    """
    rewards, idx, n = need_groups(inp, "reg_grpo")
    mask = inp.mask > 0
    r = rewards.to(inp.logprobs.dtype)
    count = group_count(idx, n)
    target = (r - group_mean(r, idx, n)) / (group_std(r, idx, n) + eps)
    rho = seq_sum(inp.logprobs - inp.old_logprobs, mask)
    rho_c = rho - group_mean(rho, idx, n)
    var = group_sum(rho_c.square(), idx, n) / (count - 1).clamp(min=1)
    pred = rho_c / torch.sqrt(var + eps * eps)
    per_seq = torch.where(count > 1, (target.detach() - pred).square(), torch.zeros_like(pred))
    with torch.no_grad():
        metrics = {"reg_grpo_mse": per_seq.mean(), "reg_grpo_rho_abs": rho.abs().mean()}
    return LossOutput(on_tokens(per_seq, inp.mask), metrics)


# ---------------------------------------------------------------------------- shared helpers
def group_index(group_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Dense group index 0..n-1 per row ([B]) and the number of groups n."""
    uniq, inv = torch.unique(group_ids, return_inverse=True)
    return inv, uniq.numel()


def group_sum(x_B: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
    """Per-row sum of x over the row's group (differentiable)."""
    return torch.zeros(n, dtype=x_B.dtype, device=x_B.device).index_add(0, idx, x_B)[idx]


def group_count(idx: torch.Tensor, n: int) -> torch.Tensor:
    return group_sum(torch.ones(idx.shape[0], device=idx.device), idx, n)


def group_mean(x_B: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
    return group_sum(x_B, idx, n) / group_count(idx, n).to(x_B.dtype)


def group_std(x_B: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
    """Unbiased group std per row (0 for a group of one), as `advantages.grpo` uses."""
    count = group_count(idx, n).to(x_B.dtype)
    var = group_sum((x_B - group_mean(x_B, idx, n)).square(), idx, n) / (count - 1).clamp(min=1)
    return var.sqrt()


def group_max(x_B: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
    out = torch.full((n,), float("-inf"), dtype=x_B.dtype, device=x_B.device)
    return out.scatter_reduce(0, idx, x_B, "amax")[idx]


def group_min(x_B: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
    return -group_max(-x_B, idx, n)


def same_group(idx: torch.Tensor) -> torch.Tensor:
    """[B, B] bool: rows i != j of one group (the pairs a pairwise loss compares)."""
    eye = torch.eye(idx.shape[0], dtype=torch.bool, device=idx.device)
    return (idx[:, None] == idx[None, :]) & ~eye


def seq_sum(x_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """Sum over loss-mask tokens; `where`, not a product, so NaN/inf on padding cannot leak."""
    return torch.where(mask_BT > 0, x_BT, torch.zeros_like(x_BT)).sum(-1)


def on_tokens(per_seq_B: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """Write a per-sequence loss on each loss-mask token (0 elsewhere): seq_mean_token_mean of
    the result is the mean of per_seq over sequences with at least one token."""
    return per_seq_B[:, None] * (mask_BT > 0).to(per_seq_B.dtype)


def need_groups(inp: LossInputs, name: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    if inp.rewards is None or inp.group_ids is None:
        missing = "inputs.rewards" if inp.rewards is None else "inputs.group_ids"
        raise ValueError(f"{name} needs {missing}: the learner sets rewards and group_ids for losses whose "
                         "entry needs 'groups'; score the batch before training, or pass them when calling "
                         "the loss directly")
    idx, n = group_index(inp.group_ids)
    return inp.rewards, idx, n


def _unit_labels(rewards: torch.Tensor, name: str) -> torch.Tensor:
    # one host sync per micro-batch; a silent clamp of a reward of 5 would train on the wrong label
    if bool(((rewards < 0) | (rewards > 1)).any()):
        raise ValueError(f"{name} reads rewards as correctness labels in [0, 1], got values outside; use a "
                         "0/1 verifier reward (e.g. rewards: [{name: exact_match}]) or rescale it")
    return rewards.float()


def _balanced_weights(y: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
    """sklearn's 'balanced' class weights within each group: n_G / (n_classes * n_label)."""
    same_label = (idx[:, None] == idx[None, :]) & (y[:, None] == y[None, :])
    n_label = same_label.sum(-1).to(y.dtype)  # rows of my group with my label
    count = group_count(idx, n).to(y.dtype)
    n_classes = group_sum(1.0 / n_label, idx, n)  # each class contributes n_label * 1/n_label = 1
    w = count / (n_classes * n_label)
    return torch.where(n_classes.round() > 1, w, torch.ones_like(w))
