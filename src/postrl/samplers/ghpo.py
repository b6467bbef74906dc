"""GHPO: a prompt whose group all failed is sampled again within the step, hinted with a growing
part of its reference solution."""

from __future__ import annotations

from typing import Any, Sequence

from postrl.samplers.base import SAMPLERS, Addition
from postrl.samplers.columns import text_column
from postrl.samplers.uniform import Uniform

GHPO_HINT = ("\n The following text is the beginning part of the answer, which you can refer to for solving "
             "the problem:\n{hint}")
"""The hint sentence of the authors' code (hkgc-1/GHPO, ghpo_trainer.py), appended to the user turn."""


@SAMPLERS.register("ghpo", paper="GHPO: Adaptive Guidance for Stable and Efficient LLM Reinforcement Learning",
                   arxiv="2507.10628",
                   summary="an all-failed group is regenerated within the step with 1/4, 1/2, 3/4 of the reference "
                           "solution as a hint, until it is solved", needs=("rows",))
class GHPO(Uniform):
    """Guided Hybrid Policy Optimization (difficulty detection + adaptive prompt refinement).

    Difficulty detection: group g of prompt q with rewards r_1..r_n is *too hard* when
        max_i r_i < threshold        (every completion failed; the paper's all-zero accuracy)
    Prompt refinement, within the same step: a too-hard prompt is generated again (a full group)
    with the hint h = y*[: round(|y*| * w_s)], the first w_s of its reference solution y*
    (characters, Python's round, as the authors' code does), for stages s = 1, 2, ... with
        w = ratios = (0.25, 0.5, 0.75)
    until a stage has a success or the stages run out; the group trained on is the prompt's last
    generation (solved prompts keep their unhinted group, so hints vanish once a prompt is solved).
    The hint is appended to the user turn after the sentence of the authors' code (`hint_template`);
    `as_answer_prefix: true` instead starts the answer with y*[:...] (prefix continuation, the
    rewards see prefix + completion).

    Mechanics: the trainer's refill loop (trainers/collect.py) runs the stages: `keep` rejects a
    too-hard group that has a stage left and queues it, the next `next(k)` of the step returns the
    queued prompts, `decorate` gives each its stage's hint; max_rounds = 1 + len(ratios). Fresh
    draws are uniform (seeded shuffled epochs). The within-step queue is cleared by `update` and is
    part of `state_dict`, so resume is exact. Needs synchronous rollouts.

    Defaults: ratios (0.25, 0.5, 0.75), the hint sentence and the character-level cut are from the
    authors' code (the paper: a linear schedule of hint ratios over stages); hints from step 0
    (their `start_hint_step: 0`). `column` (default "answer") names the reference-solution column;
    the paper's datasets carry full worked solutions there, a bare final answer makes the hint a
    partial answer. threshold=1.0 suits 0/1 verifiers.
    """

    filters_groups = True
    decorates = True

    def __init__(self, dataset_size: int, seed: int = 0, *, column: str = "answer",
                 ratios: Sequence[float] = (0.25, 0.5, 0.75), threshold: float = 1.0, hint_template: str = GHPO_HINT,
                 as_answer_prefix: bool = False, shuffle: bool = True, rows: list):
        super().__init__(dataset_size, seed, shuffle=shuffle)
        ratios = [float(w) for w in ratios]
        if not ratios or any(not 0.0 < w <= 1.0 for w in ratios) or ratios != sorted(set(ratios)):
            raise ValueError(f"ghpo: sampler.kwargs.ratios must be a non-empty increasing list of fractions in "
                             f"(0, 1], got {ratios}")
        if "{hint}" not in hint_template:
            raise ValueError(f"ghpo: sampler.kwargs.hint_template must contain {{hint}}, got {hint_template!r}")
        self.ratios, self.threshold, self.template, self.as_prefix = ratios, threshold, hint_template, as_answer_prefix
        self.max_rounds = 1 + len(ratios)
        self.refs = text_column(rows, column, "ghpo")
        if len(self.refs) != dataset_size:
            raise ValueError(f"ghpo: got {len(self.refs)} rows for a dataset of {dataset_size}")
        self.drawn: list[list[int]] = []  # [row, stage] of the last draw, in order (stage 0: no hint)
        self.queue: list[list[int]] = []  # [row, stage] of too-hard groups still to try this step

    def next(self, k: int) -> list[int]:
        take, self.queue = self.queue[:k], self.queue[k:]
        fresh = super().next(k - len(take)) if k > len(take) else []
        self.drawn = take + [[i, 0] for i in fresh]
        return [row for row, _ in self.drawn]

    def decorate(self, indices: list[int]) -> list[Addition]:
        if list(indices) != [row for row, _ in self.drawn]:
            raise RuntimeError("ghpo: decorate must follow next() with the rows it returned")
        return [self.addition(row, stage) for row, stage in self.drawn]

    def addition(self, row: int, stage: int) -> Addition:
        """Stage s >= 1 reveals the first round(|y*| * ratios[s-1]) characters of row's reference."""
        if stage == 0:
            return Addition()
        w = self.ratios[stage - 1]
        part = self.refs[row][:round(len(self.refs[row]) * w)]
        tag = f"ratio_{w:g}"
        return Addition(answer_prefix=part, tag=tag) if self.as_prefix else \
            Addition(hint=self.template.format(hint=part), tag=tag)

    def keep(self, rewards_G: list[list[float]]) -> list[bool]:
        if len(rewards_G) != len(self.drawn):
            raise RuntimeError(f"ghpo: keep got {len(rewards_G)} groups for a draw of {len(self.drawn)}")
        out = []
        for (row, stage), rewards in zip(self.drawn, rewards_G):
            too_hard = max(rewards) < self.threshold
            retry = too_hard and stage < len(self.ratios)
            if retry:
                self.queue.append([row, stage + 1])
            out.append(not retry)  # the last stage's group is trained on, solved or not
        return out

    def update(self, indices, rewards) -> None:
        self.drawn, self.queue = [], []  # the step is over

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "drawn": [list(x) for x in self.drawn], "queue": [list(x) for x in self.queue]}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.drawn = [[int(r), int(s)] for r, s in state["drawn"]]
        self.queue = [[int(r), int(s)] for r, s in state["queue"]]
