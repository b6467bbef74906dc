"""XRPO: spend the rollout budget where it reduces uncertainty most, seed all-failed prompts with solved examples."""

from __future__ import annotations

import functools
import math
from typing import Any

from postrl.samplers.base import SAMPLERS, Addition
from postrl.samplers.pick import check_param
from postrl.samplers.uniform import Uniform

NAME = "xrpo"

XRPO_HINT = "\n\nHere are solved examples of other problems:\n{examples}Now solve the problem above."
XRPO_EXAMPLE = "Problem: {problem}\nSolution: {solution}\n"


def t_two_sided(t: float, df: int) -> float:
    """A(t | df) = P(|T| < t) for Student's t with integer df >= 1 (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(abs(t) / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:  # odd: (2/pi) [theta + sin cos (1 + 2/3 cos^2 + ... )]
        term, total = math.cos(theta), 0.0
        for k in range((df - 1) // 2):
            total += term
            term *= c2 * (2 * k + 2) / (2 * k + 3)
        return 2.0 / math.pi * (theta + s * total)
    term, total = 1.0, 0.0  # even: sin [1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ... ]
    for k in range(df // 2):
        total += term
        term *= c2 * (2 * k + 1) / (2 * k + 2)
    return s * total


@functools.lru_cache(maxsize=None)
def t_quantile(confidence: float, df: int) -> float:
    """t with P(|T| < t) = confidence, i.e. the (1 + confidence)/2 quantile t_{1-alpha/2, df} (bisection)."""
    lo, hi = 0.0, 1.0
    while t_two_sided(hi, df) < confidence:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_two_sided(mid, df) < confidence else (lo, mid)
    return (lo + hi) / 2


def half_width(std: float, n: int, confidence: float) -> float:
    """h(n) = t_{1-alpha/2, n-1} s / sqrt(n): the half-width of the t confidence interval of a mean."""
    return t_quantile(confidence, n - 1) * std / math.sqrt(n)


def sample_std(x: list[float]) -> float:
    m = sum(x) / len(x)
    return math.sqrt(sum((v - m) ** 2 for v in x) / (len(x) - 1)) if len(x) > 1 else 0.0


def plan_allocation(rewards_G: list[list[float]], budget: int, *, confidence: float, bonus: float) -> list[int]:
    """Extra rollouts per group, one at a time to the largest priority (ties: the earlier group):

        priority_q = h_q(n_q) - h_q(n_q + 1) + bonus * sqrt(ln N / n_q)

    with s_q the group's sample std (held fixed), n_q its rollouts so far (those planned included)
    and N the step's rollouts so far."""
    std = [sample_std(r) for r in rewards_G]
    n = [len(r) for r in rewards_G]
    extra = [0] * len(rewards_G)
    total = sum(n)
    for _ in range(budget):
        def priority(q: int) -> float:
            if n[q] < 2:  # no std yet: a second rollout first
                return math.inf
            gain = half_width(std[q], n[q], confidence) - half_width(std[q], n[q] + 1, confidence)
            return gain + bonus * math.sqrt(math.log(total) / n[q])
        q = max(range(len(n)), key=lambda j: (priority(j), -j))
        n[q], extra[q], total = n[q] + 1, extra[q] + 1, total + 1
    return extra


def problem_text(prompt) -> str:
    """The text of a dataset prompt: a string, or the last user message of a chat."""
    if isinstance(prompt, str):
        return prompt
    users = [m for m in prompt if m.get("role") == "user"] or list(prompt)
    content = users[-1].get("content") if users else ""
    return content if isinstance(content, str) else str(content)


@SAMPLERS.register(NAME, paper="XRPO: Pushing the limits of GRPO with Targeted Exploration and Exploitation",
                   arxiv="2510.06672",
                   summary="n0 rollouts per prompt, the rest of the budget to the prompts whose t-interval "
                           "shrinks most; all-failed prompts get solved examples of other prompts in context",
                   needs=("rows",))
