"""SPO's prioritised sampling: draw prompts in proportion to the spread of their tracked pass rate."""

from __future__ import annotations

import math

from postrl.samplers.base import SAMPLERS
from postrl.samplers.beta import BetaSampler
from postrl.samplers.pick import check_param, weighted_sample

NAME = "spo_prioritized"


@SAMPLERS.register(NAME, paper="Single-stream Policy Optimization", arxiv="2509.13232",
                   summary="per-prompt Beta value tracker decayed by rho per visit; sample prompts "
                           "proportional to sqrt(v(1-v)) + eps, without replacement")
class SpoPrioritized(BetaSampler):
    """The adaptive curriculum of SPO: prioritised sampling from its per-prompt value tracker.

        tracker:  v_i = alpha_i / (alpha_i + beta_i),  alpha = beta = 0.5 before the first visit
        weight:   w_i = sqrt(v_i (1 - v_i)) + eps                          (eps = 0.05)
        batch:    k distinct prompts drawn without replacement, P(i first) = w_i / sum_j w_j
        update:   alpha_i <- rho alpha_i + s_i,   beta_i <- rho beta_i + f_i   (visited prompts only;
                  s_i passes and f_i = n - s_i failures of its n completions)

    sqrt(v(1 - v)) is the standard deviation of a 0/1 reward at pass rate v: prompts the policy
    always or never solves give no learning signal and are drawn rarely, while eps keeps every
    prompt reachable so its estimate can move. eps = 0.05 and the 0.5/0.5 prior are the official
    code's (github.com/verl-project/verl-recipe `spo/spo_ray_trainer.py`, EXPLORATION_EPSILON;
    prior without offline values); its offline initialisation from n0 samples is not done here.
    Deviation: the paper decays the tracker by rho = 2^(-D / D_half) with D the KL between the
    policy at the prompt's previous visit and now (D_half = 0.06, rho clipped to <= 0.96); a
    sampler sees no log-probs, so rho is a fixed hyper-parameter, 0.96 (the ceiling, the same
    default as the `spo_single_stream` advantage estimator). The official code draws the batch
    from a dataloader batch of candidates; here it is drawn from the whole dataset. The paper
    samples one completion per prompt (n = 1), where the update is its rule exactly. k must not
    exceed the dataset size. State: the draw counter and alpha, beta of the visited prompts.
    """

    NAME = NAME

    def __init__(self, dataset_size: int, seed: int = 0, *, rho: float = 0.96, eps: float = 0.05,
                 alpha0: float = 0.5, beta0: float = 0.5, threshold: float = 1.0):
        super().__init__(dataset_size, seed, alpha0=alpha0, beta0=beta0, threshold=threshold)
        check_param(NAME, "rho", rho, 0.0 <= rho <= 1.0, "in [0, 1] (the share of the tracker kept per visit)")
        check_param(NAME, "eps", eps, eps >= 0.0, ">= 0 (the exploration floor added to every weight)")
        check_param(NAME, "alpha0", alpha0, alpha0 > 0, "> 0 (the tracker's initial alpha)")
        check_param(NAME, "beta0", beta0, beta0 > 0, "> 0 (the tracker's initial beta)")
        self.rho, self.eps = rho, eps

    def weight(self, i: int) -> float:
        v = self.table.mean(i)
        return math.sqrt(v * (1.0 - v)) + self.eps

    def next(self, k: int) -> list[int]:
        rng = self.draw_rng(k)
        return weighted_sample([self.weight(i) for i in range(self.dataset_size)], k, rng)

    def update(self, indices: list[int], rewards: list[list[float]]) -> None:
        self.observe(indices, rewards, self.rho, 0.0, 0.0)
