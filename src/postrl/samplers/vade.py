"""VADE: Thompson-sample each prompt's pass rate, take the prompts whose groups will vary most."""

from __future__ import annotations

from postrl.samplers.base import SAMPLERS
from postrl.samplers.beta import BetaSampler
from postrl.samplers.pick import check_param, smallest

NAME = "vade"


@SAMPLERS.register(NAME, paper="VADE: Variance-Aware Dynamic Sampling via Online Sample-Level Difficulty "
                   "Estimation for Multimodal RL", arxiv="2511.18902",
                   summary="Beta posterior per prompt, Thompson draw p~, pick the k largest p~(1-p~); "
                           "two-scale decay toward the prior")
class Vade(BetaSampler):
    """Variance-aware dynamic sampling with online per-prompt difficulty estimates.

        posterior:   p_i ~ Beta(alpha_i, beta_i),   prior Beta(alpha0, beta0) = Beta(1, 1)
        every step, every visited prompt (slow scale):
                     alpha_i <- gamma alpha_i + (1 - gamma) alpha0      (beta_i likewise, gamma = step_decay)
        the step's prompts (fast scale), then the evidence of their n completions:
                     alpha_i <- lam alpha_i + (1 - lam) alpha0 + s_i    (lam = visit_decay)
                     beta_i  <- lam beta_i  + (1 - lam) beta0  + f_i    (s_i passes, f_i = n - s_i failures)
        selection:   draw p~_i ~ Beta(alpha_i, beta_i) for every prompt (Thompson sampling),
                     score_i = p~_i (1 - p~_i)      (the variance of a 0/1 reward at pass rate p~_i)
                     batch = the k prompts with the largest score (ties: lower row first)

    A group whose rewards are all equal has zero group-relative advantage; the expected reward
    variance p(1 - p) of a prompt is the signal its group can carry, largest at p = 1/2, and the
    Thompson draw explores prompts whose pass rate is still uncertain (an unseen prompt's draw is
    uniform on [0, 1]). Nothing is generated to select: only past groups are used.
    Not confirmed against the paper's text (its body and code were not available to us): the
    exact information-gain expression (p~(1 - p~) is the abstract's "variance-aware" reading) and
    the form and constants of the "two-scale prior decay"; ours shrinks every statistic a little
    each step (step_decay = 0.99, stale because the policy moved) and a revisited prompt's old
    evidence more (visit_decay = 0.5) before its new group is added. Threshold 1.0 turns the
    built-in 0/1 verifier rewards into pass/fail. k must not exceed the dataset size. State: the
    draw counter and alpha, beta of the visited prompts.
    """

    NAME = NAME

    def __init__(self, dataset_size: int, seed: int = 0, *, alpha0: float = 1.0, beta0: float = 1.0,
                 step_decay: float = 0.99, visit_decay: float = 0.5, threshold: float = 1.0):
        super().__init__(dataset_size, seed, alpha0=alpha0, beta0=beta0, threshold=threshold)
        check_param(NAME, "alpha0", alpha0, alpha0 > 0, "> 0 (a Beta prior parameter)")
        check_param(NAME, "beta0", beta0, beta0 > 0, "> 0 (a Beta prior parameter)")
        check_param(NAME, "step_decay", step_decay, 0.0 <= step_decay <= 1.0,
                    "in [0, 1] (the share of the evidence kept per step; 1 never forgets)")
        check_param(NAME, "visit_decay", visit_decay, 0.0 <= visit_decay <= 1.0,
                    "in [0, 1] (the share of a revisited prompt's evidence kept; 1 never forgets)")
        self.step_decay, self.visit_decay = step_decay, visit_decay

    def next(self, k: int) -> list[int]:
        rng = self.draw_rng(k)
        p = self.table.thompson(list(range(self.dataset_size)), rng)
        return smallest([-q * (1.0 - q) for q in p], k)

    def update(self, indices: list[int], rewards: list[list[float]]) -> None:
        t = self.table
        for i in t.touched:
            t.shrink(i, self.step_decay, t.alpha0, t.beta0)
        self.observe(indices, rewards, self.visit_decay, t.alpha0, t.beta0)
