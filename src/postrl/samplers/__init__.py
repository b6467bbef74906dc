"""Prompt samplers: which dataset rows the next rollout batch uses.

A sampler is a small class registered in `SAMPLERS`: `__init__(dataset_size, seed, **hparams)`,
`next(k) -> list[int]` row indices, `update(indices, rewards_G)` with the rewards each prompt's
group received, and `state_dict()` / `load_state_dict()` so a resumed run continues exactly.
A filtering sampler (`filters_groups = True`) also answers `keep(rewards_G)`; see `base.py`.
"""

from postrl.samplers.base import SAMPLERS, Sampler  # noqa: F401
from postrl.samplers import dynamic, uniform  # noqa: F401  (fills the registry)
