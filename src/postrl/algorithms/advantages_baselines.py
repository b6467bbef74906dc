"""Outcome-reward advantage estimators that change the baseline or the normalisation.

Same contract as `advantages.py` (whose helpers `sequence_returns`, `group_stats`, `broadcast`,
`grpo` and `reinforce_pp` are reused): `fn(batch, **hparams) -> [B, T]`, zero wherever
`loss_mask` is 0, NaN-free. What differs per method is the baseline subtracted from the
sequence return (length-weighted, Beta-tracked, stratified) or the scale it is divided by
(Beta density, batch std, semantic entropy, the closed-form pass@k advantage).
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

import torch

from postrl.algorithms.advantages import broadcast, group_stats, grpo, reinforce_pp, sequence_returns
from postrl.algorithms.registries import ADVANTAGES
from postrl.rewards.builtin import completion_text
from postrl.rollout.batch import RolloutBatch


def _pop_std(std: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Population std (divide by n) from `group_stats`' unbiased one."""
    return std * torch.sqrt((count - 1).clamp(min=0) / count.clamp(min=1))


@ADVANTAGES.register("opo", paper="On-Policy RL with Optimal Reward Baseline", arxiv="2505.23585",
                     summary="length-weighted group baseline: r_i - sum_j l_j r_j / sum_j l_j")
def opo(batch: RolloutBatch) -> torch.Tensor:
    """OPO: subtract the variance-minimising baseline, a length-weighted group mean.

        b*    = E[|grad log pi(y|x)|^2 r] / E[|grad log pi(y|x)|^2],   |grad log pi(y|x)|^2 ~ l_y
        b     = sum_j l_j r_j / sum_j l_j            over the K completions of prompt x
        A_i,t = r_i - b                              no std scaling (as the paper and verl's `opo`)

    l_j counts the tokens the policy generated (`loss_mask`), i.e. the tokens carrying gradient.
    A group of one gets b = r, so A = 0 (verl uses b = 0 there); equal rewards give A = 0.
    Shift-invariant: b moves with the rewards.
    """
    r = sequence_returns(batch)
    lengths = batch.loss_mask.sum(-1).to(r.dtype)
    mean_lr, _, _ = group_stats(lengths * r, batch.group_ids)
    mean_l, _, _ = group_stats(lengths, batch.group_ids)
    baseline = mean_lr / mean_l.clamp(min=1e-12)  # a group with no generated tokens is masked anyway
    return broadcast(r - baseline, batch)


@ADVANTAGES.register("bnpo", paper="BNPO: Beta Normalization Policy Optimization", arxiv="2506.02864",
                     summary="binary-reward advantage (R - p) / Beta-pdf(p; alpha, beta), alpha, beta from the batch")
