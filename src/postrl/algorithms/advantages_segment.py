"""Segment-level advantages from Monte-Carlo state values: SPO-chain.

The estimator reads the segment starts and state values that `algorithms/segment_mc.py` wrote
into `batch.metadata` (its registry entry needs "mc_values", so the trainer runs the extra
rollouts first) and turns value differences into per-token advantages.
"""

from __future__ import annotations

import torch

from postrl.algorithms.registries import ADVANTAGES
from postrl.algorithms.segment_mc import low_probability
from postrl.rollout.batch import RolloutBatch


@ADVANTAGES.register("segment_spo", paper="Segment Policy Optimization: Effective Segment-Level Credit Assignment "
                     "in RL for Large Language Models", arxiv="2505.23564", needs=("mc_values",),
                     summary="SPO-chain: segments cut at low-probability tokens, A = V(s_k+1) - V(s_k) from "
                             "Monte-Carlo rollouts, on the low-probability tokens only")
def segment_spo(batch: RolloutBatch, *, threshold: float = 0.9, cutpoint_interval: int = 5,
                max_segments: int | None = None, mc_samples: int = 9, prob_mask: bool = True) -> torch.Tensor:
    """SPO-chain (sec. 4): cut-point partition, chain-based MC values, probability mask.

        U       = {t : pi(y_t | s_t) < threshold}                      cut points (low-probability tokens)
        t_k     = U[k * cutpoint_interval]                             segment k = [t_k, t_k+1)
        V(s_t)  = 1/N sum_j R(x, [y_<t, tau_j]),  tau_j ~ pi(.|s_t)    N = mc_samples, V(s_T) = R(x, y)
        A_k     = V(s_t_k+1) - V(s_t_k)                                (eq. 2)
        A_t     = A_k * M_t,  M_t = 1[pi(y_t | s_t) < threshold]       t in segment k (probability mask)

    Each segment holds `cutpoint_interval` low-probability tokens and starts at one (the last
    segment holds the remainder); `max_segments` caps the count by spreading the cut points
    evenly (the paper's fixed-K partition). Tokens before the first cut point get 0 (they are
    all high-probability, so masked anyway), as does every token of a row without cut points.
    `prob_mask=False` gives A_k to every token of segment k (the paper's ablation).
    Defaults are the paper's SPO-chain (int5) setting (App. H: cutpoint interval 5, 9 MC
    samples, probability-mask threshold 0.9) and match the official code
    (AIFrameResearch/SPO, math_episode_generator_with_mc_advantages.py: cut points
    `where(prob < 0.9)[::cutpoint_interval]`, V at the state before each, the trajectory's
    score at the end, advantages back-filled over each segment and zeroed where prob > 0.9).

    Deviations: probabilities are the sampling engine's behaviour probabilities (the official
    code recomputes them with the old policy; equal on-policy up to numerics); a continuation
    cut at the length budget is scored by the reward functions like any completion (the official
    code gives it the unfinished-response penalty); the masked loss is normalised by the
    configured `loss_agg` over all loss tokens, where the paper divides by the number of
    unmasked tokens Z (so steps are smaller by Z/N; raise the learning rate to match).
    Dense token rewards (a KL penalty in the reward, process rewards) are not part of the MC
    values and are refused.
    """
    cuts, values = batch.metadata.get("segment_cuts"), batch.metadata.get("segment_values")
    if cuts is None or values is None:
        raise ValueError("segment_spo needs batch.metadata['segment_cuts'] and ['segment_values'] from "
                         "algorithms.segment_mc.estimate_segment_values (the trainer runs it for estimators that "
                         "need 'mc_values')")
    if batch.token_rewards is not None:
        raise ValueError("segment_spo values states by outcome reward only; drop dense token rewards "
                         "(set algorithm.kl_in_reward=false)")
    if batch.rewards is None:
        raise ValueError("advantage estimation needs batch.rewards; score the batch first")
    B, T = batch.completion_ids.shape
    adv = torch.zeros(B, T)
    lengths = batch.completion_mask.sum(-1).tolist()
    for i in range(B):
        if len(cuts[i]) != len(values[i]):
            raise ValueError(f"row {i}: {len(cuts[i])} segment starts but {len(values[i])} values")
        ends = list(cuts[i][1:]) + [lengths[i]]
        end_values = list(values[i][1:]) + [float(batch.rewards[i])]
        for start, end, v0, v1 in zip(cuts[i], ends, values[i], end_values):
            adv[i, start:end] = v1 - v0
    if prob_mask:
        adv = adv * low_probability(batch, threshold)
    return adv * batch.loss_mask
