"""Online difficulty bands: prefer prompts whose recent pass rate is neither ~0 nor ~1."""

from __future__ import annotations

from typing import Any

from postrl.samplers.base import SAMPLERS, Sampler
from postrl.samplers.beta import pass_fail
from postrl.samplers.pick import check_batch, check_param, draw_rng, weighted_sample

NAME = "pass_rate_curriculum"


@SAMPLERS.register(NAME, paper="Online Difficulty Filtering for Reasoning Oriented Reinforcement Learning",
                   arxiv="2504.03380",
                   summary="prefer prompts whose recent pass rate lies in [low, high]; explore unseen ones, "
                           "revisit the rest rarely")
class PassRateCurriculum(Sampler):
    """Difficulty bands from each prompt's own recent rollouts, chosen before generation.

        g_i = (1/n) sum_j [r_ij >= threshold]             pass rate of prompt i's group this step
        p_i <- g_i                                         first visit
        p_i <- (1 - ema) p_i + ema g_i                     later visits (exponential moving average)
        w_i = 1        if low <= p_i <= high               (in the band: informative)
        w_i = explore  if prompt i was never visited
        w_i = revisit  otherwise                           (too easy or too hard, for now)
        batch: k distinct prompts, drawn without replacement with P(i first) = w_i / sum_j w_j

    The paper (balanced online difficulty filtering) generates a group for every candidate and
    keeps the prompts whose pass rate lies in a band, because the expected improvement of a step
    is bounded below by the variance p(1 - p) of the pass rate. Here the band is applied before
    generation, to the estimate from the prompt's earlier groups, so no rollout is spent on the
    filter; `revisit` > 0 lets a prompt outside the band come back, so its estimate can move once
    the policy changes. Defaults low = 0.1, high = 0.9, ema = 0.5, explore = 1, revisit = 0.05 are
    ours, not the paper's. Without any history every prompt is unseen and the draw is uniform.
    k must not exceed the dataset size (a batch never repeats a prompt). State: the draw counter
    and the estimates of the visited prompts.
    """

    def __init__(self, dataset_size: int, seed: int = 0, *, low: float = 0.1, high: float = 0.9,
                 ema: float = 0.5, explore: float = 1.0, revisit: float = 0.05, threshold: float = 1.0):
        super().__init__(dataset_size, seed)
        check_param(NAME, "low", low, 0.0 <= low <= 1.0, "in [0, 1]")
        check_param(NAME, "high", high, low <= high <= 1.0, f"in [low={low}, 1]")
        check_param(NAME, "ema", ema, 0.0 < ema <= 1.0, "in (0, 1] (the weight of the newest pass rate)")
        check_param(NAME, "explore", explore, explore > 0.0, "> 0 (the weight of a never-visited prompt)")
        check_param(NAME, "revisit", revisit, 0.0 < revisit <= 1.0,
                    "in (0, 1] (the weight of a prompt outside the band, relative to 1 inside it)")
        self.low, self.high, self.ema, self.explore, self.revisit = low, high, ema, explore, revisit
        self.threshold = threshold
        self.rate: dict[int, float] = {}  # visited prompts only
        self.draws = 0

    def weight(self, i: int) -> float:
        p = self.rate.get(i)
        if p is None:
            return self.explore
        return 1.0 if self.low <= p <= self.high else self.revisit

    def next(self, k: int) -> list[int]:
        check_batch(NAME, k, self.dataset_size)
        rng = draw_rng(self.seed, self.draws)
        self.draws += 1
        return weighted_sample([self.weight(i) for i in range(self.dataset_size)], k, rng)

    def update(self, indices: list[int], rewards: list[list[float]]) -> None:
        for i, group in zip(indices, rewards):
            passes, fails = pass_fail(group, self.threshold)
            g = passes / (passes + fails)
            old = self.rate.get(i)
            self.rate[i] = g if old is None else (1.0 - self.ema) * old + self.ema * g

    def state_dict(self) -> dict[str, Any]:
        rows = sorted(self.rate)
        return {"draws": self.draws, "rows": rows, "rate": [self.rate[i] for i in rows]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rows = [int(i) for i in state["rows"]]
        if rows and max(rows) >= self.dataset_size:
            raise ValueError(f"{NAME}: the checkpoint's sampler state has a pass rate for row {max(rows) + 1} but the "
                             f"training set has {self.dataset_size} rows; resume with the same data settings")
        self.draws = int(state["draws"])
        self.rate = {i: float(p) for i, p in zip(rows, state["rate"])}
