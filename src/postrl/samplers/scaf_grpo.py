"""Scaf-GRPO: after a hint-free exemption period, all-failed groups try tiered in-prompt hints and
the first hinted success replaces one failed rollout."""

from __future__ import annotations

from typing import Any, Sequence

from postrl.samplers.base import SAMPLERS, Addition
from postrl.samplers.columns import text_column
from postrl.samplers.uniform import Uniform


@SAMPLERS.register("scaf_grpo",
                   paper="Scaf-GRPO: Scaffolded Group Relative Policy Optimization for Enhancing LLM Reasoning",
                   arxiv="2510.19807",
                   summary="after the exemption period, an all-failed group tries tiered hints (knowledge, plan, "
                           "solution); the first hinted success replaces one of its rollouts",
                   needs=("rows",))
class ScafGRPO(Uniform):
    """Scaffolded GRPO: minimal, tiered in-prompt guidance once independent learning stalls.

    Phases. Guidance is off for the first `exemption_steps` steps (the paper's guidance exemption
    period: the model first solves what it can alone); with `patience` > 0 it also waits for a
    plateau (ours, optional): the step pass rate p_t = mean_i 1[r_i >= threshold] over the step's
    rollouts has not exceeded its best so far by more than `min_delta` for `patience` steps. Once
    on, guidance stays on.
    Rescue. A group of prompt q with max_i r_i < threshold (a "true-hard" prompt, zero advantage
    under GRPO) tries one completion per hint tier k = 1..K, the prompt followed by
        hint_template.format(label=labels[k], hint=H_k(q))        H_k = row column columns[k]
    (knowledge -> planning -> solution; empty tiers are skipped). The lowest tier whose completion
    reaches `threshold` replaces the group's first rollout (prompt ids = the hinted prompt, so the
    row is on-policy for the context it was sampled from): the group now has one success, and
    A_i = (r_i - mean) / std is non-zero. No success: the group stays as it was.

    Defaults from the authors' code (dvlab-research/Scaf-GRPO): exemption 50 steps (its
    `warmup_steps`), one replaced rollout (`replace_num: 1`), all tiers tried at once and the minimal
    solving one kept, labels "Knowledge Hints" / "Planning Hints" / "Solution Hints". Deviations:
    one hint per tier (their data splits each tier into up to 4 cumulative parts, 12 levels); the
    hint is appended to the prompt instead of rewriting it as "Question: ...". Hints come from the
    dataset columns `columns` (e.g. `task:arithmetic` with `hints: true`); a teacher model wrote
    them in the paper. threshold=1.0 suits 0/1 verifiers.
    """

    rescues = True

    def __init__(self, dataset_size: int, seed: int = 0, *, columns: Sequence[str] = ("hint_1", "hint_2", "hint_3"),
                 labels: Sequence[str] = ("Knowledge Hints", "Planning Hints", "Solution Hints"),
                 hint_template: str = "\n{label}: {hint}", exemption_steps: int = 50, patience: int = 0,
                 min_delta: float = 0.0, threshold: float = 1.0, shuffle: bool = True, rows: list):
        super().__init__(dataset_size, seed, shuffle=shuffle)
        columns, labels = list(columns), list(labels)
        if not columns or len(labels) != len(columns):
            raise ValueError(f"scaf_grpo: sampler.kwargs.columns ({columns}) and labels ({labels}) must be non-empty "
                             "lists of the same length (one label per hint tier)")
        if "{hint}" not in hint_template:
            raise ValueError(f"scaf_grpo: sampler.kwargs.hint_template must contain {{hint}}, got {hint_template!r}")
        if exemption_steps < 0 or patience < 0 or min_delta < 0:
            raise ValueError(f"scaf_grpo: sampler.kwargs.exemption_steps ({exemption_steps}), patience ({patience}) "
                             f"and min_delta ({min_delta}) must be >= 0")
        self.labels, self.template, self.threshold = labels, hint_template, threshold
        self.exemption_steps, self.patience, self.min_delta = exemption_steps, patience, min_delta
        self.tiers = [text_column(rows, c, "scaf_grpo", "columns", allow_empty=True) for c in columns]
        self.steps, self.best, self.stale, self.active = 0, None, 0, exemption_steps == 0 and patience == 0

    def rescue(self, indices: list[int], rewards_G: list[list[float]]) -> list[list[Addition]]:
        if not self.active:
            return [[] for _ in indices]
        return [self.plan(row) if max(rewards) < self.threshold else [] for row, rewards in zip(indices, rewards_G)]

    def plan(self, row: int) -> list[Addition]:
        """The tiered hints of `row`, lowest tier first (empty tiers skipped)."""
        return [Addition(hint=self.template.format(label=label, hint=tier[row]), tag=f"tier_{k + 1}")
                for k, (label, tier) in enumerate(zip(self.labels, self.tiers)) if tier[row]]

    def rescued(self, rewards: list[float]) -> int | None:
        return next((k for k, r in enumerate(rewards) if r >= self.threshold), None)

    def update(self, indices, rewards) -> None:
        self.steps += 1
        flat = [r for group in rewards for r in group]
        rate = sum(r >= self.threshold for r in flat) / max(len(flat), 1)
        if self.best is None or rate > self.best + self.min_delta:
            self.best, self.stale = rate, 0
        else:
            self.stale += 1
        if self.steps >= self.exemption_steps and (self.patience == 0 or self.stale >= self.patience):
            self.active = True

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "steps": self.steps, "best": self.best, "stale": self.stale,
                "active": self.active}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.steps, self.stale, self.active = int(state["steps"]), int(state["stale"]), bool(state["active"])
        self.best = None if state["best"] is None else float(state["best"])
