"""Uniform sampling without replacement: a fresh seeded permutation every epoch."""

from __future__ import annotations

import torch

from postrl.samplers.base import SAMPLERS, Sampler


@SAMPLERS.register("uniform", paper="(standard practice)", summary="shuffled epochs, each row once per epoch")
class Uniform(Sampler):
    """Epoch-wise shuffling: rows are drawn without replacement from a permutation seeded by
    (seed, epoch); a batch that crosses an epoch boundary continues into the next permutation.
    State is (epoch, cursor), so resume reproduces the same order exactly.
    """

    def __init__(self, dataset_size: int, seed: int = 0, *, shuffle: bool = True):
        super().__init__(dataset_size, seed)
        self.shuffle = shuffle
        self.epoch, self.cursor = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.dataset_size))
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.dataset_size, generator=g).tolist()

    def next(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.cursor >= self.dataset_size:
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            take = min(k - len(out), self.dataset_size - self.cursor)
            out += self._order[self.cursor:self.cursor + take]
            self.cursor += take
        return out

    def state_dict(self):
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state):
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._order = self._permutation(self.epoch)
