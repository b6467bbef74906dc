"""MoPPS: a decayed Beta posterior per prompt; pick the candidates whose sampled pass rate is nearest the target."""

from __future__ import annotations

from postrl.samplers.base import SAMPLERS
from postrl.samplers.beta import BetaSampler
from postrl.samplers.pick import check_param, smallest

NAME = "mopps"


@SAMPLERS.register(NAME, paper="Can Prompt Difficulty be Online Predicted for Accelerating RL Finetuning of "
                   "Reasoning Models? (MoPPS, Model Predictive Prompt Selection)", arxiv="2507.04632",
                   summary="streaming Beta posterior per prompt with decay; Thompson-sample m*k candidates, "
                           "keep the k nearest the target pass rate")
class Mopps(BetaSampler):
    """Model Predictive Prompt Selection: a bandit over prompts whose arms are latent pass rates.

        candidates:  C = m k prompts drawn uniformly without replacement (m = candidate_ratio;
                     all prompts when m k >= dataset size)
        prediction:  p~_i ~ Beta(alpha_i, beta_i) for i in C               (posterior sampling)
        batch:       the k candidates with the smallest (p~_i - tau)^2    (tau = target; ties: earlier candidate)
        update:      alpha_i <- lam alpha_i + (1 - lam) alpha0 + s_i      (lam = decay; s_i passes of n)
                     beta_i  <- lam beta_i  + (1 - lam) beta0  + n - s_i

    The streaming update discounts old evidence toward the prior because the pass rate moves
    with the policy; no rollout is spent on selection. The update and top-k rule follow the
    authors' code (github.com/thu-rllab/MoPPS, `PosteriorSampler.train` / `sample_batch`
    strategy "topk", prior Beta(1, 1)). Not confirmed: the paper's defaults for the target
    (0.5 here: prompts near 1/2 carry the most signal), the decay lam (0.5 here) and the
    candidate ratio m (4 here; a public DeepScaleR launch script of the method uses 16). The
    authors' candidates come from a shuffled dataloader epoch; here each step draws a fresh
    uniform candidate set (the rule that ranks them is the same). Threshold 1.0 turns 0/1
    verifier rewards into pass/fail. k must not exceed the dataset size. State: the draw
    counter and alpha, beta of the visited prompts.
    """

    NAME = NAME

    def __init__(self, dataset_size: int, seed: int = 0, *, target: float = 0.5, decay: float = 0.5,
                 candidate_ratio: int = 4, alpha0: float = 1.0, beta0: float = 1.0, threshold: float = 1.0):
        super().__init__(dataset_size, seed, alpha0=alpha0, beta0=beta0, threshold=threshold)
        check_param(NAME, "target", target, 0.0 <= target <= 1.0, "a pass rate in [0, 1]")
        check_param(NAME, "decay", decay, 0.0 <= decay <= 1.0,
                    "in [0, 1] (the share of old evidence kept per visit; 1 never forgets)")
        check_param(NAME, "candidate_ratio", candidate_ratio, isinstance(candidate_ratio, int) and candidate_ratio >= 1,
                    "an integer >= 1 (candidates per batch slot)")
        check_param(NAME, "alpha0", alpha0, alpha0 > 0, "> 0 (a Beta prior parameter)")
        check_param(NAME, "beta0", beta0, beta0 > 0, "> 0 (a Beta prior parameter)")
        self.target, self.decay, self.candidate_ratio = target, decay, candidate_ratio

    def next(self, k: int) -> list[int]:
        rng = self.draw_rng(k)
        pool = rng.sample(range(self.dataset_size), min(self.candidate_ratio * k, self.dataset_size))
        p = self.table.thompson(pool, rng)
        return [pool[j] for j in smallest([(q - self.target) ** 2 for q in p], k)]

    def update(self, indices: list[int], rewards: list[list[float]]) -> None:
        self.observe(indices, rewards, self.decay, self.table.alpha0, self.table.beta0)