def bnpo(batch: RolloutBatch, *, reward_min: float = 0.0, reward_max: float = 1.0,
         max_weight: float = 1e6) -> torch.Tensor:
    """BNPO: normalise R - p by a Beta density whose parameters track the batch's success rates.

        R~    = (R - reward_min) / (reward_max - reward_min)        (binary rewards: R~ = R)
        p(q)  = mean of R~ over the group of q                      (Monte-Carlo estimate)
        a, b  = method-of-moments Beta fit to {p(q)} over the batch's groups:
                c = m(1 - m)/v - 1,  a = c m,  b = c (1 - m)        (m, v: mean, unbiased var)
        alpha = max(1 + a/3, 1),  beta = max(1 + b/3, 1)            (the variance-optimal choice)
        A     = (R~ - p) / f(p; alpha, beta),  f = Beta pdf,  1/f clipped to <= max_weight

    alpha = beta = 1 is REINFORCE with baseline; alpha = beta = 3/2 gives A = (pi/8)(R - p)/std_pop,
    i.e. GRPO up to a constant. Defaults and the clip follow the official code
    (github.com/changyi7231/BNPO, `compute_bnpo_outcome_advantage`). Edge cases: p in {0, 1}
    (all answers wrong or all right) gives A = 0, as R~ = p there, without evaluating 1/f(0);
    groups of one give A = 0 and are left out of the moments (the official code sets their
    p = 0); with fewer than two groups, zero variance, or m in {0, 1} the fit is undefined and
    alpha = beta = 1 is used. The paper's advantage decomposition for multi-part rewards is not
    implemented (the batch holds only the summed reward). Rewards outside [reward_min,
    reward_max] are an error.
    """
    if reward_max <= reward_min:
        raise ValueError(f"bnpo: reward_max ({reward_max}) must exceed reward_min ({reward_min})")
    r = (sequence_returns(batch).double() - reward_min) / (reward_max - reward_min)
    if ((r < -1e-6) | (r > 1 + 1e-6)).any():
        lo, hi = (float(x) * (reward_max - reward_min) + reward_min for x in (r.min(), r.max()))
        raise ValueError(f"bnpo: rewards must lie in [reward_min, reward_max] = [{reward_min}, {reward_max}] "
                         f"(got {lo:.4g}..{hi:.4g}); set reward_min/reward_max to the reward's range")
    r = r.clamp(0.0, 1.0)
    p, _, count = group_stats(r, batch.group_ids)
    inner = (count > 1) & (p > 0) & (p < 1)
    # one p per group for the moments: the first row of each group that has more than one row
    _, inv = torch.unique(batch.group_ids, return_inverse=True)
    first = torch.full((int(inv.max()) + 1,), -1, dtype=torch.long).scatter_reduce(
        0, inv, torch.arange(len(inv)), "amin", include_self=False)
    p_G = p[first][count[first] > 1]
    alpha = beta = 1.0
    if p_G.numel() >= 2:
        m, v = float(p_G.mean()), float(p_G.var())
        if v > 0 and 0 < m < 1:
            c = m * (1 - m) / v - 1
            alpha, beta = max(1 + c * m / 3, 1.0), max(1 + c * (1 - m) / 3, 1.0)
    ps = p.clamp(1e-12, 1 - 1e-12)  # only rows in `inner` are used; keeps the log finite elsewhere
    log_pdf = ((alpha - 1) * ps.log() + (beta - 1) * (1 - ps).log()
               - (math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)))
    weight = torch.exp(-log_pdf).clamp(max=max_weight)
    adv = torch.where(inner, (r - p) * weight, torch.zeros_like(r))
    return broadcast(adv.float(), batch)


@ADVANTAGES.register("lite_ppo", paper="Part I: Tricks or Traps? A Deep Dive into RL for LLM Reasoning",
                     arxiv="2508.08221", summary="group-mean centring, batch-level std scaling (Lite PPO)")
def lite_ppo(batch: RolloutBatch, *, eps: float = 1e-6) -> torch.Tensor:
    """Lite PPO's advantage: centre on the group mean, scale by the std of the whole batch.

        A_i,t = (r_i - mean_group(r)) / (std_batch(r) + eps)

    std_batch is the unbiased std of all B sequence rewards (ROLL `reward_norm` with
    norm_mean_type=group, norm_std_type=batch; eps 1e-6 as there). The batch std does not blow up
    near-uniform groups the way GRPO's group std does. Pair with token-level loss aggregation
    (`token_mean`), the recipe's other half. Groups of one and equal rewards give 0; invariant to
    adding a constant to all rewards.
    """
    r = sequence_returns(batch)
    mean, _, _ = group_stats(r, batch.group_ids)
    std = r.std() if r.numel() > 1 else torch.zeros((), dtype=r.dtype)
    return broadcast((r - mean) / (std + eps), batch)


@ADVANTAGES.register("reinforce_pp_baseline", paper="REINFORCE++: Stabilizing Critic-Free Policy "
                     "Optimization with Global Normalization", arxiv="2501.03262",
                     summary="group-mean baseline, then token-level whitening over the batch (REINFORCE++-baseline)")
