"""The sampler protocol and registry."""

from __future__ import annotations

from typing import Any

from postrl.registry import Registry

SAMPLERS = Registry("sampler")


class Sampler:
    """Base of the sampler classes: choose rows, receive feedback, save and restore state."""

    def __init__(self, dataset_size: int, seed: int = 0):
        if dataset_size < 1:
            raise ValueError("the prompt dataset is empty; check data.source / data.split")
        self.dataset_size = dataset_size
        self.seed = seed

    def next(self, k: int) -> list[int]:
        raise NotImplementedError

    def update(self, indices: list[int], rewards: list[list[float]]) -> None:
        """Feedback: for each chosen row, the rewards of its completions. Default: ignore."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
