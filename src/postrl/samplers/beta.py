"""Beta-Bernoulli bookkeeping shared by the posterior samplers (vade, mopps, spo_prioritized).

Each prompt i carries Beta(alpha_i, beta_i) over its pass rate. A step's group of n rewards
becomes s passes (reward >= threshold) and f = n - s failures, which are added to alpha and beta;
before that the samplers shrink old evidence toward an anchor (the prior, or zero), so statistics
gathered under an older policy fade. Only prompts that were ever updated differ from the prior,
so the state stores just those: plain JSON whose floats round-trip exactly.
"""

from __future__ import annotations

import random
from typing import Any

from postrl.samplers.base import Sampler
from postrl.samplers.pick import check_batch, draw_rng


def pass_fail(rewards: list[float], threshold: float) -> tuple[int, int]:
    """(passes, failures) of one prompt's completion rewards; a pass is reward >= threshold."""
    passes = sum(1 for r in rewards if r >= threshold)
    return passes, len(rewards) - passes


class BetaTable:
    """alpha, beta per prompt, starting at the prior (alpha0, beta0)."""

    def __init__(self, size: int, alpha0: float, beta0: float):
        self.size, self.alpha0, self.beta0 = size, float(alpha0), float(beta0)
        self.alpha = [self.alpha0] * size
        self.beta = [self.beta0] * size
        self.touched: set[int] = set()

    def shrink(self, i: int, keep: float, alpha_to: float, beta_to: float) -> None:
        """alpha_i <- keep * alpha_i + (1 - keep) * alpha_to (beta likewise): keep a share of the evidence."""
        self.alpha[i] = keep * self.alpha[i] + (1.0 - keep) * alpha_to
        self.beta[i] = keep * self.beta[i] + (1.0 - keep) * beta_to

    def add(self, i: int, passes: float, failures: float) -> None:
        self.alpha[i] += passes
        self.beta[i] += failures
        self.touched.add(i)

    def mean(self, i: int) -> float:
        return self.alpha[i] / (self.alpha[i] + self.beta[i])

    def thompson(self, indices: list[int], rng: random.Random) -> list[float]:
        """One draw p_i ~ Beta(alpha_i, beta_i) per index (posterior / Thompson sampling)."""
        return [rng.betavariate(self.alpha[i], self.beta[i]) for i in indices]

    def state_dict(self) -> dict[str, Any]:
        rows = sorted(self.touched)
        return {"rows": rows, "alpha": [self.alpha[i] for i in rows], "beta": [self.beta[i] for i in rows]}

    def load_state_dict(self, state: dict[str, Any], name: str) -> None:
        rows = [int(i) for i in state["rows"]]
        if rows and max(rows) >= self.size:
            raise ValueError(f"{name}: the checkpoint's sampler state has statistics for row {max(rows) + 1} but "
                             f"the training set has {self.size} rows; resume with the same data.source, split "
                             "and data settings as the checkpointed run")
        self.alpha, self.beta = [self.alpha0] * self.size, [self.beta0] * self.size
        for i, a, b in zip(rows, state["alpha"], state["beta"]):
            self.alpha[i], self.beta[i] = float(a), float(b)
        self.touched = set(rows)


class BetaSampler(Sampler):
    """What vade, mopps and spo_prioritized share: a `BetaTable`, a pass threshold, and a draw
    counter that seeds each `next` (so the state is the counter plus the table: resume is exact).
    Each subclass sets `NAME` and says how it shrinks old evidence and how it picks."""

    NAME = ""

    def __init__(self, dataset_size: int, seed: int, *, alpha0: float, beta0: float, threshold: float):
        super().__init__(dataset_size, seed)
        self.table = BetaTable(dataset_size, alpha0, beta0)
        self.threshold = threshold
        self.draws = 0

    def draw_rng(self, k: int) -> random.Random:
        """The random stream of this `next(k)` call (after checking k against the dataset size)."""
        check_batch(self.NAME, k, self.dataset_size)
        rng = draw_rng(self.seed, self.draws)
        self.draws += 1
        return rng

    def observe(self, indices: list[int], rewards: list[list[float]], keep: float, alpha_to: float,
                beta_to: float) -> None:
        """Per chosen prompt: shrink its evidence toward (alpha_to, beta_to), keeping `keep`, then add its group."""
        for i, group in zip(indices, rewards):
            self.table.shrink(i, keep, alpha_to, beta_to)
            self.table.add(i, *pass_fail(group, self.threshold))

    def state_dict(self) -> dict[str, Any]:
        return {"draws": self.draws, **self.table.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.draws = int(state["draws"])
        self.table.load_state_dict(state, self.NAME)