def reinforce_pp_baseline(batch: RolloutBatch, *, eps: float = 1e-8) -> torch.Tensor:
    """REINFORCE++ w/ baseline (k > 1 samples per prompt): group-mean baseline, global whitening.

        r'_i   = r_i - mean_group(r)                      (outcome reward only)
        G_i,t  = r'_i + sum_{s >= t} token_reward_i,s     (gamma = 1, as OpenRLHF forces)
        A_i,t  = (G_i,t - mean_batch(G)) / (std_batch(G) + eps)     over all valid tokens

    This is `reinforce_pp` applied to the group-centred outcome rewards, matching OpenRLHF's
    `reinforce_baseline` (centre per prompt, cumulative returns, then mean/std over all action
    tokens); OpenRLHF uses the population token std, `reinforce_pp` the unbiased one. The paper
    pairs this variant with a k2 KL term in the loss rather than in the reward; a KL placed in
    `token_rewards` is still honoured as a return-to-go. Because the batch mean is token-weighted,
    a group of equal rewards gets A = -mean/std, not 0 (longer completions weigh more); the
    result is unchanged by adding any constant to one group's rewards. A group of one is centred
    to 0 (verl keeps its raw reward). Fewer than two valid tokens, or an all-zero batch, give 0.
    """
    r = sequence_returns(batch)  # validates that rewards are there
    outcome = batch.rewards.to(r.dtype)
    mean, _, _ = group_stats(outcome, batch.group_ids)
    return reinforce_pp(replace(batch, rewards=outcome - mean), gamma=1.0, eps=eps)


def _normalised(r: torch.Tensor, ids: torch.Tensor, eps: float) -> torch.Tensor:
    mean, std, count = group_stats(r, ids)
    return torch.where(count > 1, (r - mean) / (_pop_std(std, count) + eps), torch.zeros_like(r))


@ADVANTAGES.register("stratified_grpo", paper="Stratified GRPO: Handling Structural Heterogeneity in "
                     "Reinforcement Learning of LLM Search Agents", arxiv="2510.06214",
                     summary="normalise within structural strata (e.g. number of tool calls), blended with GRPO")
def stratified_grpo(batch: RolloutBatch, *, stratum_key: str = "num_tool_calls", alpha: float = 0.8,
                    eps: float = 1e-6) -> torch.Tensor:
    """Stratified Advantage Normalization (SAN), linearly blended with the group-global estimate.

        B_k      = completions of one prompt with equal `batch.metadata[stratum_key]`
        A_SAN    = (r_i - mean(B_k)) / (std(B_k) + eps)           for tau_i in B_k
        A_GN     = (r_i - mean(group)) / (std(group) + eps)       (GRPO)
        A_i,t    = alpha A_SAN + (1 - alpha) A_GN

    Strata split each prompt's group (the paper's comparison is within the K trajectories of a
    prompt); std is the population std, under which SAN has unit variance within a stratum. The
    per-row key is read from `batch.metadata[stratum_key]`, which the agent environment must
    write (default `num_tool_calls`, the paper's main key: the number of search calls); any
    hashable value works, so placement or outcome of calls can be encoded too. alpha = 0.8 is my
    reading of the paper's setting, not confirmed from its text. A stratum of one contributes
    0 to the SAN part; equal rewards in a group give 0; shift-invariant.
    """
    if stratum_key not in batch.metadata:
        raise ValueError(f"stratified_grpo: batch.metadata has no {stratum_key!r} column (present: "
                         f"{', '.join(sorted(batch.metadata)) or 'none'}); the rollout must record one "
                         f"stratum key per completion, or set stratum_key to a column it does record")
    keys = batch.metadata[stratum_key]
    if len(keys) != batch.size:
        raise ValueError(f"stratified_grpo: metadata[{stratum_key!r}] has {len(keys)} values for {batch.size} rows")
    index: dict = {}
    strata = torch.tensor([index.setdefault((g, _hashable(k)), len(index))
                           for g, k in zip(batch.group_ids.tolist(), keys)])
    r = sequence_returns(batch)
    adv = alpha * _normalised(r, strata, eps) + (1 - alpha) * _normalised(r, batch.group_ids, eps)
    return broadcast(adv, batch)


