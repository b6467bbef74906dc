"""The sampler protocol and registry."""

from __future__ import annotations

from typing import Any

from postrl.registry import Registry

SAMPLERS = Registry("sampler")


class Sampler:
    """Base of the sampler classes: choose rows, receive feedback, save and restore state.

    A sampler may also filter the groups it gets back: with `filters_groups = True` the trainer
    asks `keep(rewards_G)` after scoring, drops the groups it rejects and refills the batch by
    drawing `next(k)` again and generating, for at most `max_rounds` generation rounds per step
    (the first included). Refill draws happen inside the step, so `state_dict` covers them.
    """

    filters_groups: bool = False
    """True when `keep` can reject groups (the trainer then refills; synchronous rollouts only)."""
    max_rounds: int = 1
    """Generation rounds per step, the first included, when `filters_groups` is True."""

    def __init__(self, dataset_size: int, seed: int = 0):
        if dataset_size < 1:
            raise ValueError("the prompt dataset is empty; check data.source / data.split")
        self.dataset_size = dataset_size
        self.seed = seed

    def next(self, k: int) -> list[int]:
        raise NotImplementedError

    def keep(self, rewards_G: list[list[float]]) -> list[bool]:
        """For each scored group (its completions' rewards), whether to train on it. Default: all."""
        return [True] * len(rewards_G)

    def update(self, indices: list[int], rewards: list[list[float]]) -> None:
        """Feedback: for each chosen row, the rewards of its completions. Default: ignore."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
