"""DAPO dynamic sampling: train only on groups whose rewards differ, refill the rest."""

from __future__ import annotations

from postrl.samplers.base import SAMPLERS
from postrl.samplers.uniform import Uniform


@SAMPLERS.register("dynamic_sampling", paper="DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
                   arxiv="2503.14476",
                   summary="drop groups whose rewards are all equal, refill the batch with new prompts (<= max_rounds)")
class DynamicSampling(Uniform):
    """Dynamic sampling (DAPO sec. 3.2, the constraint of eq. 11):

        0 < |{o_i : is_equivalent(a, o_i)}| < G     i.e. keep group g  <=>  max_i r_i > min_i r_i

    A group whose completions all got the same reward has zero advantage under group-relative
    estimators: it adds no gradient but dilutes the token mean. After scoring, the trainer drops
    such groups and draws, generates and scores as many new prompts as are missing, until
    `train.prompts_per_step` informative groups are collected or `max_rounds` generation rounds
    (the first included) have run. The paper keeps sampling until the batch is full; that loop
    never ends once the model has saturated the data, so it is bounded here (10, the
    `max_num_gen_batches` of verl's DAPO recipe scripts). Deviation: where verl then stops with an
    error, postrl tops the batch up with dropped groups (zero advantage) so the batch size stays
    fixed, and logs `dynamic_sampling/kept_groups` below prompts_per_step.

    The rule reads the total reward (verl's `filter_groups.metric` can also be the accuracy).
    Prompts are drawn like `uniform` (seeded shuffled epochs); refill draws happen inside the
    step, so the (epoch, cursor) state makes resume exact. Needs rollout.n >= 2 and synchronous
    rollouts (distributed.max_off_policy_steps = 0).
    """

    filters_groups = True

    def __init__(self, dataset_size: int, seed: int = 0, *, shuffle: bool = True, max_rounds: int = 10):
        super().__init__(dataset_size, seed, shuffle=shuffle)
        if max_rounds < 1:
            raise ValueError(f"dynamic_sampling: max_rounds must be >= 1 (1 disables refilling), got {max_rounds}")
        self.max_rounds = max_rounds

    def keep(self, rewards_G: list[list[float]]) -> list[bool]:
        return [max(r) > min(r) for r in rewards_G]