def _hashable(v):
    try:
        hash(v)
        return v
    except TypeError:  # e.g. a list of tool names: compare by value
        return repr(v)


_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_TAG = re.compile(r"(?s)<answer>(.*?)</answer>")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


def final_answer(text: str) -> str | None:
    """The final answer of a completion, normalised for exact-match clustering (None: no answer).

    Takes the last `\\boxed{...}` (braces balanced), else the last `<answer>...</answer>`, else the
    last number; then drops `$`, spaces and a trailing period, lower-cases, and writes numbers in
    one form (`1,000` and `1000.0` -> `1000`).
    """
    found = None
    for m in _BOXED.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            found = text[m.end():i - 1]
    if found is None:
        tags = _ANSWER_TAG.findall(text)
        found = tags[-1] if tags else None
    if found is None:
        nums = _NUMBER.findall(text)
        found = nums[-1] if nums else None
    if found is None:
        return None
    s = re.sub(r"\s+", "", found.replace("$", "")).rstrip(".").lower()
    try:
        f = float(s.replace(",", ""))
        return str(int(f)) if f.is_integer() and abs(f) < 1e15 else repr(f)
    except ValueError:
        return s or None


@ADVANTAGES.register("seed_grpo", paper="SEED-GRPO: Semantic Entropy Enhanced GRPO for Uncertainty-Aware "
                     "Policy Optimization", arxiv="2505.12346",
                     summary="group advantage scaled down by the semantic entropy of the group's answers")