class XRPO(Uniform):
    """XRPO's exploration side: hierarchical rollout allocation and in-context seeding.

    Allocation (each step, inside the step): every prompt first gets n0 rollouts; the remaining
    budget B = k * rollout.n - k * n0 goes, over `phases` rounds (statistics refreshed after
    each), one rollout at a time to the prompt of largest priority
        h_q(n) = t_{1-alpha/2, n-1} s_q / sqrt(n)                 (t-interval half-width of its mean reward)
        priority_q = h_q(n_q) - h_q(n_q + 1) + bonus sqrt(ln N / n_q)
    (s_q: the sample std of its rewards so far, held fixed; N: the step's rollouts so far), i.e.
    the expected reduction of the uncertainty about the prompt's mean reward from one more
    rollout, plus an exploration bonus. Groups then differ in size (trainers/groups.py merges
    the extra rollouts into their prompts' groups).
    In-context seeding: a prompt whose last group had no success (max reward < threshold) is
    prompted, when drawn again, with up to `exemplars` solved examples of OTHER prompts (the most
    recent successful completions, one per prompt, pool of `pool_size`), appended to the prompt
    (`Addition.hint`, tag "icl"). Successes are recorded in `select` (which leaves the batch as it
    is) from the scored batch's completion texts.
    The exploitation side, novelty-aware advantage sharpening, is the `xrpo_novelty` estimator.

    Prompts are drawn like `uniform`; state: the draw order, the all-failed prompts, the pool.
    Needs synchronous single-turn rollouts (the extra rollouts are generated inside the step).
    Not confirmed (the paper's body was not available to us): n0 = 4, phases = 1, the exploration
    bonus's form and its weight 0.1, alpha = 0.05 (confidence 0.95), the exemplar count (2) and
    wording; the paper's exemplars are curated, ours are the run's own past successes.
    """

    decorates = True
    selects = True
    allocates = True

    def __init__(self, dataset_size: int, seed: int = 0, *, n0: int = 4, phases: int = 1, confidence: float = 0.95,
                 bonus: float = 0.1, threshold: float = 1.0, exemplars: int = 2, pool_size: int = 64,
                 hint_template: str = XRPO_HINT, example_template: str = XRPO_EXAMPLE, shuffle: bool = True,
                 rows: list):
        super().__init__(dataset_size, seed, shuffle=shuffle)
        check_param(NAME, "n0", n0, n0 >= 2, ">= 2 (a first-phase std needs two rollouts) and <= rollout.n")
        check_param(NAME, "phases", phases, phases >= 1, ">= 1 (allocation rounds after the first rollouts)")
        check_param(NAME, "confidence", confidence, 0.0 < confidence < 1.0, "in (0, 1) (1 - alpha of the t-interval)")
        check_param(NAME, "bonus", bonus, bonus >= 0.0, ">= 0 (the exploration bonus weight)")
        check_param(NAME, "exemplars", exemplars, exemplars >= 0, ">= 0 (0 turns in-context seeding off)")
        check_param(NAME, "pool_size", pool_size, pool_size >= 1, ">= 1 (stored successes)")
        if "{examples}" not in hint_template:
            raise ValueError(f"{NAME}: sampler.kwargs.hint_template must contain {{examples}}, got {hint_template!r}")
        if "{problem}" not in example_template or "{solution}" not in example_template:
            raise ValueError(f"{NAME}: sampler.kwargs.example_template must contain {{problem}} and {{solution}}, "
                             f"got {example_template!r}")
        if rows is None or len(rows) != dataset_size:
            raise ValueError(f"{NAME}: needs the {dataset_size} training rows (needs=('rows',))")
        self.n0, self.phases, self.confidence, self.bonus = n0, phases, confidence, bonus
        self.threshold, self.exemplars, self.pool_size = threshold, exemplars, pool_size
        self.hint_template, self.example_template = hint_template, example_template
        self.problems = [problem_text(r.prompt) for r in rows]
        self.failed: set[int] = set()  # rows whose last group had no success
        self.pool: list[list] = []  # [row, solution text], oldest first, one per row

    @classmethod
    def check_rollouts(cls, n: int, kwargs: dict[str, Any]) -> None:
        n0 = kwargs.get("n0", cls.__init__.__kwdefaults__["n0"])
        if n0 > n:
            raise ValueError(f"{NAME}: sampler.kwargs.n0={n0} first rollouts per prompt exceed the budget "
                             f"rollout.n={n} per prompt; lower n0 or raise rollout.n")

    def first_n(self, n: int) -> int:
        return min(self.n0, n)

    def allocate(self, indices: list[int], rewards_G: list[list[float]], budget: int) -> list[int]:
        return plan_allocation(rewards_G, budget, confidence=self.confidence, bonus=self.bonus)

    def decorate(self, indices: list[int]) -> list[Addition]:
        return [self.seed_prompt(i) for i in indices]

    def seed_prompt(self, row: int) -> Addition:
        """Solved examples of other prompts for a prompt that last failed entirely (else nothing)."""
        if row not in self.failed or not self.exemplars:
            return Addition()
        shown = [(r, text) for r, text in reversed(self.pool) if r != row][:self.exemplars]
        if not shown:
            return Addition()
        examples = "".join(self.example_template.format(problem=self.problems[r], solution=text) for r, text in shown)
        return Addition(hint=self.hint_template.format(examples=examples), tag="icl")

    def select(self, batch, advantages, progress: float):
        """Record this step's successful completions in the pool (the batch is trained on as it is)."""
        texts = batch.metadata.get("completion_text")
        if texts is None or batch.rewards is None or batch.prompt_index is None:
            return batch, advantages, {}
        for b in range(batch.size):
            if float(batch.rewards[b]) >= self.threshold and texts[b] is not None:
                row = int(batch.prompt_index[b])
                self.pool = [e for e in self.pool if e[0] != row] + [[row, str(texts[b])]]
        del self.pool[:-self.pool_size]
        return batch, advantages, {"xrpo/pool": float(len(self.pool))}

    def update(self, indices: list[int], rewards: list[list[float]]) -> None:
        for row, group in zip(indices, rewards):
            if group and max(group) < self.threshold:
                self.failed.add(row)
            else:
                self.failed.discard(row)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "failed": sorted(self.failed), "pool": [list(e) for e in self.pool]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        rows = [int(i) for i in state["failed"]] + [int(r) for r, _ in state["pool"]]
        if rows and max(rows) >= self.dataset_size:
            raise ValueError(f"{NAME}: the checkpoint's sampler state names row {max(rows) + 1} but the training set "
                             f"has {self.dataset_size} rows; resume with the same data settings")
        self.failed = {int(i) for i in state["failed"]}
        self.pool = [[int(r), str(t)] for r, t in state["pool"]]
