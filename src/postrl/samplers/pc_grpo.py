"""PC-GRPO's difficulty-aware curriculum: weight each group's advantages by how medium its difficulty is."""

from __future__ import annotations

import torch

from postrl.samplers.base import SAMPLERS
from postrl.samplers.pick import check_param
from postrl.samplers.uniform import Uniform

NAME = "pc_grpo"


def group_accuracy(rewards: torch.Tensor, group_ids: torch.Tensor, max_reward: float) -> torch.Tensor:
    """Per row, its group's mean of clip(r / max_reward, 0, 1): binary rewards give the pass rate,
    graded ones (partial credit) the mean credit."""
    credit = (rewards.double() / max_reward).clamp(0.0, 1.0)
    _, inv = torch.unique(group_ids, return_inverse=True)
    n = int(inv.max()) + 1 if inv.numel() else 0
    total = torch.zeros(n, dtype=torch.float64).index_add_(0, inv, credit)
    count = torch.zeros(n, dtype=torch.float64).index_add_(0, inv, torch.ones_like(credit))
    return (total / count)[inv]


def medium_weight(accuracy: torch.Tensor, floor: float = 0.0) -> torch.Tensor:
    """w(mu) = floor + (1 - floor) * 4 mu (1 - mu): 1 at mu = 1/2, `floor` at mu = 0 and 1."""
    return floor + (1.0 - floor) * 4.0 * accuracy * (1.0 - accuracy)


@SAMPLERS.register(NAME, paper="Puzzle Curriculum GRPO for Vision-Centric Reasoning", arxiv="2512.14944",
                   summary="scale each group's advantages by w(mu) = 4 mu (1 - mu) of its accuracy mu: "
                           "medium difficulty weighs most")
class PCGRPO(Uniform):
    """Difficulty-aware curriculum weights (PC-GRPO), applied to the advantages of each group.

        mu_g  = mean_{i in g} clip(r_i / max_reward, 0, 1)       (the group's accuracy / mean credit)
        w_g   = floor + (1 - floor) * 4 mu_g (1 - mu_g)           (peaks at mu = 1/2: medium difficulty)
        A'_{i,t} = w_g A_{i,t}                                    for every row i of group g

    Groups the policy always or never solves carry little (and under GRPO's std normalisation,
    a nearly-solved group's few different rows get large advantages); the weight moves the update
    toward groups of medium difficulty, which the paper uses against flat rewards and vanishing
    group-relative advantages. The weighting is modality-free (the paper's puzzles are visual; its
    Jigsaw rewards give partial credit, which `max_reward` maps to [0, 1]). `r` is the step's total
    reward (`batch.rewards`). Logs `pc_grpo/weight_mean` and `pc_grpo/accuracy_mean` (over groups).
    Prompts are drawn like `uniform`.
    Not confirmed (the paper's body was not available to us): the exact weighting function; the
    quadratic 4 mu (1 - mu) (the Bernoulli variance scaled to 1 at its peak) is our reading of
    "weights samples by group difficulty, peaking at medium difficulty". floor = 0 by default.
    """

    selects = True

    def __init__(self, dataset_size: int, seed: int = 0, *, max_reward: float = 1.0, floor: float = 0.0,
                 shuffle: bool = True):
        super().__init__(dataset_size, seed, shuffle=shuffle)
        check_param(NAME, "max_reward", max_reward, max_reward > 0, "> 0 (the reward of a fully correct answer)")
        check_param(NAME, "floor", floor, 0.0 <= floor <= 1.0, "in [0, 1] (the weight of a group at accuracy 0 or 1)")
        self.max_reward, self.floor = float(max_reward), float(floor)

    def select(self, batch, advantages, progress: float):
        if batch.rewards is None:
            raise RuntimeError("pc_grpo: the batch has no rewards; select runs after scoring")
        mu = group_accuracy(batch.rewards, batch.group_ids, self.max_reward)
        w = medium_weight(mu, self.floor)
        first = [(batch.group_ids == g).nonzero()[0, 0] for g in batch.group_ids.unique().tolist()]
        per_group = torch.stack(first) if first else torch.zeros(0, dtype=torch.long)
        return batch, advantages * w.to(advantages.dtype)[:, None], {
            "pc_grpo/weight_mean": float(w[per_group].mean()) if len(first) else 0.0,
            "pc_grpo/accuracy_mean": float(mu[per_group].mean()) if len(first) else 0.0}