def seed_grpo(batch: RolloutBatch, *, alpha: float = 1.0, scale_by_std: bool = False,
              eps: float = 1e-6) -> torch.Tensor:
    """SEED-GRPO: shrink the advantage of prompts whose sampled answers disagree in meaning.

        SE(q)   = -sum_k (n_k / G) log(n_k / G)     clusters C_k of the G answers, n_k = |C_k|
        A^_i,t  = A_i * f(alpha SE(q) / SE_max),   f(x) = 1 - x (the paper's linear f),  SE_max = log G
        A_i     = r_i - mean_group(r)              (the paper's baseline; scale_by_std=True: GRPO)

    Clustering: two completions share a cluster when the answers `final_answer` extracts from
    `batch.metadata["completion_text"]` are equal strings (postrl.rewards has no answer extractor
    to reuse); a completion without an answer is a cluster of its own. The paper weights clusters
    by sequence probability; here each sample weighs 1/G (the Monte-Carlo form of the same
    entropy), which avoids underflowing sequence likelihoods. alpha = 1 is not the paper's value
    (not confirmed from its text); 0 <= alpha <= 1 keeps the scale in [1 - alpha, 1], so the
    sign of A is never flipped. One shared answer gives SE = 0 and plain A; groups of one and
    equal rewards give 0.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"seed_grpo: alpha must lie in [0, 1] (scale 1 - alpha*SE/SE_max), got {alpha}")
    texts = batch.metadata.get("completion_text")
    if texts is None or len(texts) != batch.size:
        raise ValueError("seed_grpo needs batch.metadata['completion_text'] (one decoded completion per row, "
                         "written by trainers.scoring.score_batch) to cluster answers")
    base = grpo(batch, eps=eps, scale_by_std=scale_by_std)
    clusters: dict[int, list] = {}
    for row, (g, t) in enumerate(zip(batch.group_ids.tolist(), texts)):
        answer = final_answer(completion_text(t))
        clusters.setdefault(g, []).append(answer if answer is not None else ("no answer", row))
    group_scale = {}
    for g, answers in clusters.items():
        n = len(answers)
        counts = [answers.count(a) for a in set(answers)]
        entropy = -sum(c / n * math.log(c / n) for c in counts)
        group_scale[g] = 1.0 - alpha * entropy / math.log(n) if n > 1 else 1.0
    scale = torch.tensor([group_scale[g] for g in batch.group_ids.tolist()], dtype=base.dtype)
    return base * scale[:, None]


@ADVANTAGES.register("pass_at_k", paper="Pass@k Training for Adaptively Balancing Exploration and "
                     "Exploitation of Large Reasoning Models", arxiv="2508.10751",
                     summary="closed-form advantage of the group's pass@k reward (binary rewards)")
def pass_at_k(batch: RolloutBatch, *, k: int = 4, threshold: float = 0.5, eps: float = 1e-6) -> torch.Tensor:
    """Pass@k Training with analytical derivation: the expected advantage under a pass@k reward.

        N = group size, N_neg = incorrect completions, C(n, m) = binomial coefficient
        R     = 1 - C(N_neg, k) / C(N, k)                  (group pass@k)
        sigma = sqrt(R (1 - R))
        A_pos = (1 - R) / (sigma + eps)
        A_neg = (1 - R - C(N_neg - 1, k - 1) / C(N - 1, k - 1)) / (sigma + eps)

    From the paper's README/`code/passk_adv.py` (github.com/RUCAIBox/Passk_Training), eps 1e-6
    as there. A completion is correct when its reward >= threshold (binary rewards map exactly).
    k = 1 is GRPO with the population std. The ratios are products, prod_i (N_neg - i)/(N - i),
    so no factorial overflows. All-correct, all-wrong, and groups where every k-subset already
    holds a correct answer give 0, so k must be smaller than every group (k = N would give 0
    always). k = 4 is my reading of the paper's main setting (unconfirmed); it needs n > 4.
    """
    if k < 1:
        raise ValueError(f"pass_at_k: k must be >= 1, got {k}")
    correct = sequence_returns(batch) >= threshold
    frac, _, count = group_stats(correct.double(), batch.group_ids)
    if int(count.min()) <= k:
        raise ValueError(f"pass_at_k: k={k} needs groups of more than k completions (the smallest has "
                         f"{int(count.min())}; with k >= N the advantage is always 0): lower k or raise rollout.n")
    n = count
    n_neg = torch.round(n * (1 - frac))
    all_fail = torch.ones_like(n)  # C(N_neg, k) / C(N, k)
    for i in range(k):
        all_fail = all_fail * (n_neg - i).clamp(min=0) / (n - i)
    rest_fail = torch.ones_like(n)  # C(N_neg - 1, k - 1) / C(N - 1, k - 1)
    for i in range(k - 1):
        rest_fail = rest_fail * (n_neg - 1 - i).clamp(min=0) / (n - 1 - i)
    pass_k = 1 - all_fail
    sigma = torch.sqrt((pass_k * (1 - pass_k)).clamp(min=0))
    adv = torch.where(correct, 1 - pass_k, 1 - pass_k - rest_fail) / (sigma + eps)
    return broadcast(adv.float(), batch)


@ADVANTAGES.register("spo_single_stream", paper="Single-stream Policy Optimization", arxiv="2509.13232",
                     summary="persistent per-prompt Beta value tracker as baseline, batch-normalised",
                     needs=("state",))
def spo_single_stream(batch: RolloutBatch, state: dict, *, rho: float = 0.96, init_alpha: float = 0.5,
                      init_beta: float = 0.5, eps: float = 1e-8) -> torch.Tensor:
    """SPO: a Beta-Bernoulli success tracker per prompt replaces the group baseline.

        v^(x)    = alpha_x / (alpha_x + beta_x)               (tracker before this step)
        A_i      = r_i - v^(x_i);   A_i,t = (A_i - mean_B(A)) / (std_B(A) + eps)
        after:   alpha_x <- rho alpha_x + sum_i r_i,  beta_x <- rho beta_x + sum_i (1 - r_i)

    The paper adapts rho = 2^(-D / D_half) (D: KL between the policy at the prompt's last visit
    and now, D_half = 0.06, rho clipped to [rho_min, 0.96]); computing D needs the old response
    re-scored by the current policy, which an estimator does not have, so rho is a fixed
    hyper-parameter, defaulting to the 0.96 ceiling (the value when the policy moves little).
    Unseen prompts start at alpha = beta = 0.5, the official code's prior without offline values
    (github.com/verl-project/verl-recipe `spo/spo_ray_trainer.py`); its offline initialisation
    from n0 samples of the initial policy is not done here. The tracker is updated after the
    advantages, once per prompt per step (decay once, then all of its rewards, clipped to
    [0, 1]); the paper uses one sample per prompt, where this is its rule exactly.
    State: state["spo_single_stream"][str(prompt_index)] = [alpha, beta] (JSON floats). A
    one-row batch, or equal A over the batch, gives 0.
    """
    if batch.prompt_index is None:
        raise ValueError("spo_single_stream needs batch.prompt_index (the dataset row of each completion)")
    tracker = state.setdefault("spo_single_stream", {})
    r = sequence_returns(batch).double()
    keys = [str(int(i)) for i in batch.prompt_index.tolist()]
    prior = [init_alpha, init_beta]
    ab = torch.tensor([tracker.get(key, prior) for key in keys], dtype=torch.float64)
    adv = r - ab[:, 0] / ab.sum(-1)
    adv = (adv - adv.mean()) / (adv.std() + eps) if adv.numel() > 1 else torch.zeros_like(adv)
    totals: dict[str, list[float]] = {}
    for key, ri in zip(keys, r.clamp(0.0, 1.0).tolist()):
        t = totals.setdefault(key, [0.0, 0.0])
        t[0] += ri
        t[1] += 1.0 - ri
    for key, (wins, losses) in totals.items():
        a, b = tracker.get(key, prior)
        tracker[key] = [rho * float(a) + wins, rho * float(b) + losses]
    return broadcast(adv.to(batch.loss_mask.dtype), batch)


@ADVANTAGES.register("gpg", paper="GPG: A Simple and Strong Reinforcement Learning Baseline for Model "
                     "Reasoning", arxiv="2504.02546",
                     summary="group-mean baseline scaled by B / (B - M), M = rows of zero-variance groups")
def gpg(batch: RolloutBatch, *, scale_by_std: bool = False, eps: float = 1e-6) -> torch.Tensor:
    """Group Policy Gradient: Dr. GRPO's advantage with the accurate-gradient-estimation factor.

        A_i   = (r_i - mean_group(r)) / F_norm,   F_norm = 1  (scale_by_std=True: std_group + eps)
        alpha = B / (B - M),   M = completions in groups whose rewards are all equal (A = 0)
        A_i,t = alpha A_i

    Zero-advantage groups still count in a token/sequence mean, shrinking the gradient of the
    rest; alpha undoes that, so it belongs to the advantage (the loss only averages). Defaults
    F_norm = 1 and alpha = B/(B - M) are the paper's best row (AMAP-ML/GPG README); its
    beta_th resampling of batches with few valid groups is a sampler matter, not done here.
    verl's `gpg` counts rewards != 0 instead of valid groups; this follows the paper. All groups
    invalid: alpha = 1 and A = 0; groups of one are invalid.
    """
    r = sequence_returns(batch)
    mean, std, count = group_stats(r, batch.group_ids)
    valid = (count > 1) & (std > 0)  # group_stats works in float64: equal rewards give std exactly 0
    adv = (r - mean) / (std + eps) if scale_by_std else r - mean
    adv = torch.where(valid, adv, torch.zeros_like(adv))
    n_valid = int(valid.sum())
    scale = batch.size / n_valid if n_valid else 1.0
    return broadcast(adv * scale, batch)
