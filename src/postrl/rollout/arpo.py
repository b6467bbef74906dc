"""ARPO rollout pieces: entropy-triggered branching after tool calls, and a replay buffer of successes.

Two papers share the acronym (catalog-001 #34 and #27); each mechanism is cited to its own:

* Agentic Reinforced Policy Optimization (Dong et al., arXiv 2507.19849), entropy-based adaptive
  rollout: of a global budget of M rollouts per prompt, N are sampled as whole trajectories; after
  each tool-call step the mean entropy H_t of the first k tokens the model generates next is
  compared with the initial entropy H_initial of the first k tokens of the trajectory, and
  P_t = alpha + beta * dH_t decides whether Z partial rollouts branch from that point, until the
  M - N branch budget is spent; a budget left when every path has ended is filled with whole
  trajectories.
* Agentic Replay Policy Optimization for GUI agents (Lu et al., arXiv 2505.16282): a per-task
  replay buffer of successful trajectories; a GRPO group in which every sample failed (all
  rewards equal, so zero advantage) gets one sample replaced by a stored success.

This module holds the decisions and the state (pure, tested). The rollout (rollout/multiturn.py,
`run_episodes(..., arpo=ArpoRollout(...))`) runs the branches: a branch is a fresh env reset with
the parent's seed and stepped through the parent's recorded actions, then sampled on; the
trainer (trainers/arpo_replay.py) runs the replay buffer between the rollout and the scoring.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any


def entropy_delta(step_entropy: list[float], initial_entropy: list[float]) -> float:
    """dH_t = mean_i (H_t[i] - H_initial[i]) over the first k token entropies (k = the shorter list).

    The paper normalises the difference by summing it and dividing by the vocabulary size; with
    the entropy already per token, the mean over the k positions is used here, so beta keeps the
    scale of an entropy in nats (deviation stated in docs/agents.md)."""
    k = min(len(step_entropy), len(initial_entropy))
    if k == 0:
        raise ValueError("entropy_delta needs at least one token entropy for the step and the initial tokens")
    return sum(step_entropy[i] - initial_entropy[i] for i in range(k)) / k


def branch_probability(delta: float, *, alpha: float = 0.5, beta: float = 0.2) -> float:
    """P_t = alpha + beta * dH_t (2507.19849, entropy-based adaptive beaming)."""
    return alpha + beta * delta


def should_branch(step_entropy: list[float], initial_entropy: list[float], *, alpha: float = 0.5,
                  beta: float = 0.2, threshold: float = 0.5) -> bool:
    """Branch after this tool call when P_t > threshold. With the defaults (alpha = threshold = 0.5)
    that is exactly "the entropy rose" (dH_t > 0). alpha and threshold could not be confirmed
    from the paper; beta = 0.2 is the entropy weight recalled from it (unconfirmed)."""
    return branch_probability(entropy_delta(step_entropy, initial_entropy), alpha=alpha, beta=beta) > threshold


@dataclass
class BranchBudget:
    """Rollout accounting for one prompt: `total` M rollouts, `initial` N whole trajectories, at
    most `beam` Z partial rollouts per branching point. Defaults M = 16, N = 8, Z = 2 are the
    values recalled from the paper's setup; they could not be confirmed against its text here."""

    total: int = 16
    initial: int = 8
    beam: int = 2
    branched: int = 0

    def __post_init__(self):
        if not (1 <= self.initial <= self.total) or self.beam < 1:
            raise ValueError(f"ARPO budget needs 1 <= initial ({self.initial}) <= total ({self.total}) and beam >= 1")

    @property
    def remaining(self) -> int:
        return self.total - self.initial - self.branched

    def take(self) -> int:
        """How many partial rollouts to start at a branching point (<= beam, never past the budget)."""
        n = min(self.beam, self.remaining)
        self.branched += n
        return n

    def supplement(self) -> int:
        """Whole trajectories to add when every path has ended with budget left (rollouts then = total)."""
        n, self.branched = self.remaining, self.branched + self.remaining
        return n


@dataclass(frozen=True)
class ArpoRollout:
    """Settings of the entropy-based adaptive rollout for one call: M = `total` rollouts per prompt
    (the trainer's rollout.n), N = `initial` whole trajectories, Z = `beam` partial rollouts per
    branching point, P_t = alpha + beta * dH_t against `threshold`, dH over the first `first_k`
    tokens of a step. first_k = 10 is this library's choice (the paper observes the entropy rise
    over the first 10-50 tokens after a tool response; its k could not be confirmed)."""

    total: int
    initial: int
    beam: int = 2
    alpha: float = 0.5
    beta: float = 0.2
    threshold: float = 0.5
    first_k: int = 10

    def __post_init__(self):
        BranchBudget(self.total, self.initial, self.beam)  # validates the counts
        if self.first_k < 1:
            raise ValueError(f"ARPO first_k must be >= 1, got {self.first_k}")

    def budget(self) -> BranchBudget:
        return BranchBudget(self.total, self.initial, self.beam)

    def branch(self, step_entropy: list[float], initial_entropy: list[float]) -> bool:
        k = self.first_k
        return should_branch(step_entropy[:k], initial_entropy[:k], alpha=self.alpha, beta=self.beta,
                             threshold=self.threshold)


def plan_branches(decisions: list[bool], budget: BranchBudget) -> tuple[list[int], int]:
    """Partial rollouts started at each branching point (in rollout order) and the whole
    trajectories added at the end: sum(starts) + supplement = M - N."""
    starts = [budget.take() if d else 0 for d in decisions]
    return starts, budget.supplement()


@dataclass
class SuccessReplay:
    """Per-task FIFO of successful episodes (2505.16282). An episode is stored as plain data (token
    id lists, rewards, metadata), so the buffer is saved in checkpoints as JSON.

    `capacity` per task (the paper does not state its buffer size; 8 is this library's default).
    `threshold`: an episode with return >= threshold is a success."""

    capacity: int = 8
    threshold: float = 1.0
    buffers: dict[str, list[dict]] = field(default_factory=dict)

    def add(self, task: str, episode: dict) -> None:
        buf = self.buffers.setdefault(str(task), [])
        buf.append(episode)
        del buf[:-self.capacity]  # evict the oldest beyond capacity

    def record(self, groups: dict[str, list[dict]]) -> None:
        """Store every successful episode of this step's groups (task -> episodes with "return")."""
        for task, episodes in groups.items():
            for ep in episodes:
                if ep["return"] >= self.threshold:
                    self.add(task, ep)

    def fill_failed(self, groups: dict[str, list[dict]], rng: random.Random) -> dict[str, int]:
        """In every group whose episodes all failed, replace the last episode by a success drawn
        from that task's buffer (when it has one). Returns task -> index replaced."""
        replaced = {}
        for task, episodes in groups.items():
            buf = self.buffers.get(str(task))
            if episodes and buf and all(ep["return"] < self.threshold for ep in episodes):
                episodes[-1] = dict(rng.choice(buf), replayed=True)
                replaced[task] = len(episodes) - 1
        return replaced

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "threshold": self.threshold,
                "buffers": {k: list(v) for k, v in OrderedDict(sorted(self.buffers.items())).items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("capacity") != self.capacity or state.get("threshold") != self.threshold:
            raise ValueError(f"ARPO replay checkpoint has capacity={state.get('capacity')}, "
                             f"threshold={state.get('threshold')}; the config has capacity={self.capacity}, "
                             f"threshold={self.threshold}: resume with the same settings")
        self.buffers = {k: list(v) for k, v in state["buffers"].items()}
